-- context_budget_limit: one limit of one budget rule of the policy.
INSERT INTO budget_limits VALUES ($budget, $scope_kind, $scope, $unit, $window, $amount);
