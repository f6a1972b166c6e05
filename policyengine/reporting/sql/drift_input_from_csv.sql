-- drift_input_from_csv: append one column of the loaded CSV (csv_raw) as one side.
-- Empty cells are left out: shares are over the rows that have a value.
-- Parameters: side, column.
INSERT INTO drift_input (side, line, num, cat)
SELECT $side, line, TRY_CAST(v AS DOUBLE), v
FROM (SELECT rowid + 2 AS line, trim(struct_extract(csv_raw, $column)) AS v FROM csv_raw)
WHERE v IS NOT NULL AND v <> '';
