-- Pausing a run needs no schema change on SQLite: the engine writes each statement itself.
SELECT 1;
