-- Tasks parked behind a circuit breaker wait held by it (lease id `breaker:<name>`, lease and
-- visibility at 9999-12-31) until the engine releases them; the index finds them.
CREATE INDEX activity_tasks_parked ON activity_tasks (namespace, lease_id)
    WHERE lease_until = 253402300799000;
