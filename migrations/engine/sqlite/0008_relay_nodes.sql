-- Nodes whose relays are alive: each shares the outbox shards with the others.
CREATE TABLE relay_nodes (
    owner TEXT PRIMARY KEY,
    seen_until INTEGER NOT NULL
);
