-- budget_charge_totals: add actual usage to the running totals of its hour, day and month.
-- Parameters: (scope_key, unit, period_start, amount) for hour, day and month.
INSERT INTO budget_totals (scope_key, unit, period, period_start, amount)
VALUES (?, ?, 'hour', ?, ?), (?, ?, 'day', ?, ?), (?, ?, 'month', ?, ?)
ON CONFLICT (scope_key, unit, period, period_start) DO UPDATE SET amount = budget_totals.amount + excluded.amount;
