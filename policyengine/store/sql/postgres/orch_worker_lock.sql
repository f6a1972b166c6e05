-- orch_worker_lock: take this worker's liveness lock for the life of its session (false: the key is taken, pick another).
SELECT pg_try_advisory_lock(7020131, %(key)s::integer);
