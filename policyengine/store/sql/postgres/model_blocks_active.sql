-- model_blocks_active: the models currently suspended, with the first open block's rule.
SELECT DISTINCT ON (model) model, rule, reason, blocked_at
FROM model_blocks
WHERE unblocked_at IS NULL
ORDER BY model, blocked_at;
