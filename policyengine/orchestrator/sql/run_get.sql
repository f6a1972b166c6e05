-- One run by id, or by a unique id prefix.
SELECT * FROM orch_runs WHERE run_id = $run_id OR starts_with(run_id, $run_id) ORDER BY run_id = $run_id DESC LIMIT 2
