-- drift_input_from_csv: append one column of the loaded CSV (csv_raw) as one side.
-- Empty cells (nothing but spaces) are left out: shares are over the rows that have a value.
-- Compared as numbers ($numbers), a cell counts as one only when it is written as a plain decimal
-- number: an optional sign, digits with an optional point (12, -3.5, +1, .5, 1.), an optional
-- exponent (1e3), nothing around it, and finite. DuckDB's cast also reads nan, inf, Infinity,
-- " 1" and 1_000, and 1e999 as inf: such a cell is kept as it is written (cat) and marked
-- cat_type VARCHAR, a string in JSON terms, for leave_out_non_numbers (drift_input_strings.sql)
-- to leave out and count. As categories, every cell is its text, trimmed.
-- Parameters: side, column, numbers.
INSERT INTO drift_input (side, line, num, cat, cat_type)
SELECT $side, line, num,
       CASE WHEN no_number THEN raw ELSE trim(raw) END,
       CASE WHEN no_number THEN 'VARCHAR' END
FROM (
    SELECT line, raw, num,
           $numbers AND NOT coalesce(isfinite(num)
               AND regexp_full_match(raw, '[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?'), false) AS no_number
    FROM (SELECT rowid + 2 AS line, struct_extract(csv_raw, $column) AS raw,
                 TRY_CAST(struct_extract(csv_raw, $column) AS DOUBLE) AS num
          FROM csv_raw)
    WHERE raw IS NOT NULL AND trim(raw) <> ''
);
