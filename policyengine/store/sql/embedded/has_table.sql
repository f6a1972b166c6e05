-- has_table: how many tables or views of this name are visible (any schema).
SELECT (SELECT count(*) FROM duckdb_tables() WHERE table_name = $name)
     + (SELECT count(*) FROM duckdb_views() WHERE view_name = $name AND NOT internal);
