-- model_blocks_create: models suspended by a monitor rule with "on breach block".
-- A model is blocked while it has a row with unblocked_at NULL; the engine reads
-- that set through its block list and denies the model until someone runs
-- `policyengine models unblock MODEL`. Rows are never deleted: the table is the
-- history of every suspension and who lifted it.
CREATE TABLE IF NOT EXISTS model_blocks (
    model        VARCHAR     NOT NULL,
    rule         VARCHAR     NOT NULL,  -- the bias/drift rule id that breached
    reason       VARCHAR     NOT NULL,  -- e.g. "disparate_impact 0.62 breaches >= 0.8"
    blocked_at   TIMESTAMPTZ NOT NULL,
    unblocked_at TIMESTAMPTZ,
    unblocked_by VARCHAR,
    note         VARCHAR
);
