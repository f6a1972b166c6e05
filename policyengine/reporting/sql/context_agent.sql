-- context_agent: one declared agent and its accountable owner.
INSERT INTO policy_agents VALUES ($agent, $owner);
