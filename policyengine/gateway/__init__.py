"""The governed OpenAI-compatible LLM gateway (``policyengine gateway``); see docs/gateway.md."""
