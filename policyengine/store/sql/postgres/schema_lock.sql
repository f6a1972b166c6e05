-- schema_lock: one process at a time creates the tables (CREATE ... IF NOT EXISTS races otherwise).
SELECT pg_advisory_xact_lock(7020130);
