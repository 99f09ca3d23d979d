-- Breakers belong to the namespace their worker reported in (describe shows a run only its own
-- namespace's), and carry when they were last reported: a worker gone quiet stops showing,
-- and its rows are deleted after a day, so worker identities that come and go do not grow the
-- table.
ALTER TABLE breakers ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE breakers ADD COLUMN reported_at BIGINT NOT NULL DEFAULT 0;
UPDATE breakers SET reported_at = changed_at;
ALTER TABLE breakers DROP CONSTRAINT breakers_pkey;
ALTER TABLE breakers ADD PRIMARY KEY (namespace, worker, adapter);
