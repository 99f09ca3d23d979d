-- no-transaction
-- The relay's read from a shard's cursor (migration 0013): a range of this index per shard.
-- Built without locking the outbox against the engine's commits (outside a transaction). If
-- the build is interrupted it leaves an INVALID index: `DROP INDEX CONCURRENTLY
-- outbox_pending` and start the engine again.
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_pending ON outbox (shard, xact, position);
