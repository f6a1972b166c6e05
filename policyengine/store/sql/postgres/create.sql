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
-- A hold's fate: 'held' (live, counted against its limit), 'released', 'expired' (charged at its estimate) or
-- 'settled'. A dropped hold stays a day past its deadline, so a settle after a release or an expiry still
-- records the usage (budget_reservation_settle).
ALTER TABLE budget_reservations ADD COLUMN IF NOT EXISTS state TEXT NOT NULL DEFAULT 'held';
CREATE INDEX IF NOT EXISTS budget_reservations_live ON budget_reservations (scope_key, unit) WHERE state = 'held';
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
-- Durable run state of the orchestrator, shared by workers (owned by
-- policyengine/store/postgres_runs.py; same columns as the embedded orch_*
-- tables, timestamps naive UTC, JSON kept as text). A run being driven is held
-- by one worker: worker_lock names the session advisory lock that worker holds
-- (pg_advisory_lock(7020131, worker_lock)) for as long as its session lives.
CREATE TABLE IF NOT EXISTS orch_runs (
    run_id        TEXT PRIMARY KEY,
    batch_id      TEXT,
    workflow      TEXT NOT NULL,
    item_id       TEXT,
    requested_by  TEXT NOT NULL,
    status        TEXT NOT NULL,   -- running | waiting_approval | completed | denied | failed | rejected | expired
    outcome       TEXT,
    input         TEXT,
    error         TEXT,
    policy_hash   TEXT,
    tokens        BIGINT,
    cost_usd      DOUBLE PRECISION,
    created_at    TIMESTAMP NOT NULL,
    updated_at    TIMESTAMP NOT NULL,
    worker_lock   BIGINT,          -- the advisory lock key of the worker holding the run
    worker        TEXT             -- that worker, as host:pid (for people)
);
CREATE INDEX IF NOT EXISTS orch_runs_running ON orch_runs (created_at, run_id) WHERE status = 'running';  -- claim order
CREATE TABLE IF NOT EXISTS orch_steps (
    run_id      TEXT NOT NULL,
    step        TEXT NOT NULL,
    ord         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    status      TEXT NOT NULL,
    idem_key    TEXT NOT NULL,
    output      TEXT,
    effect      TEXT,
    reason      TEXT,
    model       TEXT,
    tokens      BIGINT,
    cost_usd    DOUBLE PRECISION,
    latency_ms  DOUBLE PRECISION,
    started_at  TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS orch_approvals (
    run_id            TEXT NOT NULL,
    step              TEXT NOT NULL,
    gate              TEXT NOT NULL,
    role              TEXT NOT NULL,
    requester         TEXT NOT NULL,
    requested_at      TIMESTAMP NOT NULL,
    deadline_at       TIMESTAMP,
    on_timeout        TEXT NOT NULL,
    distinct_approver BOOLEAN NOT NULL,
    status            TEXT NOT NULL,  -- pending | approved | rejected | expired | cancelled
    approver          TEXT,
    note              TEXT,
    decided_at        TIMESTAMP,
    PRIMARY KEY (run_id, step, gate)
);
CREATE INDEX IF NOT EXISTS orch_approvals_pending ON orch_approvals (deadline_at) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS orch_effects (
    idem_key   TEXT PRIMARY KEY,
    run_id     TEXT NOT NULL,
    step       TEXT NOT NULL,
    tool       TEXT NOT NULL,
    result     TEXT,
    created_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS orch_intents (
    idem_key     TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    step         TEXT NOT NULL,
    batch_id     TEXT,
    workflow     TEXT NOT NULL,
    item_id      TEXT,
    requested_by TEXT NOT NULL,
    input        TEXT,
    created_at   TIMESTAMP NOT NULL
);
-- Is the worker holding advisory lock (7020131, lock) alive? Its session holds the lock until it ends.
CREATE OR REPLACE FUNCTION orch_worker_alive(lock BIGINT) RETURNS BOOLEAN LANGUAGE sql VOLATILE AS $$
    SELECT EXISTS (SELECT 1 FROM pg_locks
                   WHERE locktype = 'advisory' AND granted AND classid = 7020131 AND objsubid = 2
                     AND objid::bigint = lock
                     AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))
$$;
