-- bias_input_drop_missing: audit rows whose subject has no group value cannot be
-- judged; remove them (the caller reports how many there were).
DELETE FROM bias_input WHERE grp IS NULL OR grp = '';
