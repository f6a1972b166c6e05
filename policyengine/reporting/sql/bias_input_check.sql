-- bias_input_check: the first row with an empty group, outcome or (when labels
-- are used) label, so offline input is rejected with a line number.
SELECT
    count(*) FILTER (WHERE grp IS NULL OR grp = '')        AS empty_groups,
    min(line) FILTER (WHERE grp IS NULL OR grp = '')       AS first_empty_group,
    count(*) FILTER (WHERE pred IS NULL)                   AS empty_outcomes,
    min(line) FILTER (WHERE pred IS NULL)                  AS first_empty_outcome,
    count(*) FILTER (WHERE $has_label AND label IS NULL)   AS empty_labels,
    min(line) FILTER (WHERE $has_label AND label IS NULL)  AS first_empty_label,
    count(*) FILTER (WHERE pred)                           AS selected,
    count(*)                                               AS total
FROM bias_input;
