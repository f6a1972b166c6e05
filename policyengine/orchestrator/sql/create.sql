-- Durable run state of the orchestrator (see docs/orchestrator.md).
-- Timestamps are naive UTC. JSON columns hold the step's context and outputs.
CREATE TABLE IF NOT EXISTS orch_runs (
    run_id        VARCHAR PRIMARY KEY,
    batch_id      VARCHAR,
    workflow      VARCHAR NOT NULL,
    item_id       VARCHAR,
    requested_by  VARCHAR NOT NULL,
    status        VARCHAR NOT NULL,   -- running | waiting_approval | completed | denied | failed | rejected | expired
    outcome       VARCHAR,
    input         JSON,
    error         VARCHAR,
    policy_hash   VARCHAR,
    tokens        BIGINT,
    cost_usd      DOUBLE,
    created_at    TIMESTAMP NOT NULL,
    updated_at    TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS orch_steps (
    run_id        VARCHAR NOT NULL,
    step          VARCHAR NOT NULL,
    ord           INTEGER NOT NULL,
    kind          VARCHAR NOT NULL,   -- model | tool | data | decision | human
    status        VARCHAR NOT NULL,   -- started | done | denied | failed | skipped | waiting
    idem_key      VARCHAR NOT NULL,   -- run_id/step: passed to tools and providers
    output        JSON,
    effect        VARCHAR,            -- the engine's effect for the step
    reason        VARCHAR,
    model         VARCHAR,
    tokens        BIGINT,
    cost_usd      DOUBLE,
    latency_ms    DOUBLE,
    started_at    TIMESTAMP NOT NULL,
    finished_at   TIMESTAMP,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS orch_approvals (
    run_id            VARCHAR NOT NULL,
    step              VARCHAR NOT NULL,
    gate              VARCHAR NOT NULL,
    role              VARCHAR NOT NULL,
    requester         VARCHAR NOT NULL,
    requested_at      TIMESTAMP NOT NULL,
    deadline_at       TIMESTAMP,
    on_timeout        VARCHAR NOT NULL,  -- deny | allow
    distinct_approver BOOLEAN NOT NULL,
    status            VARCHAR NOT NULL,  -- pending | approved | rejected | expired | cancelled
    approver          VARCHAR,
    note              VARCHAR,
    decided_at        TIMESTAMP,
    PRIMARY KEY (run_id, step, gate)
);
-- The outbox of tools with side effects: one row per idempotency key, written in
-- the same transaction as the step that caused it.
CREATE TABLE IF NOT EXISTS orch_effects (
    idem_key  VARCHAR PRIMARY KEY,
    run_id    VARCHAR NOT NULL,
    step      VARCHAR NOT NULL,
    tool      VARCHAR NOT NULL,
    result    JSON,
    created_at TIMESTAMP NOT NULL
);
-- Write-ahead intents: one row committed before a tool with a side effect is
-- called, carrying what it takes to resume the run even if its other state was
-- never flushed (see docs/orchestrator.md, "exactly-once"). Append-only.
CREATE TABLE IF NOT EXISTS orch_intents (
    idem_key      VARCHAR NOT NULL,
    run_id        VARCHAR NOT NULL,
    step          VARCHAR NOT NULL,
    batch_id      VARCHAR,
    workflow      VARCHAR NOT NULL,
    item_id       VARCHAR,
    requested_by  VARCHAR NOT NULL,
    input         JSON,
    created_at    TIMESTAMP NOT NULL
);
