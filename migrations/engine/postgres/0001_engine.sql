-- The engine's tables. Times are milliseconds since the Unix epoch; run ids are UUID text.

CREATE TABLE namespaces (
    name TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);
INSERT INTO namespaces (name, created_at) VALUES ('default', 0);

-- One row per run: the checkpoint. Columns the engine queries by; the rest in `state`.
CREATE TABLE executions (
    run_id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    workflow_type TEXT NOT NULL,
    task_queue TEXT NOT NULL,
    status INTEGER NOT NULL,
    start_time BIGINT NOT NULL,
    close_time BIGINT,
    next_event_id BIGINT NOT NULL,
    version BIGINT NOT NULL,
    -- The outstanding workflow task, if any (NULL queue: none).
    wft_queue TEXT,
    wft_attempt INTEGER NOT NULL,
    wft_scheduled_event_id BIGINT NOT NULL,
    wft_visible_at BIGINT NOT NULL,
    wft_lease_id TEXT,
    wft_lease_until BIGINT,
    wft_timeout_ms BIGINT NOT NULL,
    state BYTEA NOT NULL
);
-- At most one open (running) run per workflow id.
CREATE UNIQUE INDEX executions_open_id ON executions (namespace, workflow_id) WHERE status = 1;
CREATE INDEX executions_by_workflow_id ON executions (namespace, workflow_id, start_time DESC);
CREATE INDEX executions_by_start ON executions (namespace, start_time DESC, run_id DESC);
CREATE INDEX executions_wft_ready ON executions (namespace, wft_queue, wft_visible_at)
    WHERE wft_queue IS NOT NULL;

CREATE TABLE history_events (
    run_id TEXT NOT NULL,
    event_id BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (run_id, event_id)
);

CREATE TABLE activity_tasks (
    run_id TEXT NOT NULL,
    scheduled_event_id BIGINT NOT NULL,
    namespace TEXT NOT NULL,
    task_queue TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    visible_at BIGINT NOT NULL,
    lease_id TEXT,
    lease_until BIGINT,
    lease_ms BIGINT NOT NULL,
    info BYTEA NOT NULL,
    heartbeat_details BYTEA,
    PRIMARY KEY (run_id, scheduled_event_id)
);
CREATE INDEX activity_tasks_ready ON activity_tasks (namespace, task_queue, visible_at);

CREATE TABLE timers (
    run_id TEXT NOT NULL,
    timer_key TEXT NOT NULL,
    fire_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, timer_key)
);
CREATE INDEX timers_due ON timers (fire_at);
