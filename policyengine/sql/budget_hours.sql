-- budget_hours: every hour bucket of one scope and unit (loaded once into the ledger's cache).
-- Parameters: scope_key, unit.
SELECT hour_start, amount
FROM budget_usage
WHERE scope_key = ? AND unit = ?;
