-- budget_lock: serialise reservations of one scope and unit until the transaction ends.
SELECT pg_advisory_xact_lock(hashtextextended(%(scope_key)s || '|' || %(unit)s, 0));
