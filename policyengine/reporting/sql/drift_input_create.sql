-- drift_input_create: the one input shape every drift metric reads.
-- side: 'reference' or 'current'; num: the value as a number (NULL when it is
-- not one); cat: the value as text; line: CSV line or audit seq, for messages;
-- ts: when it was recorded (audit log only), for PSI over time;
-- cat_type: the JSON type of the value (json_type: VARCHAR for a string), read only when
-- the values are compared as categories and some could be a number, boolean, object or
-- array, or compared as numbers and some is a string ("1": drift_facts_strings.sql,
-- drift_payload_strings.sql): drift_input_from_audit_typed.sql; from a CSV compared as numbers,
-- VARCHAR for a cell that reads as a number but is not written as one (nan, " 1":
-- drift_input_from_csv.sql); else NULL. VARCHAR rows are left out of the numbers with a note.
CREATE OR REPLACE TEMP TABLE drift_input (
    side VARCHAR,
    line BIGINT,
    num  DOUBLE,
    cat  VARCHAR,
    ts   TIMESTAMPTZ,
    cat_type VARCHAR
);
