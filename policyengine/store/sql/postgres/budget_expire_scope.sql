-- budget_expire_scope: drop the holds of one scope and unit whose deadline has passed.
DELETE FROM budget_reservations WHERE scope_key = %(scope_key)s AND unit = %(unit)s AND expires_at <= %(now)s;
