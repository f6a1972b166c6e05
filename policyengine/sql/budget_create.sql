-- budget_create: the budget ledger table (owned by policyengine/budgets.py).
-- Usage is kept per scope, unit and calendar UTC hour; day and month windows
-- are sums of their hours, so one table answers every window exactly.
CREATE TABLE IF NOT EXISTS budget_usage (
    scope_key  VARCHAR   NOT NULL,  -- "workflow:invoice-exceptions", "model:frontier_llm", ...
    unit       VARCHAR   NOT NULL,  -- "tokens" or a currency code such as "USD"
    hour_start TIMESTAMP NOT NULL,  -- UTC, truncated to the hour
    amount     DOUBLE    NOT NULL,
    PRIMARY KEY (scope_key, unit, hour_start)
);
