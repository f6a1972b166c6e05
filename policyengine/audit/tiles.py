"""The log as static C2SP tlog-tiles, for monitors that read it incrementally (``audit export --tiles DIR``).

Layout (c2sp.org/tlog-tiles): ``checkpoint`` (the latest checkpoint as a
signed note); ``tile/<L>/<N>`` holding 256 hashes of 32 bytes, the level-8L
nodes (complete subtree roots) 256N..256N+255; a partial rightmost tile is
``tile/<L>/<N>.p/<W>`` with its W hashes; ``tile/entries/<N>[.p/<W>]`` holds
the records themselves, each as a big-endian 16-bit length and the record's
canonical bytes (whose SHA-256 after 0x00 is the level-0 hash). N is written in
groups of three digits, all but the last prefixed with ``x`` (1234067 is
``x001/x234/067``). Full tiles never change, so a monitor fetches each once.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import duckdb

from .errors import AuditError
from .export import open_readonly
from .keys import PublicKey, _write_new
from .log import leaf_bytes
from .merkle import leaf_hash
from .sql import q

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT


def tile_index(n: int) -> str:
    """``N`` as a tile path: three-digit groups, every group but the last prefixed with ``x``."""
    groups = []
    while True:
        n, rest = divmod(n, 1000)
        groups.append(f"{rest:03d}")
        if n == 0:
            break
    groups.reverse()
    return "/".join([*(f"x{g}" for g in groups[:-1]), groups[-1]])


def tile_path(level: int | str, n: int, width: int) -> str:
    suffix = "" if width == TILE_WIDTH else f".p/{width}"
    return f"tile/{level}/{tile_index(n)}{suffix}"


def export_tiles(db: str | os.PathLike[str], out: str | os.PathLike[str], public: PublicKey) -> int:
    """Write the log up to its latest checkpoint as tiles under ``out``; returns the tree size."""
    from .notes import signed_note
    from .proofs import _tree, latest_signed

    with open_readonly(db) as con:
        checkpoint = latest_signed(con, db, "; nothing to serve")
        tree = _tree(con, db, checkpoint)
        entries = _entries(con, db, checkpoint.tree_size)
    note = signed_note(checkpoint, public)
    root = Path(out)
    size = checkpoint.tree_size
    try:
        level = 0
        while size >> (TILE_HEIGHT * level):
            nodes = tree._levels[TILE_HEIGHT * level][: size >> (TILE_HEIGHT * level)]
            for start in range(0, len(nodes), TILE_WIDTH):
                chunk = nodes[start:start + TILE_WIDTH]
                _write(root / tile_path(level, start // TILE_WIDTH, len(chunk)), b"".join(chunk))
            level += 1
        for start in range(0, size, TILE_WIDTH):
            chunk = entries[start:start + TILE_WIDTH]
            _write(root / tile_path("entries", start // TILE_WIDTH, len(chunk)),
                   b"".join(struct.pack(">H", len(e)) + e for e in chunk))
        _write(root / "checkpoint", note.encode("utf-8"))
    except OSError as err:
        raise AuditError(f"{out}: cannot write tiles ({err.strerror or err})") from None
    return size


def _entries(con: duckdb.DuckDBPyConnection, db: str | os.PathLike[str], size: int) -> list[bytes]:
    """Each record's canonical bytes, checked against its stored leaf hash."""
    out: list[bytes] = []
    result = con.execute(q("all_records"))
    while len(out) < size:
        rows = result.fetchmany(10_000)
        if not rows:
            break
        for seq, ts, origin, event, actor, workflow, run_id, payload, policy_hash, key_id, stored in rows:
            if len(out) == size:
                break
            data = leaf_bytes(seq=seq, ts=ts, origin=origin, event=event, actor=actor, workflow=workflow,
                              run_id=run_id, payload=payload, policy_hash=policy_hash, key_id=key_id)
            if leaf_hash(data).hex() != stored:
                raise AuditError(f"{db}: record {seq} does not match its leaf hash; run `policyengine audit verify`")
            if len(data) > 0xFFFF:
                raise AuditError(f"{db}: record {seq} is {len(data)} bytes, more than a tile entry holds (65,535)")
            out.append(data)
    return out


def _write(path: Path, data: bytes) -> None:
    """Write a tile whole, then rename it into place: readers never see half a tile. The temp file is new
    (O_EXCL, no symlink followed): a link planted in the published folder never leads the write to the log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_new(path.parent, path.name, data, 0o644)
    try:
        os.chmod(tmp, 0o644)  # served to monitors: readable whatever the umask
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
