-- Signal requests recorded with a fingerprint of the signal (see the PostgreSQL migration of
-- this number).
ALTER TABLE signal_requests ADD COLUMN fingerprint INTEGER;
