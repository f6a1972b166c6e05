-- drift_psi_categorical: PSI of a categorical column: one bin per category seen
-- in either side, shares and the 1e-4 rule as in drift_psi_numeric.sql.
-- Parameters: epsilon.
WITH totals AS (
    SELECT count(*) FILTER (WHERE side = 'reference') AS n_ref,
           count(*) FILTER (WHERE side = 'current')   AS n_cur
    FROM drift_input
),
counts AS (
    SELECT cat AS bin,
           count(*) FILTER (WHERE side = 'reference') AS ref_count,
           count(*) FILTER (WHERE side = 'current')   AS cur_count
    FROM drift_input GROUP BY cat
),
shares AS (
    SELECT bin, ref_count, cur_count,
           ref_count::DOUBLE / n_ref AS ref_pct,
           cur_count::DOUBLE / n_cur AS cur_pct
    FROM counts, totals
),
eps AS (
    SELECT *,
           CASE WHEN ref_pct = 0 THEN $epsilon ELSE ref_pct END AS ref_pct_eps,
           CASE WHEN cur_pct = 0 THEN $epsilon ELSE cur_pct END AS cur_pct_eps
    FROM shares
)
SELECT bin, NULL::DOUBLE AS lower_edge, NULL::DOUBLE AS upper_edge,
       ref_count, cur_count, ref_pct, cur_pct, ref_pct_eps, cur_pct_eps,
       (cur_pct_eps - ref_pct_eps) * ln(cur_pct_eps / ref_pct_eps) AS psi_term
FROM eps
ORDER BY bin;
