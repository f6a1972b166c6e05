"""The block list and the user directory behind the store seam: one suite, the embedded and PostgreSQL stores."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from policyengine.store import StoreError, open_store
from policyengine.store.blocklist import LiveBlockList
from policyengine.store.directory import FileDirectory
from policyengine.store.protocols import BlockList, Directory

T0 = datetime(2026, 11, 24, 9, tzinfo=UTC)
T1 = datetime(2026, 11, 24, 10, tzinfo=UTC)


@pytest.fixture(params=["embedded", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    url = str(tmp_path / "state.duckdb") if request.param == "embedded" else request.getfixturevalue("postgres_url")
    with open_store(url) as s:
        yield s


def test_blocks_are_kept_as_history_and_lifted_once(store):
    blocks = store.blocks
    assert isinstance(blocks, BlockList)
    assert blocks.blocked() == frozenset() and blocks.active() == [] and blocks.lift("m", at=T0, by="x", note=None) == 0
    blocks.block("scorer", "bias.parity", "disparate_impact 0.62 breaches >= 0.8", T0)
    blocks.block("scorer", "drift.psi", "psi 0.4 breaches <= 0.2", T1)  # a second breach while blocked
    blocks.block("writer", "drift.psi", "psi 0.5 breaches <= 0.2", T1)
    assert blocks.blocked() == {"scorer", "writer"}
    (model, rule, reason, at), _ = blocks.active()
    assert (model, rule, reason) == ("scorer", "bias.parity", "disparate_impact 0.62 breaches >= 0.8")
    assert at.astimezone(UTC) == T0  # the first open block names the rule
    assert blocks.lift("scorer", at=T1, by="alice", note="retrained") == 2
    assert blocks.lift("scorer", at=T1, by="bob", note=None) == 0  # already lifted: a second lift lifts nothing
    assert blocks.blocked() == {"writer"}


def test_a_live_block_list_sees_blocks_added_elsewhere_after_max_age(store):
    now = [0.0]
    live = LiveBlockList(store.blocks, max_age=1.0, clock=lambda: now[0])
    assert "scorer" not in live
    store.blocks.block("scorer", "bias.parity", "breach", T0)
    assert "scorer" not in live  # read at most once a second
    now[0] = 1.0
    assert "scorer" in live and list(live) == ["scorer"] and len(live) == 1
    store.blocks.lift("scorer", at=T1, by="alice", note=None)
    now[0] = 2.5
    assert "scorer" not in live


def test_a_live_block_list_keeps_the_last_list_when_a_re_read_fails():
    class Flaky:
        def __init__(self) -> None:
            self.fail = False

        def blocked(self) -> frozenset[str]:
            if self.fail:
                raise StoreError("postgresql://x@db/pe: cannot connect to PostgreSQL")
            return frozenset({"scorer"})

    source, now = Flaky(), [0.0]
    live = LiveBlockList(source, max_age=1.0, clock=lambda: now[0])
    source.fail, now[0] = True, 5.0
    assert "scorer" in live  # still blocked: a failed read never unblocks


# How the shared table stops being readable, and puts back what it changed.
UNREADABLE = {
    "table renamed": ("ALTER TABLE model_blocks RENAME TO model_blocks_away",
                      "ALTER TABLE model_blocks_away RENAME TO model_blocks"),
    "column renamed": ("ALTER TABLE model_blocks RENAME COLUMN unblocked_at TO lifted_at",
                       "ALTER TABLE model_blocks RENAME COLUMN lifted_at TO unblocked_at"),
}


def asked(live: LiveBlockList, model: str) -> str:
    """What a decision about ``model`` learns from the block list: blocked, allowed or refused (it raised)."""
    try:
        return "blocked" if model in live else "allowed"
    except Exception:  # noqa: BLE001 - the engine denies on any error here (internal error while deciding)
        return "refused"


@pytest.mark.postgres
@pytest.mark.parametrize("how", UNREADABLE, ids=list(UNREADABLE))
def test_a_live_block_list_that_cannot_be_read_refuses_once_stale(postgres_url, how):
    """A block a monitor adds while this server cannot read the shared list must not be missed for long.

    Before, a failed re-read (psycopg's error, not a StoreError) failed the one decision that re-read, and the
    decisions of the next second used the last list read: a model blocked meanwhile was allowed for as long as
    the list could not be read. Now, past ``stale_after`` (10 s) with no good read, every question is refused.
    """
    import psycopg

    break_it, mend_it = UNREADABLE[how]
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        with open_store(postgres_url) as monitor_side:  # creates the tables
            with open_store(postgres_url) as server_side:  # another worker's pool
                now = [0.0]
                live = LiveBlockList(server_side.blocks, max_age=1.0, clock=lambda: now[0])
                assert asked(live, "scorer") == "allowed"
                admin.execute(break_it)
                table = "model_blocks_away" if how == "table renamed" else "model_blocks"
                admin.execute(f"INSERT INTO {table} (model, rule, reason, blocked_at) "  # noqa: S608 - test SQL
                              "VALUES ('scorer', 'drift.psi', 'psi 0.4 breaches < 0.2', now())")
                now[0] = 0.5
                assert asked(live, "scorer") == "allowed"  # the list read half a second ago
                seen = []
                for t in (10.5, 10.6, 11.0, 11.2, 11.6, 30.0):  # re-reads fail; in between the list is 10 s old
                    now[0] = t
                    seen.append((t, asked(live, "scorer"), asked(live, "writer")))
                assert seen == [(t, "refused", "refused") for t, _, _ in seen]
                with pytest.raises(StoreError, match=r"has not been read for \d+ s"):
                    "scorer" in live  # noqa: B015 - the question itself fails, naming why
                admin.execute(mend_it)
                now[0] = 31.5
                assert asked(live, "scorer") == "blocked"  # read again: the block made meanwhile is seen
                assert asked(live, "writer") == "allowed"
            monitor_side.blocks.lift("scorer", at=T1, by="alice", note=None)


@pytest.mark.postgres
def test_the_postgres_directory_is_replaced_whole_from_a_file(postgres_url, tmp_path):
    users = tmp_path / "users.yaml"
    users.write_text("users:\n  Alice: {name: Alice, roles: [analyst, approver]}\n  bob: {roles: [analyst]}\n")
    file_directory = FileDirectory.load(users)
    with open_store(postgres_url) as store:
        assert isinstance(store.directory, Directory) and store.directory.roles() == {}
        rows = [(u.id, u.name, u.roles) for u in file_directory.users.values()]
        assert store.directory.replace(rows) == 2
        assert store.directory.roles() == dict(file_directory.roles())  # {"alice": (...), "bob": (...)}
        assert store.directory.replace(rows[1:]) == 1
    with open_store(postgres_url) as other:  # another worker reads the same directory
        assert other.directory.roles() == {"bob": ("analyst",)}
