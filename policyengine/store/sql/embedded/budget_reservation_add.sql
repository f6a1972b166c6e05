-- budget_reservation_add: hold an admitted estimate. Parameters: id, scope_key, unit, amount, charged_at, expires_at.
INSERT INTO budget_reservations (id, scope_key, unit, amount, charged_at, expires_at) VALUES (?, ?, ?, ?, ?, ?);
