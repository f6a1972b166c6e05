-- budget_reserved: the total held for one scope and unit (live holds).
SELECT coalesce(sum(amount), 0) FROM budget_reservations
WHERE scope_key = %(scope_key)s AND unit = %(unit)s AND state = 'held';
