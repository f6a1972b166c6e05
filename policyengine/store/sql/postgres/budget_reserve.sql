-- budget_reserve: hold an estimate only if spent (in the window) + live holds + estimate <= limit.
-- Run under budget_lock, so no other reservation of the scope interleaves. Returns the id when admitted.
INSERT INTO budget_reservations (id, scope_key, unit, amount, charged_at, expires_at)
SELECT %(id)s, %(scope_key)s, %(unit)s, %(amount)s, %(at)s, %(expires_at)s
WHERE coalesce((SELECT amount FROM budget_totals
                WHERE scope_key = %(scope_key)s AND unit = %(unit)s
                  AND period = %(period)s AND period_start = %(period_start)s), 0)
    + coalesce((SELECT sum(amount) FROM budget_reservations
                WHERE scope_key = %(scope_key)s AND unit = %(unit)s AND state = 'held'), 0)
    + %(amount)s <= %(limit)s
RETURNING id;
