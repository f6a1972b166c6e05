-- title: Escalations with approver, latency and outcome (four-eyes evidence)
-- description: Every human decision on an escalation gate: who asked, who decided, in which
--   role, how long it took, whether it was within the deadline, and whether approver and
--   requester were different people (four-eyes principle).
-- regulation: EU AI Act Art. 14 (human oversight); SOX 404 (segregation of duties); PSD2 / internal payment controls
-- param: since TIMESTAMP = 1970-01-01 | first instant included (UTC)
-- param: until TIMESTAMP = 9999-12-31 | first instant excluded (UTC)
-- param: gate VARCHAR = null | only this escalation gate (rule id; default: all)
WITH approvals AS (
    SELECT
        seq, ts, workflow, run_id,
        payload ->> '$.gate'                                  AS gate,
        payload ->> '$.requester'                             AS requester,
        payload ->> '$.approver'                              AS approver,
        payload ->> '$.role'                                  AS role,
        payload ->> '$.outcome'                               AS outcome,
        TRY_CAST(payload ->> '$.requested_at' AS TIMESTAMPTZ) AS requested_at,
        TRY_CAST(payload ->> '$.decided_at' AS TIMESTAMPTZ)   AS decided_at,
        TRY_CAST(payload ->> '$.deadline' AS TIMESTAMPTZ)     AS deadline,
        payload ->> '$.note'                                  AS note
    FROM audit_log
    WHERE event = 'approval' AND ts >= $since AND ts < $until
      AND (CAST($gate AS VARCHAR) IS NULL OR payload ->> '$.gate' = CAST($gate AS VARCHAR))
)
SELECT
    seq, workflow, run_id, gate, requester, approver, role, outcome,
    requested_at, decided_at,
    round(epoch(decided_at) - epoch(requested_at), 3)           AS latency_seconds,
    deadline,
    CASE WHEN deadline IS NULL OR decided_at IS NULL THEN NULL
         ELSE decided_at <= deadline END                        AS within_deadline,
    CASE WHEN approver IS NULL OR requester IS NULL THEN NULL
         ELSE approver <> requester END                         AS four_eyes,
    note
FROM approvals
ORDER BY coalesce(requested_at, ts), seq;
