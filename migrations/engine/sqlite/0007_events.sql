-- Business events: the transactional outbox, its shards, and signal request ids.

-- The transactional outbox: written in the same transaction as the history event that
-- records the publish command; sent to RabbitMQ and folded into the read model from here.
CREATE TABLE outbox (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    -- hash(namespace, subject) mod 16: the unit relays lease, so one subject's events are
    -- sent in order by one node at a time.
    shard INTEGER NOT NULL,
    namespace TEXT NOT NULL,
    subject TEXT NOT NULL,
    workflow_type TEXT NOT NULL,
    run_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,
    body TEXT NOT NULL,
    sent_at INTEGER,
    projected_at INTEGER
);
CREATE INDEX outbox_unsent ON outbox (shard, position) WHERE sent_at IS NULL;
CREATE INDEX outbox_unprojected ON outbox (shard, position) WHERE projected_at IS NULL;
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;

CREATE TABLE outbox_shards (
    shard INTEGER PRIMARY KEY,
    owner TEXT,
    lease_until INTEGER NOT NULL
);
INSERT INTO outbox_shards (shard, owner, lease_until) VALUES
    (0, NULL, 0), (1, NULL, 0), (2, NULL, 0), (3, NULL, 0), (4, NULL, 0), (5, NULL, 0),
    (6, NULL, 0), (7, NULL, 0), (8, NULL, 0), (9, NULL, 0), (10, NULL, 0), (11, NULL, 0),
    (12, NULL, 0), (13, NULL, 0), (14, NULL, 0), (15, NULL, 0);

-- Request ids of signals already recorded (inbound messages use their message id): a
-- redelivered request signals once. Written in the signal's own transaction.
CREATE TABLE signal_requests (
    namespace TEXT NOT NULL,
    request_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, request_id)
);
CREATE INDEX signal_requests_by_time ON signal_requests (received_at);
