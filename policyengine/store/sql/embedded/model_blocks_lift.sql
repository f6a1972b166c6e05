-- model_blocks_lift: lift every open block of one model; returns how many were open.
UPDATE model_blocks SET unblocked_at = $at, unblocked_by = $by, note = $note
WHERE model = $model AND unblocked_at IS NULL;
