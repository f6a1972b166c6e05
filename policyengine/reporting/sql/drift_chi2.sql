-- drift_chi2: Pearson's chi-squared test of independence on the 2 x K table
-- (reference/current x category), as scipy.stats.chi2_contingency computes it:
-- expected = row total * column total / grand total; with one degree of
-- freedom (K = 2) Yates' correction moves each observed count 0.5 towards its
-- expected count (never past it). dof = K - 1; the p-value is computed from
-- the statistic in Python (reporting/stats.py).
WITH counts AS (
    SELECT cat,
           count(*) FILTER (WHERE side = 'reference') AS rc,
           count(*) FILTER (WHERE side = 'current')   AS cc
    FROM drift_input GROUP BY cat
),
totals AS (
    SELECT sum(rc) AS n_ref, sum(cc) AS n_cur, count(*) AS k FROM counts
),
expected AS (
    SELECT rc, cc, k,
           (n_ref * (rc + cc))::DOUBLE / (n_ref + n_cur) AS er,
           (n_cur * (rc + cc))::DOUBLE / (n_ref + n_cur) AS ec
    FROM counts, totals
),
corrected AS (
    SELECT er, ec,
           CASE WHEN k = 2 THEN rc + sign(er - rc) * least(0.5, abs(er - rc)) ELSE rc END AS orc,
           CASE WHEN k = 2 THEN cc + sign(ec - cc) * least(0.5, abs(ec - cc)) ELSE cc END AS occ,
           k
    FROM expected
)
SELECT sum((orc - er) ^ 2 / er + (occ - ec) ^ 2 / ec) AS statistic,
       any_value(k) - 1                                AS dof
FROM corrected;
