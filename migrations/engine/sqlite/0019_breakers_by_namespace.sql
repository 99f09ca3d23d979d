-- Breakers belong to the namespace their worker reported in (describe shows a run only its own
-- namespace's), and carry when they were last reported: a worker gone quiet stops showing,
-- and its rows are deleted after a day. SQLite cannot change a primary key: the table is
-- rebuilt.
CREATE TABLE breakers_v19 (
    namespace TEXT NOT NULL,
    worker TEXT NOT NULL,
    adapter TEXT NOT NULL,
    state TEXT NOT NULL,
    changed_at BIGINT NOT NULL,
    reported_at BIGINT NOT NULL,
    PRIMARY KEY (namespace, worker, adapter)
);
INSERT INTO breakers_v19 (namespace, worker, adapter, state, changed_at, reported_at)
    SELECT 'default', worker, adapter, state, changed_at, changed_at FROM breakers;
DROP TABLE breakers;
ALTER TABLE breakers_v19 RENAME TO breakers;
