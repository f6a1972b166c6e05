-- sample_audit_log_create: the part of the audit log the monitor reads, for a
-- monitor case's sample model calls (an in-memory database, one per case).
-- Same column names and types as audit_log in policyengine/audit/audit.sql.
CREATE OR REPLACE TABLE audit_log (
    seq     BIGINT NOT NULL,
    ts      TIMESTAMPTZ NOT NULL,
    event   VARCHAR NOT NULL,
    payload JSON NOT NULL
);
