-- budget_between: usage of one scope and unit over hours in [start, end) (end NULL: no end).
SELECT coalesce(sum(amount), 0) FROM budget_usage
WHERE scope_key = %(scope_key)s AND unit = %(unit)s AND hour_start >= %(start)s
  AND (%(end)s::timestamptz IS NULL OR hour_start < %(end)s::timestamptz);
