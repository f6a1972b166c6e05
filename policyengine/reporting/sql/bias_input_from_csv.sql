-- bias_input_from_csv: fill bias_input from the loaded CSV (csv_raw).
-- Parameters: group, outcome, label (column names; label may repeat outcome when
-- has_label is false), positive (outcome value that counts as selected),
-- label_positive (label value that counts as a true positive), has_label.
INSERT INTO bias_input (line, grp, pred, label)
SELECT
    rowid + 2,
    trim(struct_extract(csv_raw, $group)),
    trim(struct_extract(csv_raw, $outcome)) = $positive,
    CASE WHEN $has_label THEN trim(struct_extract(csv_raw, $label)) = $label_positive END
FROM csv_raw;
