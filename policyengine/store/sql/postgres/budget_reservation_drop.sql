-- budget_reservation_drop: remove one hold (settled or released); a row when it was still there.
DELETE FROM budget_reservations WHERE id = %(id)s RETURNING id;
