"""``open_store``: one value picks the engine; state that cannot be opened is one line, never a traceback."""

from __future__ import annotations

import pytest

from policyengine.store import ApprovalQueue, BudgetLedger, RunStore, StoreError, open_store
from policyengine.store.blocklist import EmbeddedBlockList
from policyengine.store.directory import FileDirectory
from policyengine.store.protocols import BlockList, Directory


@pytest.mark.parametrize(("state", "message"), [
    ("mysql://db/x", "unknown kind of state"),
    ("{tmp}", "is a directory, not a DuckDB database file"),
    ("{tmp}/text.duckdb", "not a DuckDB database file"),
    ("postgresql://app:s3cret@127.0.0.1:1/none", "cannot connect to PostgreSQL"),
])
def test_state_that_cannot_be_opened(tmp_path, state, message):
    (tmp_path / "text.duckdb").write_text("not a database\n" * 100)
    with pytest.raises(StoreError) as error:
        open_store(state.format(tmp=tmp_path))
    assert message in str(error.value)
    assert "s3cret" not in str(error.value)  # the password is never echoed
    assert "\n" not in str(error.value)


def test_the_embedded_store_implements_every_protocol(tmp_path):
    with open_store(str(tmp_path / "state.duckdb")) as store:
        assert store.kind == "embedded"
        assert isinstance(store.ledger, BudgetLedger)
        assert isinstance(store.runs, RunStore)
        assert isinstance(store.approvals, ApprovalQueue)
    import duckdb
    con = duckdb.connect()
    assert isinstance(EmbeddedBlockList(con), BlockList) and EmbeddedBlockList(con).blocked() == frozenset()
    users = tmp_path / "users.yaml"
    users.write_text("users:\n  alice: {roles: [analyst]}\n")
    assert isinstance(FileDirectory.load(users), Directory)
    assert dict(FileDirectory.load(users).roles()) == {"alice": ("analyst",)}


@pytest.mark.postgres
def test_the_postgres_store_implements_every_protocol(postgres_url):
    with open_store(postgres_url) as store:
        assert store.kind == "postgresql"
        assert isinstance(store.ledger, BudgetLedger)
        assert isinstance(store.runs, RunStore)
        assert isinstance(store.approvals, ApprovalQueue)
