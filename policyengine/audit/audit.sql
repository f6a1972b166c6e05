-- Queries of the audit trail, by name. Loaded by policyengine/audit/sql.py;
-- every value is a bound parameter.

-- name: create_schema
-- One log (origin) per database file. payload holds RFC 8785 canonical JSON text.
CREATE TABLE IF NOT EXISTS audit_meta (
    origin      VARCHAR NOT NULL,      -- the log's name, signed in every checkpoint
    format      INTEGER NOT NULL,      -- leaf encoding version (1: docs/audit.md)
    created_at  TIMESTAMPTZ NOT NULL,
    first_key_id VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_log (
    seq         BIGINT NOT NULL,       -- 1, 2, 3, ... without gaps
    ts          TIMESTAMPTZ NOT NULL,  -- UTC, microseconds
    origin      VARCHAR NOT NULL,
    event       VARCHAR NOT NULL,      -- decision | model_call | tool_call | data_access | approval | alert | policy_loaded | key_rotated
    actor       VARCHAR,
    workflow    VARCHAR,
    run_id      VARCHAR,
    payload     JSON NOT NULL,
    policy_hash VARCHAR,
    key_id      VARCHAR NOT NULL,      -- the key whose checkpoint covers this record
    leaf_hash   VARCHAR NOT NULL       -- hex SHA-256(0x00 || canonical record), RFC 9162 leaf
);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    origin      VARCHAR NOT NULL,
    tree_size   BIGINT NOT NULL,
    root        VARCHAR NOT NULL,      -- hex RFC 9162 root of records 1..tree_size
    ts          TIMESTAMPTZ NOT NULL,
    key_id      VARCHAR NOT NULL,
    signature   VARCHAR NOT NULL       -- base64 Ed25519 over the checkpoint note
);

-- name: tables
SELECT table_name FROM duckdb_tables()
WHERE database_name = current_database() AND schema_name = 'main'
  AND table_name IN ('audit_meta', 'audit_log', 'audit_checkpoints');

-- name: audit_columns
-- The audit tables' columns as the file declares them (verify compares them with create_schema's).
SELECT table_name, column_name, data_type, is_nullable
FROM duckdb_columns()
WHERE database_name = current_database() AND schema_name = 'main'
  AND table_name IN ('audit_meta', 'audit_log', 'audit_checkpoints')
ORDER BY table_name, column_index;

-- name: audit_table_sql
-- How the file declares the audit tables (verify looks for what duckdb_columns() does not show: COLLATE).
SELECT table_name, sql FROM duckdb_tables()
WHERE database_name = current_database() AND schema_name = 'main'
  AND table_name IN ('audit_meta', 'audit_log', 'audit_checkpoints', 'audit_facts')
ORDER BY table_name;

-- name: meta_rows
SELECT count(*), min(format), max(format) FROM audit_meta;

-- name: database_path
SELECT path FROM duckdb_databases() WHERE database_name = current_database();

-- name: read_meta
SELECT origin, format, first_key_id FROM audit_meta LIMIT 1;

-- name: insert_meta
INSERT INTO audit_meta VALUES ($origin, 1, now(), $key_id);

-- name: log_state
SELECT count(*), coalesce(max(seq), 0) FROM audit_log;

-- name: segment_state
-- a segment's records and its youngest record's time (max, not the last record's: a clock may step back)
SELECT count(*), strftime(timezone('UTC', max(ts)), '%Y-%m-%dT%H:%M:%S.%fZ') FROM audit_log;

-- name: last_record_key
SELECT key_id, event, payload::VARCHAR FROM audit_log ORDER BY seq DESC LIMIT 1;

-- name: leaf_hashes
SELECT leaf_hash FROM audit_log ORDER BY seq;

-- name: leaf_hashes_upto
SELECT leaf_hash FROM audit_log WHERE seq <= $size ORDER BY seq;

-- name: checkpoints
SELECT origin, tree_size, root,
       strftime(timezone('UTC', ts), '%Y-%m-%dT%H:%M:%S.%fZ') AS ts, key_id, signature
FROM audit_checkpoints ORDER BY tree_size, ts;

-- name: latest_checkpoint
SELECT origin, tree_size, root,
       strftime(timezone('UTC', ts), '%Y-%m-%dT%H:%M:%S.%fZ') AS ts, key_id, signature
FROM audit_checkpoints ORDER BY tree_size DESC, ts DESC LIMIT 1;

-- name: insert_batch
-- One batch of records, registered by the writer as the Arrow table audit_batch (columns by name).
INSERT INTO audit_log BY NAME SELECT * FROM audit_batch;

-- name: log_columns
-- audit_log's columns in table order (the writer inserts big batches by position when they match).
SELECT column_name FROM duckdb_columns()
WHERE database_name = current_database() AND schema_name = 'main' AND table_name = 'audit_log'
ORDER BY column_index;

-- name: insert_checkpoint
INSERT INTO audit_checkpoints VALUES ($origin, $tree_size, $root, $ts::TIMESTAMPTZ, $key_id, $signature);

-- name: sequence_breaks
-- The first position where seq is not 1, 2, 3, ...: a gap (deleted) or a repeat.
SELECT seq, pos, prev FROM (
    SELECT seq, row_number() OVER (ORDER BY seq) AS pos, lag(seq) OVER (ORDER BY seq) AS prev
    FROM audit_log
) WHERE seq <> pos ORDER BY pos LIMIT 1;

-- name: all_records
-- Every record, in seq order, for verify to re-hash in Python (the writer's own canonicaliser).
SELECT seq, strftime(timezone('UTC', ts), '%Y-%m-%dT%H:%M:%S.%fZ') AS ts, origin, event, actor,
       workflow, run_id, payload::VARCHAR AS payload, policy_hash, key_id, leaf_hash
FROM audit_log ORDER BY seq;

-- name: record_columns
SELECT seq, strftime(timezone('UTC', ts), '%Y-%m-%dT%H:%M:%S.%fZ') AS ts, origin, event, actor,
       workflow, run_id, payload::VARCHAR AS payload, policy_hash, key_id, leaf_hash
FROM audit_log WHERE seq = ANY($seqs) ORDER BY seq;

-- name: records_from
SELECT seq, strftime(timezone('UTC', ts), '%Y-%m-%dT%H:%M:%S.%fZ') AS ts, origin, event, actor,
       workflow, run_id, payload::VARCHAR AS payload, policy_hash, key_id, leaf_hash
FROM audit_log WHERE seq >= $first ORDER BY seq LIMIT $limit;

-- name: tail
SELECT seq, strftime(timezone('UTC', ts), '%Y-%m-%dT%H:%M:%S.%fZ') AS ts, origin, event, actor,
       workflow, run_id, payload::VARCHAR AS payload, policy_hash, key_id, leaf_hash
FROM (SELECT * FROM audit_log ORDER BY seq DESC LIMIT $limit) ORDER BY seq;

-- name: keys_at
SELECT seq, key_id FROM audit_log WHERE seq = ANY($seqs);

-- name: rotations
SELECT seq, key_id, payload::VARCHAR FROM audit_log WHERE event = 'key_rotated' ORDER BY seq;

-- name: record_keys
SELECT key_id, count(*) FROM audit_log GROUP BY key_id ORDER BY min(seq);

-- name: attach_snapshot
ATTACH $path AS audit_snapshot;

-- name: copy_to_snapshot
-- A consistent copy of the audit tables and audit_facts (one transaction), for readers while the writer runs.
BEGIN TRANSACTION;
CREATE TABLE audit_snapshot.audit_meta AS SELECT * FROM audit_meta;
CREATE TABLE audit_snapshot.audit_log AS SELECT * FROM audit_log ORDER BY seq;
CREATE TABLE audit_snapshot.audit_checkpoints AS SELECT * FROM audit_checkpoints ORDER BY tree_size;
CREATE TABLE audit_snapshot.audit_facts AS SELECT * FROM audit_facts ORDER BY seq;
COMMIT;

-- name: detach_snapshot
DETACH audit_snapshot;

-- name: export_parquet
COPY (SELECT * FROM audit_log ORDER BY seq) TO $out (FORMAT parquet, KV_METADATA {policyengine_audit: $meta});

-- name: import_meta
INSERT INTO audit_meta VALUES ($origin, $format, now(), $key_id);

-- name: parquet_meta
SELECT decode(key), decode(value) FROM parquet_kv_metadata($path);

-- name: parquet_schema
SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet($path));

-- name: import_parquet
-- By column name, never by position: a file with its columns renamed or reordered loads them where they say.
INSERT INTO audit_log BY NAME SELECT * FROM read_parquet($path);

-- audit_facts (policyengine/audit/facts.py): the payload values reports read, one VARCHAR column per
-- JSON path, computed from each model_call record's payload. {column}, {columns}, {values} and
-- {source} are quoted identifiers filled in by facts.py (identifiers cannot be bound parameters).

-- name: facts_table
SELECT count(*) FROM duckdb_tables()
WHERE database_name = current_database() AND schema_name = 'main' AND table_name = 'audit_facts';

-- name: facts_columns
SELECT column_name FROM duckdb_columns()
WHERE database_name = current_database() AND schema_name = 'main' AND table_name = 'audit_facts'
  AND column_name NOT IN ('seq', 'ts')
ORDER BY column_index;

-- name: facts_create
CREATE TABLE audit_facts (
    seq BIGINT NOT NULL,            -- the model_call record's seq in audit_log
    ts  TIMESTAMPTZ NOT NULL        -- its ts; then one VARCHAR column per payload path
);

-- name: facts_add_column
ALTER TABLE audit_facts ADD COLUMN {column} VARCHAR;

-- name: facts_structures
-- The distinct shapes of the model_call payloads (a few per batch), whose paths become columns.
SELECT DISTINCT json_structure(payload)::VARCHAR FROM {source} WHERE event = 'model_call';

-- name: facts_insert
-- Each value as the reports would read it from the payload: json_extract_string at that path.
INSERT INTO audit_facts (seq, ts, {columns})
SELECT seq, ts, {values}
FROM (SELECT seq, ts, json_extract_string(payload, $paths) AS v FROM {source} WHERE event = 'model_call')
ORDER BY seq;

-- name: facts_insert_values
-- facts_insert for a small batch whose model_call records come as lists of values (same expressions).
INSERT INTO audit_facts (seq, ts, {columns})
SELECT seq, ts, {values}
FROM (SELECT seq, ts::TIMESTAMPTZ AS ts, json_extract_string(payload, $paths) AS v
      FROM (SELECT unnest($seqs::BIGINT[]) AS seq, unnest($tss::VARCHAR[]) AS ts, unnest($payloads::VARCHAR[]) AS payload))
ORDER BY seq;

-- name: facts_mismatch
-- The first model_call record whose facts row is missing, repeated or differs from its payload,
-- or a facts row without a model_call record.
SELECT coalesce(l.seq, f.seq) FROM
    (SELECT seq, ts, json_extract_string(payload, $paths) AS v FROM audit_log WHERE event = 'model_call') AS l
    FULL OUTER JOIN
    (SELECT seq, ts, [{columns}] AS v, count(*) OVER (PARTITION BY seq) AS n FROM audit_facts) AS f
    ON l.seq = f.seq
WHERE (l.seq IS NULL OR f.seq IS NULL OR f.n > 1 OR l.ts IS DISTINCT FROM f.ts OR l.v IS DISTINCT FROM f.v)
  -- records past the last facts row are not written yet (facts_behind), not changed
  AND NOT (f.seq IS NULL AND l.seq > (SELECT coalesce(max(seq), 0) FROM audit_facts))
ORDER BY 1 LIMIT 1;

-- name: facts_behind
-- The model_call records past the last facts row: a server writes their facts just after answering,
-- so a crash in between leaves a few; the next writer fills them in, and reports read their payloads.
SELECT count(*), coalesce((SELECT max(seq) FROM audit_facts), 0) AS high
FROM audit_log WHERE event = 'model_call' AND seq > (SELECT coalesce(max(seq), 0) FROM audit_facts);

-- name: pruned_segments
-- The segments_pruned records of a folder's prune log (audit/segments.py).
SELECT payload::VARCHAR FROM audit_log WHERE event = 'segments_pruned' ORDER BY seq;
