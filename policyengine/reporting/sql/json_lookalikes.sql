-- json_lookalikes: how many rows of {table} (bias_input or drift_input) have a value ({value}: a
-- group or a category) that a number, a boolean, an object or an array would also print as
-- (json_extract_string gives 1 for both 1 and "1", true for both true and "true"): then the
-- values' JSON types are read (*_from_audit_typed.sql), since a type is part of the value.
-- {table} and {value} are identifiers the caller names (they cannot be bound parameters).
SELECT count(*) FROM {table} WHERE regexp_matches({value}, '^(?:[-0-9{\[]|true$|false$)');
