-- title: Open escalations from the monitor, by approver role
-- description: Each bias or drift rule whose `on breach escalate to role R` has fired and is
--   still waiting for that role: the rule's latest monitor result is a breach and no `approval`
--   event for the rule (gate = rule id) was recorded since the breach began (the first breach
--   after the rule's last healthy result). One row per rule and model, with the role to act,
--   when the breach began, how many monitor runs have seen it and the latest reading. A result
--   the monitor could not evaluate (no value: no data, a missing path, one group judged) is no
--   reading: it neither closes an open item nor counts as a run that saw the breach.
-- regulation: EU AI Act Art. 14 (human oversight) and Art. 72 (post-market monitoring); ISO/IEC 42001 10.2
-- param: role VARCHAR = null | only items for this approver role (default: all)
WITH alerts AS (
    SELECT seq, ts,
           payload ->> '$.rule'                        AS rule,
           payload ->> '$.model'                       AS model,
           payload ->> '$.kind'                        AS kind,
           payload ->> '$.metric'                      AS metric,
           TRY_CAST(payload ->> '$.value' AS DOUBLE)   AS value,
           payload ->> '$.threshold'                   AS threshold,
           coalesce(TRY_CAST(payload ->> '$.breach' AS BOOLEAN), false) AS breach,
           payload ->> '$.action'                      AS action,
           payload ->> '$.details.escalate_to_role'    AS role
    FROM audit_log
    WHERE event = 'alert' AND payload ->> '$.kind' IN ('bias', 'drift')
      AND json_type(payload, '$.value') IN ('BIGINT', 'UBIGINT', 'HUGEINT', 'DOUBLE')  -- a reading, not an unread rule
      AND payload ->> '$.details.error' IS NULL
),
latest AS (
    SELECT rule, model, max(seq) AS seq
    FROM alerts GROUP BY rule, model
),
streak AS (  -- the breach began after the rule's last healthy (non-breach) result
    SELECT a.rule, a.model, min(a.seq) AS first_seq, min(a.ts) AS breached_since, count(*) AS runs
    FROM alerts a
    WHERE a.breach AND a.seq > coalesce((SELECT max(h.seq) FROM alerts h
                                          WHERE h.rule = a.rule AND h.model = a.model AND NOT h.breach), 0)
    GROUP BY a.rule, a.model
)
SELECT a.role, a.rule, a.model, a.kind, a.metric, a.value AS latest_value, a.threshold,
       s.breached_since, a.ts AS last_seen, s.runs, a.seq
FROM alerts a
JOIN latest l ON l.seq = a.seq
JOIN streak s ON s.rule = a.rule AND s.model = a.model
WHERE a.breach AND a.action = 'escalate'
  AND (CAST($role AS VARCHAR) IS NULL OR a.role = CAST($role AS VARCHAR))
  AND NOT EXISTS (SELECT 1 FROM audit_log p
                  WHERE p.event = 'approval' AND p.payload ->> '$.gate' = a.rule AND p.seq > s.first_seq)
ORDER BY a.role, s.breached_since, a.rule;
