-- The latest run of a workflow id (`ORDER BY start_time DESC, run_id DESC LIMIT 1`) read
-- through an index in that order (see the PostgreSQL migration of the same number).
CREATE INDEX IF NOT EXISTS executions_latest_run
    ON executions (namespace, workflow_id, start_time DESC, run_id DESC);
