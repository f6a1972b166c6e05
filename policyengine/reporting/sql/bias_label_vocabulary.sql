-- bias_label_vocabulary: whether the payload "label" speaks the language of "outcome".
-- Equalized odds needs ground truth on the outcome (was auto_resolved right?); a
-- label that is a class name of the model's own task ("duplicate") never equals
-- an outcome, and must not be read as "never positive". Reads bias_input.
SELECT
    count(label_value)                                                                  AS labelled,
    count(*) FILTER (WHERE label_value IN (SELECT DISTINCT outcome_value FROM bias_input)) AS outcome_labels,
    string_agg(DISTINCT label_value, ', ' ORDER BY label_value)                         AS label_values
FROM bias_input;
