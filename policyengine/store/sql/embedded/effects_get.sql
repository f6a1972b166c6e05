-- effects_get: the recorded result of one side effect.
SELECT result FROM store_effects WHERE idem_key = $idem_key;
