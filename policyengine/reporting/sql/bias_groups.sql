-- bias_groups: per protected group, counts and rates, judged or not, and the
-- comparison with the reference group, into the temp table bias_groups.
--
-- Definitions (fairlearn 0.15 / AIF360):
--   selection_rate = selected / n                  (fairlearn selection_rate)
--   tpr = TP / (TP + FN), 0.0 when TP + FN = 0      (fairlearn true_positive_rate)
--   fpr = FP / (FP + TN), 0.0 when FP + TN = 0      (fairlearn false_positive_rate)
--   impact_ratio = selection_rate / reference rate  (AIF360 disparate_impact)
--   parity_difference = selection_rate - reference  (AIF360 statistical_parity_difference)
-- TPR/FPR count only rows whose label is known.
-- A group with fewer than min_samples rows is reported but not judged: it takes
-- no part in the aggregates and cannot be chosen as the default reference.
-- Parameters: min_samples, reference (NULL: the judged group with the highest
-- selection rate, ties broken by name).
CREATE OR REPLACE TEMP TABLE bias_groups AS
WITH counts AS (
    SELECT
        grp,
        count(*)                                              AS n,
        count(*) FILTER (WHERE pred)                          AS selected,
        count(label)                                          AS labelled,
        count(*) FILTER (WHERE pred AND label)                AS tp,
        count(*) FILTER (WHERE NOT pred AND label)            AS fn,
        count(*) FILTER (WHERE pred AND NOT label)            AS fp,
        count(*) FILTER (WHERE NOT pred AND NOT label)        AS tn
    FROM bias_input
    GROUP BY grp
),
rates AS (
    SELECT
        *,
        selected::DOUBLE / n                                             AS selection_rate,
        CASE WHEN tp + fn = 0 THEN 0.0 ELSE tp::DOUBLE / (tp + fn) END   AS tpr,
        CASE WHEN fp + tn = 0 THEN 0.0 ELSE fp::DOUBLE / (fp + tn) END   AS fpr,
        n >= $min_samples                                                AS judged
    FROM counts
),
ref AS (
    SELECT grp AS reference_group, selection_rate AS reference_rate
    FROM rates
    WHERE CASE WHEN CAST($reference AS VARCHAR) IS NULL THEN judged
               ELSE grp = CAST($reference AS VARCHAR) END
    ORDER BY selection_rate DESC, grp
    LIMIT 1
)
SELECT
    rates.*,
    ref.reference_group,
    CASE WHEN ref.reference_rate = 0 THEN NULL
         ELSE rates.selection_rate / ref.reference_rate END AS impact_ratio,
    rates.selection_rate - ref.reference_rate               AS parity_difference
FROM rates LEFT JOIN ref ON true
ORDER BY grp;
