-- context_rule: one named declaration of the policy and its kind.
INSERT INTO policy_rules VALUES ($rule_id, $kind, $file, $line);
