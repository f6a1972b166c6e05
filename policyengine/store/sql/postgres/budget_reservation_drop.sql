-- budget_reservation_drop: remove one hold (settled or released).
DELETE FROM budget_reservations WHERE id = %(id)s;
