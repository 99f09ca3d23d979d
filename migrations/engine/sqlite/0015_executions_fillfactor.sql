-- PostgreSQL's migration of this number leaves room on the pages of `executions` for in-place
-- updates; SQLite has no such setting. Kept so both stores count the same migrations.
SELECT 1;
