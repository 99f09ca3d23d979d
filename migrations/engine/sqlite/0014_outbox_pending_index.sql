-- The relay's read from a shard's cursor (migration 0013): a range of this index per shard.
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (shard, xact, position);
