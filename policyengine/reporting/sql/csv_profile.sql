-- csv_profile: how many cells of one column are filled, how many of those are
-- numbers, and the first empty cell and first non-number (by line) for messages.
WITH cells AS (
    SELECT rowid + 2 AS line, trim(struct_extract(csv_raw, $column)) AS v
    FROM csv_raw
)
SELECT
    count(*) FILTER (WHERE v IS NOT NULL AND v <> '')                                   AS filled,
    count(*) FILTER (WHERE TRY_CAST(v AS DOUBLE) IS NOT NULL)                           AS numeric,
    count(*) FILTER (WHERE v IS NULL OR v = '')                                         AS empty,
    min(line) FILTER (WHERE v IS NULL OR v = '')                                        AS first_empty_line,
    arg_min(v, line) FILTER (WHERE v <> '' AND TRY_CAST(v AS DOUBLE) IS NULL)           AS first_text,
    min(line) FILTER (WHERE v <> '' AND TRY_CAST(v AS DOUBLE) IS NULL)                  AS first_text_line
FROM cells;
