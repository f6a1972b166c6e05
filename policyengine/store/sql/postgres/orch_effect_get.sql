-- orch_effect_get: a tool's recorded side effect, by idempotency key.
SELECT result FROM orch_effects WHERE idem_key = %(idem_key)s;
