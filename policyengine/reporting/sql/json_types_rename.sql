-- json_types_rename: the string rows of the texts json_types_alike.sql found take their JSON
-- literal as value ("1"); the rows of the other type keep the text (1).
-- {table}, {value} and {value_type} as in json_types_alike.sql.
UPDATE {table} SET {value} = to_json({value})::VARCHAR
WHERE {value_type} = 'VARCHAR'
  AND {value} IN (SELECT {value} FROM {table} WHERE {value_type} IS NOT NULL
                  GROUP BY {value} HAVING bool_or({value_type} = 'VARCHAR') AND bool_or({value_type} <> 'VARCHAR'));
