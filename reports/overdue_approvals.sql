-- title: Overdue approvals
-- description: Escalations whose deadline passed before a human decided: still pending
--   at as_of, decided after the deadline, or expired (the gate's "else" applied). Pending
--   ones are escalate decisions with an approval_required obligation and no approval
--   event for the same run and gate. The requester is the person the request was made
--   for (the run's requested_by for a workflow step, else the principal), as in the
--   escalations report.
-- regulation: EU AI Act Art. 14 (human oversight); SOX 404 (timely review of controls)
-- param: as_of TIMESTAMP = now | the moment to judge "overdue" at (UTC; default: now)
WITH asked AS (
    SELECT seq, ts, workflow, run_id,
           coalesce(payload ->> '$.request.principal.attrs.requested_by', actor) AS requester,
           unnest(json_extract(payload, '$.decision.obligations[*]')) AS o
    FROM audit_log
    WHERE event = 'decision' AND payload ->> '$.decision.effect' = 'escalate'
),
gates AS (
    SELECT seq, ts AS requested_at, workflow, run_id, requester,
           o ->> '$.gate' AS gate, o ->> '$.role' AS role,
           TRY_CAST(o ->> '$.deadline_at' AS TIMESTAMPTZ) AS deadline
    FROM asked
    WHERE o ->> '$.kind' = 'approval_required'
),
answers AS (
    SELECT seq, workflow, run_id,
           payload ->> '$.gate' AS gate, payload ->> '$.requester' AS requester,
           payload ->> '$.approver' AS approver, payload ->> '$.role' AS role,
           payload ->> '$.outcome' AS outcome,
           TRY_CAST(payload ->> '$.requested_at' AS TIMESTAMPTZ) AS requested_at,
           TRY_CAST(payload ->> '$.decided_at' AS TIMESTAMPTZ) AS decided_at,
           TRY_CAST(payload ->> '$.deadline' AS TIMESTAMPTZ) AS deadline
    FROM audit_log
    WHERE event = 'approval'
),
pending AS (
    SELECT g.seq, g.workflow, g.run_id, g.gate, g.requester, NULL AS approver, g.role,
           'pending' AS status, g.requested_at, NULL::TIMESTAMPTZ AS decided_at, g.deadline
    FROM gates g
    WHERE g.deadline IS NOT NULL AND g.deadline < $as_of
      AND NOT EXISTS (SELECT 1 FROM answers a WHERE a.run_id = g.run_id AND a.gate = g.gate)
),
late AS (
    SELECT seq, workflow, run_id, gate, requester, approver, role,
           CASE WHEN outcome = 'expired' THEN 'expired' ELSE 'decided late (' || outcome || ')' END AS status,
           requested_at, decided_at, deadline
    FROM answers
    WHERE outcome = 'expired' OR (deadline IS NOT NULL AND decided_at > deadline)
)
SELECT seq, workflow, run_id, gate, requester, approver, role, status, requested_at, decided_at, deadline,
       round((epoch(coalesce(decided_at, $as_of::TIMESTAMPTZ)) - epoch(deadline)) / 3600.0, 2) AS hours_overdue
FROM (SELECT * FROM pending UNION ALL SELECT * FROM late)
ORDER BY deadline, seq;
