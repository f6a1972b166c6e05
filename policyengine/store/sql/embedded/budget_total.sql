-- budget_total: the running total of one scope and unit in one calendar window.
-- Parameters: scope_key, unit, period, period_start.
SELECT amount FROM budget_totals WHERE scope_key = ? AND unit = ? AND period = ? AND period_start = ?;
