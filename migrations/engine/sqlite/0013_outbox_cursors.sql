-- The relay reads the outbox from a cursor per shard and consumer instead of flags on each row
-- (see the PostgreSQL migration of the same number). SQLite has one writer at a time, so
-- positions are handed out in commit order and `xact` stays 0: (0, position) orders the rows.
ALTER TABLE outbox ADD COLUMN xact INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox_shards ADD COLUMN sent_xact INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox_shards ADD COLUMN sent_position INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox_shards ADD COLUMN projected_xact INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox_shards ADD COLUMN projected_position INTEGER NOT NULL DEFAULT 0;
UPDATE outbox_shards SET
    sent_position = COALESCE(
        (SELECT min(o.position) - 1 FROM outbox o
         WHERE o.shard = outbox_shards.shard AND o.sent_at IS NULL),
        (SELECT max(position) FROM outbox), 0),
    projected_position = COALESCE(
        (SELECT min(o.position) - 1 FROM outbox o
         WHERE o.shard = outbox_shards.shard AND o.projected_at IS NULL),
        (SELECT max(position) FROM outbox), 0);
DROP INDEX outbox_unsent;
DROP INDEX outbox_unprojected;
DROP INDEX outbox_sent;
ALTER TABLE outbox DROP COLUMN sent_at;
ALTER TABLE outbox DROP COLUMN projected_at;
