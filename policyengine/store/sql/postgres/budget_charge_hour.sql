-- budget_charge_hour: add actual usage to the hour bucket of one scope and unit.
INSERT INTO budget_usage (scope_key, unit, hour_start, amount)
VALUES (%(scope_key)s, %(unit)s, %(hour)s, %(amount)s)
ON CONFLICT (scope_key, unit, hour_start) DO UPDATE SET amount = budget_usage.amount + excluded.amount;
