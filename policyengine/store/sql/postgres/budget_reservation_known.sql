-- budget_reservation_known: whether one hold's fate is still kept (any state); no row once it was forgotten (a
-- day past its deadline) or it was never taken here.
SELECT 1 FROM budget_reservations WHERE id = %(id)s;
