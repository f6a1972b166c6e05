-- bias_input_json_types: the group values printed alike by a string and by a value of another
-- JSON type (1 and "1", true and "true", {"a":1} and '{"a":1}'): each text, the non-string
-- types it stands for, and how the string is shown apart (as its JSON literal, "1").
SELECT grp,
       list(DISTINCT grp_type ORDER BY grp_type) FILTER (WHERE grp_type <> 'VARCHAR') AS other_types,
       to_json(grp)::VARCHAR                                                             AS shown
FROM bias_input
WHERE grp_type IS NOT NULL
GROUP BY grp
HAVING bool_or(grp_type = 'VARCHAR') AND bool_or(grp_type <> 'VARCHAR')
ORDER BY grp;
