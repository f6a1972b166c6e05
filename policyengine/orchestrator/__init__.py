"""The lightweight orchestrator: governed workflows, durable runs and approvals."""
