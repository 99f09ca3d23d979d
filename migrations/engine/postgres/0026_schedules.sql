-- Schedules: a workflow started at each time of a cron expression or an interval. The spec
-- and the state (what was done for which time, what runs) are encoded protobuf; next_fire_at
-- is when the schedule must be looked at next (its next time with jitter, or far in the
-- future while paused). A write names the version it read, so two nodes acting on one time
-- write once (and start one run: its workflow id is the schedule's id and the time).
CREATE TABLE schedules (
    namespace TEXT NOT NULL,
    schedule_id TEXT NOT NULL,
    spec BYTEA NOT NULL,
    state BYTEA NOT NULL,
    next_fire_at BIGINT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (namespace, schedule_id)
);
CREATE INDEX schedules_due ON schedules (next_fire_at);
