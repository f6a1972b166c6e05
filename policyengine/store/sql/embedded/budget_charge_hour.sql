-- budget_charge_hour: add actual usage to the hour bucket of one scope and unit.
-- Parameters: scope_key, unit, hour_start (UTC), amount.
INSERT INTO budget_usage (scope_key, unit, hour_start, amount)
VALUES (?, ?, ?, ?)
ON CONFLICT (scope_key, unit, hour_start) DO UPDATE SET amount = budget_usage.amount + excluded.amount;
