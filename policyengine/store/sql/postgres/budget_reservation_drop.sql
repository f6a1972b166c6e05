-- budget_reservation_drop: release one live hold (the call did not happen); kept, as released, for a late settle.
UPDATE budget_reservations SET state = 'released' WHERE id = %(id)s AND state = 'held';
