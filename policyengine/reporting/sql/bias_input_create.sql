-- bias_input_create: the one input shape every bias metric reads.
-- grp: the protected group; pred: the decision was the positive outcome;
-- label: ground truth was the positive outcome (NULL when unknown);
-- line: where the row came from (CSV line or audit seq), for error messages;
-- outcome_value / label_value: the raw strings (audit log only), to check that
-- labels speak the language of outcomes (bias_label_vocabulary.sql);
-- grp_type: the JSON type of the group value (json_type: VARCHAR for a string), read
-- only when a group could be a number, boolean, object or array
-- (bias_input_from_audit_typed.sql), else NULL.
CREATE OR REPLACE TEMP TABLE bias_input (
    line          BIGINT,
    grp           VARCHAR,
    grp_type      VARCHAR,
    pred          BOOLEAN,
    label         BOOLEAN,
    outcome_value VARCHAR,
    label_value   VARCHAR
);
