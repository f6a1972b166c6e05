-- budget_charge_totals: add actual usage to the running totals of its hour, day and month.
INSERT INTO budget_totals (scope_key, unit, period, period_start, amount)
VALUES (%(scope_key)s, %(unit)s, 'hour', %(hour)s, %(amount)s),
       (%(scope_key)s, %(unit)s, 'day', %(day)s, %(amount)s),
       (%(scope_key)s, %(unit)s, 'month', %(month)s, %(amount)s)
ON CONFLICT (scope_key, unit, period, period_start) DO UPDATE SET amount = budget_totals.amount + excluded.amount;
