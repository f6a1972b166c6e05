-- bias_input_lookalikes: how many rows of bias_input have a group value that a number, a
-- boolean, an object or an array would also print as (json_extract_string gives 1 for both
-- 1 and "1", true for both true and "true"): then the group values' JSON types are read
-- (bias_input_from_audit_typed.sql), since a type is part of the value.
SELECT count(*) FROM bias_input WHERE regexp_matches(grp, '^(?:[-0-9{\[]|true$|false$)');
