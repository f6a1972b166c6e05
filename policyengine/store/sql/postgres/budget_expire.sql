-- budget_expire: mark every live hold whose deadline has passed expired, returning each (to be charged at its
-- estimate), and forget the holds dropped more than a day before.
WITH forgotten AS (DELETE FROM budget_reservations
                   WHERE state <> 'held' AND expires_at <= %(now)s - INTERVAL '1 day')
UPDATE budget_reservations SET state = 'expired' WHERE state = 'held' AND expires_at <= %(now)s
RETURNING id, scope_key, unit, amount, charged_at;
