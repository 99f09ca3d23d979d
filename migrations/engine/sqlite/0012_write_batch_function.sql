-- PostgreSQL's 0012 adds the function that writes a group-commit batch in one round trip.
-- SQLite runs in the engine's process, with no round trips to save: nothing to do here.
SELECT 1;
