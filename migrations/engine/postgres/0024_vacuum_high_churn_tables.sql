-- The engine's high-churn tables (every saga inserts and, after its retention, deletes their
-- rows; tasks and outbox rows live seconds) are vacuumed sooner and without the cost delay, so
-- that their dead rows are reclaimed at the rate they are made and the tables keep their size
-- at a steady load (the soak in docs/performance.md). PostgreSQL's defaults (20% of a table
-- dead before a vacuum, 2 ms naps) let a table written at thousands of rows a second grow
-- between vacuums.
ALTER TABLE history_events SET (autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE executions SET (autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0);
ALTER TABLE activity_tasks SET (autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_cost_delay = 0);
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE timers SET (autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0);
