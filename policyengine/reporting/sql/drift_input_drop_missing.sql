-- drift_input_drop_missing: model calls with no value at the path (absent, null or '') are not
-- compared; remove them and return the side of each (the caller reports how many per window).
DELETE FROM drift_input WHERE num IS NULL AND (cat IS NULL OR cat = '') RETURNING side;
