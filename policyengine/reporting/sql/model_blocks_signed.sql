-- model_blocks_signed: every model suspension as the signed audit log records it, for the named
-- report model_blocks (a temp view over audit_log, made by reports.prepare_context).
-- A block is a monitor alert (kind bias or drift) that breached with action "block"; the monitor
-- writes it just before it adds the row to the block list. blocked_at is the instant the monitor
-- judged as of (details.window_end, which the block list also keeps; else the record's time).
-- A model_unblocked record (`policyengine models unblock`) lifts every block of its model recorded
-- before it and not lifted yet, so each block is lifted by the first model_unblocked of its model
-- recorded at or after it (by record time, which also orders a folder of databases).
CREATE OR REPLACE TEMP VIEW signed_model_blocks AS
WITH blocks AS (
    SELECT ts,
           payload ->> '$.model'                                                  AS model,
           payload ->> '$.rule'                                                   AS rule,
           printf('%s %s breaches %s', payload ->> '$.metric',
                  printf('%.6g', TRY_CAST(payload ->> '$.value' AS DOUBLE)),
                  payload ->> '$.threshold')                                      AS reason,
           coalesce(TRY_CAST(payload ->> '$.details.window_end' AS TIMESTAMPTZ), ts) AS blocked_at
    FROM audit_log
    WHERE event = 'alert' AND payload ->> '$.kind' IN ('bias', 'drift')
      AND payload ->> '$.action' = 'block' AND TRY_CAST(payload ->> '$.breach' AS BOOLEAN)
),
lifts AS (
    SELECT ts, payload ->> '$.model' AS model, payload ->> '$.by' AS unblocked_by, payload ->> '$.note' AS note
    FROM audit_log
    WHERE event = 'model_unblocked'
)
SELECT b.model, b.rule, b.reason, b.blocked_at,
       l.ts AS unblocked_at, l.unblocked_by, l.note
FROM blocks b ASOF LEFT JOIN lifts l ON b.model = l.model AND b.ts <= l.ts;
