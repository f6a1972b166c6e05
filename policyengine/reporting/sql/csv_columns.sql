-- csv_columns: the header of the loaded CSV, in file order.
SELECT name FROM pragma_table_info('csv_raw') ORDER BY cid;
