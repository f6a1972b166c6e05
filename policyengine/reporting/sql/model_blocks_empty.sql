-- model_blocks_empty: an empty, temporary model_blocks for reports on a database where
-- no monitor has blocked anything yet (same columns as model_blocks_create.sql).
CREATE TEMP TABLE model_blocks (
    model        VARCHAR     NOT NULL,
    rule         VARCHAR     NOT NULL,  -- the bias/drift rule id that breached
    reason       VARCHAR     NOT NULL,  -- e.g. "disparate_impact 0.62 breaches >= 0.8"
    blocked_at   TIMESTAMPTZ NOT NULL,
    unblocked_at TIMESTAMPTZ,
    unblocked_by VARCHAR,
    note         VARCHAR
);
