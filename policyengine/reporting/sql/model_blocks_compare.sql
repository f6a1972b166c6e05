-- model_blocks_compare: where the block list (model_blocks, not signed, what the engine denies)
-- and the signed events (signed_model_blocks) disagree: per model and rule, how many blocks each
-- holds and how many of them are still open, for the pairs whose counts differ. Over the whole
-- history: a block added, deleted, lifted or reopened in the table alone shows here.
WITH signed AS (
    SELECT model, rule, count(*) AS blocks, count(*) FILTER (WHERE unblocked_at IS NULL) AS open
    FROM signed_model_blocks
    GROUP BY model, rule
),
listed AS (
    SELECT model, rule, count(*) AS blocks, count(*) FILTER (WHERE unblocked_at IS NULL) AS open
    FROM model_blocks
    GROUP BY model, rule
)
SELECT coalesce(l.model, s.model)  AS model,
       coalesce(l.rule, s.rule)    AS rule,
       coalesce(l.blocks, 0)       AS listed_blocks,
       coalesce(l.open, 0)         AS listed_open,
       coalesce(s.blocks, 0)       AS signed_blocks,
       coalesce(s.open, 0)         AS signed_open
FROM listed l FULL OUTER JOIN signed s ON l.model = s.model AND l.rule = s.rule
WHERE coalesce(l.blocks, 0) <> coalesce(s.blocks, 0) OR coalesce(l.open, 0) <> coalesce(s.open, 0)
ORDER BY model, rule;
