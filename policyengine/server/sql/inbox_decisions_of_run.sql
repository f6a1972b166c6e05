-- The decisions recorded for one run, oldest first: the approver inbox shows the request and reasons of the escalated step.
SELECT payload FROM audit_log WHERE run_id = $run_id AND event = 'decision' ORDER BY seq
