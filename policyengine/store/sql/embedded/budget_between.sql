-- budget_between: usage of one scope and unit over hours in [start, end) (end may be NULL: no end).
-- Parameters: scope_key, unit, start, end, end.
SELECT coalesce(sum(amount), 0) FROM budget_usage
WHERE scope_key = ? AND unit = ? AND hour_start >= ? AND (? IS NULL OR hour_start < ?);
