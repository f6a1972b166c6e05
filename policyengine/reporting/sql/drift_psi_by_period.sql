-- drift_psi_by_period: PSI of each period (hour/day/week/month) of the current
-- sample against the whole reference sample, for "PSI over time" charts.
-- Bins as in drift_psi_numeric.sql (reference deciles) when numeric is true, else
-- one bin per category seen anywhere; shares per period; empty share -> epsilon.
-- Parameters: probs, n_bins, epsilon, period, numeric.
WITH edges AS (
    SELECT quantile_cont(num, $probs) AS e FROM drift_input WHERE side = 'reference' AND $numeric
),
binned AS (
    SELECT side,
           CASE WHEN side = 'current' THEN date_trunc($period, ts) END AS period,
           CASE WHEN $numeric THEN list_sum([(edge <= num)::INTEGER FOR edge IN e])::VARCHAR ELSE cat END AS bin
    FROM drift_input LEFT JOIN edges ON true
),
bins AS (
    SELECT DISTINCT bin FROM binned
    UNION
    SELECT range::VARCHAR FROM range(0, $n_bins) WHERE $numeric
),
ref AS (
    SELECT bin, count(*)::DOUBLE / sum(count(*)) OVER () AS p FROM binned WHERE side = 'reference' GROUP BY bin
),
cur AS (
    SELECT period, bin, count(*)::DOUBLE / sum(count(*)) OVER (PARTITION BY period) AS p, sum(count(*)) OVER (PARTITION BY period) AS n
    FROM binned WHERE side = 'current' GROUP BY period, bin
),
periods AS (SELECT DISTINCT period, n FROM cur),
grid AS (
    SELECT periods.period, periods.n, bins.bin,
           coalesce(nullif(coalesce(ref.p, 0), 0), $epsilon) AS rp,
           coalesce(nullif(coalesce(cur.p, 0), 0), $epsilon) AS cp
    FROM periods CROSS JOIN bins
    LEFT JOIN ref ON ref.bin = bins.bin
    LEFT JOIN cur ON cur.period = periods.period AND cur.bin = bins.bin
)
SELECT CAST(period AS TIMESTAMP) AS period, any_value(n) AS n_current, sum((cp - rp) * ln(cp / rp)) AS psi
FROM grid
GROUP BY period
ORDER BY period;
