-- title: Model and agent versions in force at a time
-- description: For each model or agent alias (production, ...) changed through
--   `policyengine models promote | rollback`: the version it named at time `at`, since
--   when, who made that change, who approved it and why (signed model_version events).
--   Answers "which version was in production at time T". Aliases never changed name the
--   first declared version (see `policyengine models versions`).
-- regulation: EU AI Act Art. 12 (record-keeping) and Art. 17 (quality management, change control); ISO/IEC 42001 A.6.2.6
-- param: at TIMESTAMP = now | the instant asked about (UTC)
-- param: name VARCHAR = * | model or agent name glob
WITH changes AS (
    SELECT seq, ts,
           payload ->> '$.name'        AS name,
           payload ->> '$.kind'        AS kind,
           payload ->> '$.alias'       AS alias,
           payload ->> '$.version'     AS version,
           payload ->> '$.previous'    AS previous,
           payload ->> '$.change'      AS change,
           payload ->> '$.by'          AS changed_by,
           payload ->> '$.approved_by' AS approved_by,
           payload ->> '$.reason'      AS reason
    FROM audit_log
    WHERE event = 'model_version' AND ts <= $at
)
SELECT name, kind, alias, version, ts AS since, previous, change, changed_by, approved_by, reason,
       count(*) OVER (PARTITION BY name, alias) AS changes_so_far
FROM changes
WHERE name GLOB $name
QUALIFY row_number() OVER (PARTITION BY name, alias ORDER BY seq DESC) = 1
ORDER BY name, alias;
