-- The workers seen polling each task queue (at most one write per worker, queue and kind every
-- 15 seconds per node), so describe and `martix stuck` can say that nobody polls a run's
-- queue (a misspelled queue, workers down). Rows not renewed for a day are deleted.
CREATE TABLE pollers (
    namespace TEXT NOT NULL,
    task_queue TEXT NOT NULL,
    kind TEXT NOT NULL,
    identity TEXT NOT NULL,
    last_seen BIGINT NOT NULL,
    PRIMARY KEY (namespace, task_queue, kind, identity)
);
