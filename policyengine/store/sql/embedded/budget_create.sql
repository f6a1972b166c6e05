-- budget_create: the budget ledger tables (owned by policyengine/store/embedded.py).
-- budget_usage keeps usage per calendar UTC hour (any window is a sum of hours);
-- budget_totals keeps running totals per hour, day and month window, so the
-- usage a decision reads is one row, however long the history. (Reservations
-- of the embedded ledger live in its process's memory.)
CREATE TABLE IF NOT EXISTS budget_usage (
    scope_key  VARCHAR   NOT NULL,  -- "workflow:invoice-exceptions", "model:frontier_llm", ...
    unit       VARCHAR   NOT NULL,  -- "tokens" or a currency code such as "USD"
    hour_start TIMESTAMP NOT NULL,  -- UTC, truncated to the hour
    amount     DOUBLE    NOT NULL,
    PRIMARY KEY (scope_key, unit, hour_start)
);
CREATE TABLE IF NOT EXISTS budget_totals (
    scope_key    VARCHAR   NOT NULL,
    unit         VARCHAR   NOT NULL,
    period       VARCHAR   NOT NULL,  -- "hour", "day" or "month"
    period_start TIMESTAMP NOT NULL,  -- UTC start of the calendar window
    amount       DOUBLE    NOT NULL,
    PRIMARY KEY (scope_key, unit, period, period_start)
);
-- A ledger written before running totals existed gets them from its hours, once.
INSERT INTO budget_totals
SELECT scope_key, unit, p.period, date_trunc(p.period, hour_start), sum(amount)
FROM budget_usage, (VALUES ('hour'), ('day'), ('month')) AS p(period)
WHERE NOT EXISTS (SELECT 1 FROM budget_totals)
GROUP BY ALL;
