-- store_create: queued runs, their effects and approval gates of the embedded store
-- (owned by policyengine/store/embedded.py; the orchestrator's own run journal is in orchestrator/sql).
CREATE TABLE IF NOT EXISTS store_runs (
    run_id     VARCHAR   PRIMARY KEY,
    workflow   VARCHAR   NOT NULL,
    input      VARCHAR   NOT NULL,  -- JSON text
    status     VARCHAR   NOT NULL,  -- queued, running, waiting, done, failed
    worker     VARCHAR,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    updated_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS store_effects (
    idem_key    VARCHAR   PRIMARY KEY,
    run_id      VARCHAR   NOT NULL,
    effect      VARCHAR   NOT NULL,
    result      VARCHAR   NOT NULL,  -- JSON text
    recorded_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS store_approvals (
    run_id     VARCHAR   NOT NULL,
    gate       VARCHAR   NOT NULL,
    role       VARCHAR   NOT NULL,
    requester  VARCHAR   NOT NULL,
    deadline   TIMESTAMP,
    status     VARCHAR   NOT NULL,
    decided_by VARCHAR,
    decided_at TIMESTAMP,
    PRIMARY KEY (run_id, gate)
);
