-- drift_psi_numeric: Population Stability Index of a numeric column, per bin.
--
-- Convention (docs/reports.md): the n_bins - 1 inner edges are the reference
-- quantiles at 1/n_bins, 2/n_bins, ... by linear interpolation (quantile_cont,
-- = numpy.quantile method="linear"); a value's bin is the number of edges <= it
-- (numpy.searchsorted side="right"); a share is count / rows of that side; an
-- empty share becomes 1e-4 (per side, no renormalisation); natural log:
--   PSI = sum over bins of (cur_share - ref_share) * ln(cur_share / ref_share)
-- Parameters: probs (the quantile levels), n_bins, epsilon.
WITH edges AS (
    SELECT quantile_cont(num, $probs) AS e FROM drift_input WHERE side = 'reference'
),
binned AS (
    SELECT side, list_sum([(edge <= num)::INTEGER FOR edge IN e]) AS bin
    FROM drift_input, edges
),
totals AS (
    SELECT count(*) FILTER (WHERE side = 'reference') AS n_ref,
           count(*) FILTER (WHERE side = 'current')   AS n_cur
    FROM drift_input
),
counts AS (
    SELECT bin,
           count(*) FILTER (WHERE side = 'reference') AS ref_count,
           count(*) FILTER (WHERE side = 'current')   AS cur_count
    FROM binned GROUP BY bin
),
shares AS (
    SELECT b.range AS bin,
           coalesce(c.ref_count, 0) AS ref_count,
           coalesce(c.cur_count, 0) AS cur_count,
           coalesce(c.ref_count, 0)::DOUBLE / t.n_ref AS ref_pct,
           coalesce(c.cur_count, 0)::DOUBLE / t.n_cur AS cur_pct
    FROM range(0, $n_bins) b LEFT JOIN counts c ON c.bin = b.range, totals t
),
eps AS (
    SELECT *,
           CASE WHEN ref_pct = 0 THEN $epsilon ELSE ref_pct END AS ref_pct_eps,
           CASE WHEN cur_pct = 0 THEN $epsilon ELSE cur_pct END AS cur_pct_eps
    FROM shares
)
SELECT
    'bin_' || bin::VARCHAR                                          AS bin,
    CASE WHEN bin = 0 THEN NULL ELSE (SELECT e FROM edges)[bin] END  AS lower_edge,
    CASE WHEN bin = $n_bins - 1 THEN NULL ELSE (SELECT e FROM edges)[bin + 1] END AS upper_edge,
    ref_count, cur_count, ref_pct, cur_pct, ref_pct_eps, cur_pct_eps,
    (cur_pct_eps - ref_pct_eps) * ln(cur_pct_eps / ref_pct_eps)     AS psi_term
FROM eps
ORDER BY eps.bin;
