-- orch_worker_unlock: let go of this worker's liveness lock now (closing the session alone frees it only once the
-- server has noticed, a moment later).
SELECT pg_advisory_unlock(7020131, %(key)s::integer);
