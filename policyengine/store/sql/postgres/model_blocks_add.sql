-- model_blocks_add: suspend a model (a second breach while blocked adds history only).
INSERT INTO model_blocks (model, rule, reason, blocked_at) VALUES (%(model)s, %(rule)s, %(reason)s, %(at)s);
