-- PostgreSQL's vacuum settings for the high-churn tables; SQLite reuses freed pages itself.
SELECT 1;
