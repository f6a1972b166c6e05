-- drift_ks: two-sample Kolmogorov-Smirnov statistic (scipy.stats.ks_2samp):
--   D = max over x of |F_ref(x) - F_cur(x)|, F the empirical CDFs (count <= x / n).
-- Also where it is reached and its sign (+1 when the reference CDF is above,
-- i.e. current values tend to be larger), chosen as scipy does: the positive
-- side wins ties; among the values where it is reached, the smallest reference
-- value, else the smallest current value.
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
    SELECT num, rc,
           sum(rc) OVER w / n_ref - sum(cc) OVER w / n_cur AS diff
    FROM pts, totals
    WINDOW w AS (ORDER BY num ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
),
ext AS (
    SELECT greatest(max(diff), 0.0) AS max_pos, greatest(-min(diff), 0.0) AS max_neg FROM cdf
),
hits AS (  -- the points where the winning side is reached
    SELECT cdf.num, cdf.rc
    FROM cdf, ext
    WHERE CASE WHEN max_neg > max_pos THEN -diff = max_neg ELSE diff = max_pos END
)
SELECT
    CASE WHEN max_neg > max_pos THEN max_neg ELSE max_pos END AS statistic,
    -- scipy scans the sorted reference values first, then the current ones
    coalesce((SELECT min(num) FROM hits WHERE rc > 0), (SELECT min(num) FROM hits)) AS location,
    CASE WHEN max_neg > max_pos THEN -1 ELSE 1 END AS sign,
    (SELECT n_ref FROM totals) AS n_ref,
    (SELECT n_cur FROM totals) AS n_cur
FROM ext;
