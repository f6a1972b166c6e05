-- drift_ks: two-sample Kolmogorov-Smirnov statistic (scipy.stats.ks_2samp):
--   D = max over x of |F_ref(x) - F_cur(x)|, F the empirical CDFs (count <= x / n).
-- Also where it is reached and its sign (+1 when the reference CDF is above,
-- i.e. current values tend to be larger), chosen as scipy does: the positive
-- side wins ties, and the smallest such x.
WITH totals AS (
    SELECT count(*) FILTER (WHERE side = 'reference') AS n_ref,
           count(*) FILTER (WHERE side = 'current')   AS n_cur
    FROM drift_input
),
pts AS (
    SELECT num,
           count(*) FILTER (WHERE side = 'reference') AS rc,
           count(*) FILTER (WHERE side = 'current')   AS cc
    FROM drift_input GROUP BY num
),
cdf AS (
    SELECT num,
           sum(rc) OVER w / n_ref - sum(cc) OVER w / n_cur AS diff
    FROM pts, totals
    WINDOW w AS (ORDER BY num ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
),
ext AS (
    SELECT greatest(max(diff), 0.0) AS max_pos, greatest(-min(diff), 0.0) AS max_neg FROM cdf
)
SELECT
    CASE WHEN max_neg > max_pos THEN max_neg ELSE max_pos END AS statistic,
    CASE WHEN max_neg > max_pos
         THEN (SELECT min(num) FROM cdf WHERE -diff = max_neg)
         ELSE (SELECT min(num) FROM cdf WHERE diff = max_pos) END AS location,
    CASE WHEN max_neg > max_pos THEN -1 ELSE 1 END AS sign,
    (SELECT n_ref FROM totals) AS n_ref,
    (SELECT n_cur FROM totals) AS n_cur
FROM ext;
