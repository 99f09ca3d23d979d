-- Activity attempts time out: when the attempt started and its heartbeat timeout, so the
-- engine can tell a start-to-close from a heartbeat timeout and retry the attempt.
ALTER TABLE activity_tasks ADD COLUMN started_at BIGINT;
ALTER TABLE activity_tasks ADD COLUMN heartbeat_ms BIGINT NOT NULL DEFAULT 0;
CREATE INDEX activity_tasks_leases ON activity_tasks (lease_until) WHERE lease_id IS NOT NULL;
