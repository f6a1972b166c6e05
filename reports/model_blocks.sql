-- title: Model suspensions
-- description: Every model suspended by a bias or drift rule ("on breach block"): which
--   rule and reading blocked it, when, and who lifted the block, when and why. A model
--   with no unblocked_at is still blocked. Read from the signed audit log, which audit verify
--   checks: each block is the monitor's alert that breached with action block, each lift the
--   model_unblocked record of `policyengine models unblock` (the first one for the model after
--   the block). The block list the engine acts on (model_blocks) is not signed; where it holds
--   other blocks or lifts than these records, a note names the models.
-- regulation: EU AI Act Art. 20 (corrective actions) and Art. 72 (post-market monitoring); ISO/IEC 42001 cl. 10.2 (corrective action)
-- param: since TIMESTAMP = 1970-01-01 | blocks placed at or after this instant (UTC)
SELECT model, rule, reason, blocked_at, unblocked_at, unblocked_by, note,
       unblocked_at IS NULL                                                      AS still_blocked,
       round((epoch(coalesce(unblocked_at, now())) - epoch(blocked_at)) / 3600.0, 2) AS hours_blocked
FROM signed_model_blocks
WHERE blocked_at >= $since
ORDER BY blocked_at, model;
