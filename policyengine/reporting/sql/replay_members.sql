-- The records of the groups $groups (group keys as replay_groups builds them) with seq in
-- ($after, $last] and time in [$since, $until): what a changed decision is reported with.
SELECT seq, epoch_us(ts) AS ts_us, workflow, run_id, step, group_key
FROM (SELECT seq, ts, workflow, run_id, step,
             concat_ws(chr(31),
                       coalesce(CASE WHEN request_key IS NULL THEN NULL WHEN at_us IS NULL THEN request_key
                                     ELSE concat(request_key, chr(31), at_us) END, ''),
                       coalesce(effect, ''), coalesce(route, '')) AS group_key
      FROM (SELECT seq, ts, workflow, run_id, f[1] AS step, f[2] AS effect, f[3] AS route,
                   CASE WHEN $strip IS NULL THEN f[4] ELSE regexp_replace(f[4], $strip, '', 'g') END AS request_key,
                   CASE WHEN $timed OR contains(f[4], '"approvals":[{') THEN epoch_us(ts) END AS at_us
            FROM (SELECT seq, ts, workflow, run_id,
                         json_extract_string(payload, ['$.step', '$.decision.effect', '$.decision.route', '$.request']) AS f
                  FROM audit_log
                  WHERE event = 'decision' AND seq > $after AND seq <= $last
                    AND ($since IS NULL OR ts >= $since) AND ($until IS NULL OR ts < $until))))
WHERE list_contains($groups, group_key)
ORDER BY seq;
