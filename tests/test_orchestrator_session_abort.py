"""A Session that fails after building its audit writer releases it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from policyengine.orchestrator.session import Session, SessionConfig, SessionError


def test_a_failed_session_releases_the_audit_writer(tmp_path: Path) -> None:
    db = tmp_path / "p.duckdb"
    key = tmp_path / "p.key"
    before = set(threading.enumerate())  # other tests may have left writers of their own
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [this is: not: valid\n", encoding="utf-8")
    with pytest.raises(SessionError):
        with Session(SessionConfig(db=db, key=key, rules=[bad], create_key=True)):
            pass
    assert not [t for t in set(threading.enumerate()) - before if t.name == "audit-flush"]
    with Session(SessionConfig(db=db, key=key, create_key=True)) as s:
        s.record_policy_loaded("test")
    assert not [t for t in set(threading.enumerate()) - before if t.name == "audit-flush"]
