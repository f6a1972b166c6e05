-- model_blocks_lift: lift every open block of one model; one row per block lifted.
UPDATE model_blocks SET unblocked_at = %(at)s, unblocked_by = %(by)s, note = %(note)s
WHERE model = %(model)s AND unblocked_at IS NULL
RETURNING model;
