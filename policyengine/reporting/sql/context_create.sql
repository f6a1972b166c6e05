-- context_create: what named reports may know about the policy besides the audit log.
-- Empty unless the caller passes the rule files (--rules); reports LEFT JOIN them.
CREATE OR REPLACE TEMP TABLE budget_limits (
    budget     VARCHAR,  -- budget rule id
    scope_kind VARCHAR,  -- workflow | model | agent | role
    scope      VARCHAR,
    unit       VARCHAR,  -- tokens | USD | ...
    "window"   VARCHAR,  -- hour | day | month
    amount     DOUBLE
);
CREATE OR REPLACE TEMP TABLE policy_rules (
    rule_id VARCHAR,
    kind    VARCHAR,     -- rule | residency | budget | escalate | route | bias | drift
    file    VARCHAR,
    line    INTEGER
);
CREATE OR REPLACE TEMP TABLE policy_agents (
    agent VARCHAR,
    owner VARCHAR
);
