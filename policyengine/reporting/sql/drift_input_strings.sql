-- drift_input_strings: the values of a numeric comparison that are JSON strings (cat_type VARCHAR: "1", "2.5"),
-- which read as numbers but are not; the caller leaves them out of the numbers and says so. Per window: how many
-- strings and how many numbers are left; and up to four of the strings as JSON literals, most frequent first.
SELECT count(*) FILTER (WHERE side = 'reference' AND cat_type = 'VARCHAR'),
       count(*) FILTER (WHERE side = 'current' AND cat_type = 'VARCHAR'),
       count(*) FILTER (WHERE side = 'reference' AND cat_type IS DISTINCT FROM 'VARCHAR'),
       count(*) FILTER (WHERE side = 'current' AND cat_type IS DISTINCT FROM 'VARCHAR'),
       (SELECT list(to_json(cat)::VARCHAR ORDER BY n DESC, cat)[1:4]
        FROM (SELECT cat, count(*) AS n FROM drift_input WHERE cat_type = 'VARCHAR' GROUP BY cat))
FROM drift_input;
