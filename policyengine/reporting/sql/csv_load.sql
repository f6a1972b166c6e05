-- csv_load: read one CSV file with every cell as text into the temp table csv_raw.
-- Typing is decided afterwards per column (csv_profile.sql) so that a column that
-- mixes numbers and text is reported with its first offending line instead of
-- being silently read as text. rowid + 2 is the line number (line 1 is the header).
CREATE OR REPLACE TEMP TABLE csv_raw AS
SELECT * FROM read_csv($path, header = true, all_varchar = true, auto_detect = true);
