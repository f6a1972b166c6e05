-- bias_input_create: the one input shape every bias metric reads.
-- grp: the protected group; pred: the decision was the positive outcome;
-- label: ground truth was the positive outcome (NULL when unknown);
-- line: where the row came from (CSV line or audit seq), for error messages;
-- outcome_value / label_value: the raw strings (audit log only), to check that
-- labels speak the language of outcomes (bias_label_vocabulary.sql).
CREATE OR REPLACE TEMP TABLE bias_input (
    line          BIGINT,
    grp           VARCHAR,
    pred          BOOLEAN,
    label         BOOLEAN,
    outcome_value VARCHAR,
    label_value   VARCHAR
);
