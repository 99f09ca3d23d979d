-- Circuit breaker states reported by the workers, so operators see open breakers.
CREATE TABLE breakers (
    worker TEXT NOT NULL,
    adapter TEXT NOT NULL,
    state TEXT NOT NULL,
    changed_at BIGINT NOT NULL,
    PRIMARY KEY (worker, adapter)
);
