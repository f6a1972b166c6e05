-- title: Data access log (who accessed what)
-- description: Every access to datasets matching a glob, with who, when, in which workflow
--   and run, and the classification and origin of the data; plus the decision on each
--   dataset request (allowed, denied or escalated) so refused attempts show too.
-- regulation: GDPR Art. 30 (records of processing) and Art. 15 (access requests); HIPAA 164.312(b) (audit controls)
-- param: dataset VARCHAR | dataset id glob, e.g. "erp/invoices/*" ("*" for all)
-- param: since TIMESTAMP = 1970-01-01 | first instant included (UTC)
-- param: until TIMESTAMP = 9999-12-31 | first instant excluded (UTC)
SELECT seq, ts, actor, workflow, run_id,
       'access' AS kind,
       payload ->> '$.dataset' AS dataset,
       payload ->> '$.classification' AS classification,
       payload ->> '$.origin' AS origin,
       NULL AS effect
FROM audit_log
WHERE event = 'data_access' AND ts >= $since AND ts < $until
  AND (payload ->> '$.dataset') GLOB $dataset
UNION ALL
SELECT seq, ts, actor, workflow, run_id,
       'request',
       payload ->> '$.request.resource.id',
       payload ->> '$.request.data.classification',
       payload ->> '$.request.data.origin',
       payload ->> '$.decision.effect'
FROM audit_log
WHERE event = 'decision' AND payload ->> '$.request.resource.kind' = 'dataset'
  AND ts >= $since AND ts < $until
  AND (payload ->> '$.request.resource.id') GLOB $dataset
ORDER BY seq;
