-- budget_reservations_all: every hold, loaded when the ledger opens.
SELECT id, scope_key, unit, amount, charged_at, expires_at FROM budget_reservations;
