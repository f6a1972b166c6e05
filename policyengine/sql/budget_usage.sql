-- budget_usage: usage of one scope and unit since the start of a window.
-- Parameters: scope_key, unit, window_start (UTC).
SELECT coalesce(sum(amount), 0.0)
FROM budget_usage
WHERE scope_key = ? AND unit = ? AND hour_start >= ?;
