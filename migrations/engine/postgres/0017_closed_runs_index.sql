-- no-transaction
-- The closed runs of a namespace by close time: what the retention deletes, oldest first,
-- read without a scan of the open or the kept runs. Built without locking the table against
-- writes (outside a transaction). If the build is interrupted it leaves an INVALID index:
-- `DROP INDEX CONCURRENTLY executions_closed` and start the engine again.
CREATE INDEX CONCURRENTLY IF NOT EXISTS executions_closed
    ON executions (namespace, close_time) WHERE status <> 1;
