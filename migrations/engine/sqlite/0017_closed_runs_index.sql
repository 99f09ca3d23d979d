-- The closed runs of a namespace by close time (see the PostgreSQL migration of this number).
CREATE INDEX IF NOT EXISTS executions_closed ON executions (namespace, close_time) WHERE status <> 1;
