-- drift_input_create: the one input shape every drift metric reads.
-- side: 'reference' or 'current'; num: the value as a number (NULL when it is
-- not one); cat: the value as text; line: CSV line or audit seq, for messages;
-- ts: when it was recorded (audit log only), for PSI over time.
CREATE OR REPLACE TEMP TABLE drift_input (
    side VARCHAR,
    line BIGINT,
    num  DOUBLE,
    cat  VARCHAR,
    ts   TIMESTAMPTZ
);
