-- bias_input_json_rename: the string rows of the texts bias_input_json_types.sql found take
-- their JSON literal as group ("1"); the rows of the other type keep the text (1).
UPDATE bias_input SET grp = to_json(grp)::VARCHAR
WHERE grp_type = 'VARCHAR'
  AND grp IN (SELECT grp FROM bias_input WHERE grp_type IS NOT NULL
              GROUP BY grp HAVING bool_or(grp_type = 'VARCHAR') AND bool_or(grp_type <> 'VARCHAR'));
