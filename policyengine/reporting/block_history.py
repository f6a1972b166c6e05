"""The history of model blocks as the signed audit log tells it, and where the block list says otherwise.

The engine denies what the block list holds (``model_blocks``, owned by
``policyengine.store.blocklist``), but that table is not signed: anyone who can
write the database can add or lift a block there without a trace in the log.
The report ``model_blocks`` therefore reads the signed ``alert`` records that
blocked a model and the ``model_unblocked`` records that lifted it
(``sql/model_blocks_signed.sql``), and names in a note every model whose block
list disagrees with them, rather than print either one as the truth.
"""

from __future__ import annotations

import duckdb

from .db import sql


def create_signed_view(con: duckdb.DuckDBPyConnection) -> None:
    """The temp view ``signed_model_blocks`` over ``audit_log`` (which ``con`` must hold)."""
    con.execute(sql("model_blocks_signed"))


def _count(n: int, open_: int) -> str:
    return f"{n} block(s), {open_} open" if n else "no block"


def block_list_notes(con: duckdb.DuckDBPyConnection, *, listed: bool) -> tuple[str, ...]:
    """Notes naming the models whose block list and signed events differ (none when they agree).

    ``listed`` says whether the database read has a block list at all: a block list shared
    through ``--state`` lives in that store, and a folder of databases is read for its audit
    tables only, so there is then nothing to compare with, which is said instead.
    """
    if not listed:
        models = [r[0] for r in con.execute(
            "SELECT DISTINCT model FROM signed_model_blocks ORDER BY model").fetchall()]
        if not models:
            return ()
        note = (f"the signed log blocked {', '.join(map(str, models))}, but the database read has no block "
                "list (model_blocks) to compare with: a block list shared with --state lives in that store, "
                "and a folder of databases is read for its audit tables only")
        return (note,)
    differ = con.execute(sql("model_blocks_compare")).fetchall()
    if not differ:
        return ()
    models = ", ".join(dict.fromkeys(str(r[0]) for r in differ))
    notes = [(f"the block list (model_blocks: not signed, and what the engine denies) disagrees with the signed "
              f"alert and model_unblocked records for {models}; the rows are the signed records")]
    for model, rule, listed_n, listed_open, signed_n, signed_open in differ:
        notes.append(f"{model} ({rule}): the block list has {_count(listed_n, listed_open)}, "
                     f"the signed log {_count(signed_n, signed_open)}")
    return tuple(notes)
