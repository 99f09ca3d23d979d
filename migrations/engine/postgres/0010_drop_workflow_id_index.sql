-- no-transaction
-- Superseded by `executions_latest_run` (0009), which serves the same look-ups.
DROP INDEX CONCURRENTLY IF EXISTS executions_by_workflow_id;
