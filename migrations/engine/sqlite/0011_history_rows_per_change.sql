-- A row of history_events holds the events event_id..=last_event_id that one change appended
-- (up to 256), each length-delimited: one row and one index entry per change instead of one
-- per event. Rows written before this migration have no last_event_id and hold one event,
-- not delimited; they are read as before. Nodes older than this migration cannot read the new
-- rows: upgrade every node of a database together.
ALTER TABLE history_events ADD COLUMN last_event_id BIGINT;
