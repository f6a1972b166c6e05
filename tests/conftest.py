"""Shared test fixtures: the throwaway PostgreSQL and Redis servers live in tests/services.py."""

pytest_plugins = ["services"]
