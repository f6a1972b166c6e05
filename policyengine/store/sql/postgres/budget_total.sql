-- budget_total: the running total of one scope and unit in one calendar window.
SELECT amount FROM budget_totals
WHERE scope_key = %(scope_key)s AND unit = %(unit)s AND period = %(period)s AND period_start = %(start)s;
