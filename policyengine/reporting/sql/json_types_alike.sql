-- json_types_alike: the values of {table} printed alike by a string and by a value of another
-- JSON type (1 and "1", true and "true", {"a":1} and '{"a":1}'): each text, the non-string
-- types it stands for, and how the string is shown apart (as its JSON literal, "1").
-- {value} is the value column (grp, cat), {value_type} its json_type (grp_type, cat_type).
SELECT {value},
       list(DISTINCT {value_type} ORDER BY {value_type}) FILTER (WHERE {value_type} <> 'VARCHAR') AS other_types,
       to_json({value})::VARCHAR                                                                 AS shown
FROM {table}
WHERE {value_type} IS NOT NULL
GROUP BY {value}
HAVING bool_or({value_type} = 'VARCHAR') AND bool_or({value_type} <> 'VARCHAR')
ORDER BY {value};
