-- The latest run of a workflow id (`ORDER BY start_time DESC, run_id DESC LIMIT 1`) read
-- through an index in that order: with only (namespace, workflow_id, start_time) the planner
-- walked `executions_by_start` over every run of the namespace instead, a cost that grew with
-- the table (seen at 100,000 runs).
DROP INDEX executions_by_workflow_id;
CREATE INDEX executions_by_workflow_id ON executions (namespace, workflow_id, start_time DESC, run_id DESC);
