-- bias_summary: the aggregate metrics over the judged groups of bias_groups.
--
-- Definitions (fairlearn 0.15, method="between_groups", agg="worst_case"):
--   demographic_parity_difference = max(selection_rate) - min(selection_rate)
--   demographic_parity_ratio      = min(selection_rate) / max(selection_rate)
--                                   (= the disparate impact ratio, min/max)
--   tpr_difference / fpr_difference = max - min of the group TPR / FPR
--   tpr_ratio / fpr_ratio           = min / max of the group TPR / FPR
--   equalized_odds_difference = greatest(tpr_difference, fpr_difference)
--   equalized_odds_ratio      = least(tpr_ratio, fpr_ratio)
-- A ratio whose maximum is 0 is undefined: NULL here, never NaN; least() skips a
-- NULL component (see docs/reports.md for the one case where fairlearn says NaN).
WITH j AS (SELECT * FROM bias_groups WHERE judged),
agg AS (
    SELECT
        count(*)                          AS judged_groups,
        sum(n)                            AS judged_rows,
        sum(labelled)                     AS labelled_rows,
        sum(selected)::DOUBLE / sum(n)    AS overall_selection_rate,
        max(selection_rate)               AS max_sr,
        min(selection_rate)               AS min_sr,
        max(tpr) AS max_tpr, min(tpr) AS min_tpr,
        max(fpr) AS max_fpr, min(fpr) AS min_fpr
    FROM j
),
m AS (
    SELECT
        *,
        max_sr - min_sr                                           AS demographic_parity_difference,
        CASE WHEN max_sr = 0 THEN NULL ELSE min_sr / max_sr END   AS demographic_parity_ratio,
        max_tpr - min_tpr                                         AS tpr_difference,
        max_fpr - min_fpr                                         AS fpr_difference,
        CASE WHEN max_tpr = 0 THEN NULL ELSE min_tpr / max_tpr END AS tpr_ratio,
        CASE WHEN max_fpr = 0 THEN NULL ELSE min_fpr / max_fpr END AS fpr_ratio
    FROM agg
)
SELECT
    judged_groups,
    judged_rows,
    labelled_rows,
    overall_selection_rate,
    demographic_parity_difference,
    demographic_parity_ratio,
    tpr_difference,
    fpr_difference,
    tpr_ratio,
    fpr_ratio,
    greatest(tpr_difference, fpr_difference) AS equalized_odds_difference,
    least(tpr_ratio, fpr_ratio)              AS equalized_odds_ratio
FROM m;
