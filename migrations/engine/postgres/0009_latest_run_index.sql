-- no-transaction
-- The latest run of a workflow id (`ORDER BY start_time DESC, run_id DESC LIMIT 1`) read
-- through an index in that order: with only (namespace, workflow_id, start_time) and a young
-- table's statistics the planner walked `executions_by_start` over every run of the namespace
-- instead, a cost that grew with the table (seen at 100,000 runs). Built without locking the
-- table against writes (outside a transaction). If the build is interrupted it leaves an
-- INVALID index: `DROP INDEX CONCURRENTLY executions_latest_run` and start the engine again.
CREATE INDEX CONCURRENTLY IF NOT EXISTS executions_latest_run
    ON executions (namespace, workflow_id, start_time DESC, run_id DESC);
