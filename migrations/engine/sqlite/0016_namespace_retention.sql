-- How long a namespace keeps its closed runs (see the PostgreSQL migration of this number).
ALTER TABLE namespaces ADD COLUMN retention_ms INTEGER NOT NULL DEFAULT 604800000;
