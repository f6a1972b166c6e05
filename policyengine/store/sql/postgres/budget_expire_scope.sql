-- budget_expire_scope: mark the live holds of one scope and unit whose deadline has passed expired, returning
-- each (to be charged at its estimate), and forget that scope's holds dropped more than a day before.
WITH forgotten AS (DELETE FROM budget_reservations
                   WHERE scope_key = %(scope_key)s AND unit = %(unit)s AND state <> 'held'
                     AND expires_at <= %(now)s - INTERVAL '1 day')
UPDATE budget_reservations SET state = 'expired'
WHERE scope_key = %(scope_key)s AND unit = %(unit)s AND state = 'held' AND expires_at <= %(now)s
RETURNING id, scope_key, unit, amount, charged_at;
