-- budget_reservation_drop: remove one hold (settled, released or expired). Parameters: id.
DELETE FROM budget_reservations WHERE id = ?;
