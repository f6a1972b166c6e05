-- create: every table of the PostgreSQL store (owned by policyengine/store/postgres.py).
-- Same shape as the embedded store: budget running totals per calendar window,
-- hour buckets for other ranges, live reservations, queued runs with their
-- effects, and approval gates.
CREATE TABLE IF NOT EXISTS budget_usage (
    scope_key  TEXT             NOT NULL,
    unit       TEXT             NOT NULL,
    hour_start TIMESTAMPTZ      NOT NULL,
    amount     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (scope_key, unit, hour_start)
);
CREATE TABLE IF NOT EXISTS budget_totals (
    scope_key    TEXT             NOT NULL,
    unit         TEXT             NOT NULL,
    period       TEXT             NOT NULL,  -- "hour", "day" or "month"
    period_start TIMESTAMPTZ      NOT NULL,
    amount       DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (scope_key, unit, period, period_start)
);
CREATE TABLE IF NOT EXISTS budget_reservations (
    id         TEXT             PRIMARY KEY,
    scope_key  TEXT             NOT NULL,
    unit       TEXT             NOT NULL,
    amount     DOUBLE PRECISION NOT NULL,
    charged_at TIMESTAMPTZ      NOT NULL,
    expires_at TIMESTAMPTZ      NOT NULL
);
CREATE INDEX IF NOT EXISTS budget_reservations_scope ON budget_reservations (scope_key, unit);
CREATE TABLE IF NOT EXISTS store_runs (
    run_id     TEXT        PRIMARY KEY,
    workflow   TEXT        NOT NULL,
    input      JSONB       NOT NULL,
    status     TEXT        NOT NULL,  -- queued, running, waiting, done, failed
    worker     TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS store_runs_queued ON store_runs (created_at) WHERE status = 'queued';
CREATE TABLE IF NOT EXISTS store_effects (
    idem_key    TEXT        PRIMARY KEY,
    run_id      TEXT        NOT NULL,
    effect      TEXT        NOT NULL,
    result      JSONB       NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS store_approvals (
    run_id     TEXT        NOT NULL,
    gate       TEXT        NOT NULL,
    role       TEXT        NOT NULL,
    requester  TEXT        NOT NULL,
    deadline   TIMESTAMPTZ,
    status     TEXT        NOT NULL,  -- pending, approved, rejected, expired
    decided_by TEXT,
    decided_at TIMESTAMPTZ,
    PRIMARY KEY (run_id, gate)
);
CREATE TABLE IF NOT EXISTS model_blocks (
    model        TEXT        NOT NULL,
    rule         TEXT        NOT NULL,  -- the bias/drift rule id that breached
    reason       TEXT        NOT NULL,
    blocked_at   TIMESTAMPTZ NOT NULL,
    unblocked_at TIMESTAMPTZ,
    unblocked_by TEXT,
    note         TEXT
);
CREATE INDEX IF NOT EXISTS model_blocks_open ON model_blocks (model) WHERE unblocked_at IS NULL;
CREATE TABLE IF NOT EXISTS directory_users (
    user_id TEXT   PRIMARY KEY,  -- canonical identity (policyengine.identity)
    name    TEXT   NOT NULL,
    roles   TEXT[] NOT NULL
);
