-- Record tool side effects; an effect already recorded under the key is kept.
INSERT OR IGNORE INTO orch_effects SELECT * FROM _pe_effects
