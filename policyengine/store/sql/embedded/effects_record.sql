-- effects_record: record a side effect under its idempotency key; no row if it was recorded before.
INSERT INTO store_effects (idem_key, run_id, effect, result) VALUES ($idem_key, $run_id, $effect, $result)
ON CONFLICT (idem_key) DO NOTHING
RETURNING idem_key;
