-- orch_effect_insert: record a side effect's receipt; the first receipt of a key wins.
INSERT INTO orch_effects (idem_key, run_id, step, tool, result, created_at) VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (idem_key) DO NOTHING;
