-- The recorded decisions with seq in ($after, $last] and time in [$since, $until), grouped by
-- request and recorded outcome: requests that differ only in the per-run fields no rule reads
-- (removed by the regular expression $strip; NULL keeps each request whole) and were decided
-- alike form one group, decided once. A decision that depends on its time stands alone
-- (at_us): every one when the candidate reads the clock ($timed: `age of`), and a request
-- carrying approvals (their age is checked against the decision's time). One
-- json_extract_string call reads the four fields.
WITH recorded AS (
    SELECT seq, ts, effect, route, request,
           CASE WHEN request_key IS NULL THEN NULL WHEN at_us IS NULL THEN request_key
                ELSE concat(request_key, chr(31), at_us) END AS request_key
    FROM (SELECT seq, ts, f[2] AS effect, f[3] AS route, f[4] AS request,
                 CASE WHEN $strip IS NULL THEN f[4] ELSE regexp_replace(f[4], $strip, '', 'g') END AS request_key,
                 CASE WHEN $timed OR contains(f[4], '"approvals":[{') THEN epoch_us(ts) END AS at_us
          FROM (SELECT seq, ts,
                       json_extract_string(payload, ['$.step', '$.decision.effect', '$.decision.route', '$.request']) AS f
                FROM audit_log
                WHERE event = 'decision' AND seq > $after AND seq <= $last
                  AND ($since IS NULL OR ts >= $since) AND ($until IS NULL OR ts < $until)))
)
SELECT concat_ws(chr(31), coalesce(request_key, ''), coalesce(effect, ''), coalesce(route, '')) AS group_key,
       request_key, effect, route, count(*) AS records, any_value(request) AS request,
       epoch_us(min(ts)) AS first_us
FROM recorded
GROUP BY request_key, effect, route;
