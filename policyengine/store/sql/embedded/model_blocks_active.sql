-- model_blocks_active: the models currently suspended, with the first open block's rule.
SELECT model, arg_min(rule, blocked_at) AS rule, arg_min(reason, blocked_at) AS reason, min(blocked_at) AS blocked_at
FROM model_blocks
WHERE unblocked_at IS NULL
GROUP BY model
ORDER BY model;
