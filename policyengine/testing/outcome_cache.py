"""Remember which policy test files passed, so ``check`` runs again only the tests whose inputs changed.

``check`` runs the policy tests found with the checked files; most runs change
nothing they depend on. A test file that passed is recorded with everything its
outcome depends on:

* the engine's own code (``resources.source_digest``) and the working folder
  (test files name their policy files relative to it);
* the test file's bytes;
* where its policy files come from (``policy:`` folders and files, or the folder
  beside it) and the files found there now, so an added or removed ``.policy``
  file counts as a change;
* the bytes of every policy file the loader reads for it, imports included (an
  import that now finds another file is a change too);
* the CSV files its monitor cases read.

A later ``check`` that finds all of them unchanged counts the recorded passes
instead of running the file, and prints what the run would have printed. Only
passes are recorded: a failing or broken test file runs every time. What was
read before the run is compared with what is read after it, so an edit during
the run is never recorded as the state that passed. Records are JSON files under
``$XDG_CACHE_HOME/policyengine/policy-tests`` (``resources.cache_root``); one
that is unreadable or not as expected means "run the file"; writing is best
effort; ``POLICYENGINE_NO_CACHE=1`` turns the cache off.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..resources import cache_root, caching_enabled, source_digest
from .discovery import policy_files_of, shown_path

__all__ = ["Inputs", "OutcomeCache"]

_FORMAT = 1  # of the records; part of every key
_MAX_RECORDS = 2_000  # past this many, the oldest written are removed


@dataclass(frozen=True, slots=True)
class Inputs:
    """Everything a test file's outcome depends on beyond the engine and the working folder."""

    test_digest: str  # sha256 of the test file's bytes
    policy_sources: tuple[tuple[str, str], ...]  # (path, "beside" | "folder" | "file")
    policy_files: tuple[str, ...]  # as the test file names them
    policy_digest: str  # every file the loader read for them, imports included: names and bytes
    data_files: tuple[tuple[str, str], ...]  # (CSV file, sha256 of its bytes)

    def to_json(self) -> dict[str, Any]:
        return {"test": self.test_digest, "sources": [list(s) for s in self.policy_sources],
                "policy_files": list(self.policy_files), "policy": self.policy_digest,
                "data": [list(d) for d in self.data_files]}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_digest(path: str) -> str | None:
    try:
        return _sha256(Path(path).read_bytes())
    except OSError:
        return None


def _policy_digest(policy_files: tuple[str, ...]) -> str | None:
    """Real paths and bytes of every file the loader reads for ``policy_files``; None if any does not load.

    Loaded by their real paths (which file an import finds does not depend on how
    the importing file was named; ``policy_files`` is recorded as named), so the
    test files of one folder tree, each naming ``..`` its own way, share the
    loader's in-memory cache, and the files ``check`` has just loaded by absolute
    path are not parsed again.
    """
    from ..loader import load_files

    loaded = load_files([os.path.realpath(name) for name in policy_files])
    if loaded.findings:
        return None
    digest = hashlib.sha256()
    for name in sorted(loaded.sources):
        digest.update(f"{name}\0{_sha256(loaded.sources[name])}\0".encode())
    return digest.hexdigest()


def _expanded(sources: tuple[tuple[str, str], ...]) -> tuple[str, ...] | None:
    """The policy files ``sources`` name now, spelled as the test-file loader spells them."""
    files: list[str] = []
    for source in sources:
        try:
            found = policy_files_of(source)  # type: ignore[arg-type]
        except OSError:  # a folder that cannot be listed: run the file, which says so
            return None
        if found is None:
            return None
        files.extend(shown_path(str(p)) for p in found)
    return tuple(files)


def _current(inputs: Inputs, digests: dict[tuple[str, ...], str | None] | None = None) -> bool:
    """Whether the policy and data files are still those ``inputs`` recorded (the test file is keyed).

    ``digests`` remembers policy digests by set of files within one look-up pass:
    the test files of a folder tree usually all load the whole tree.
    """
    if _expanded(inputs.policy_sources) != inputs.policy_files:
        return False
    if any(_file_digest(path) != digest for path, digest in inputs.data_files):
        return False
    if digests is None:
        return _policy_digest(inputs.policy_files) == inputs.policy_digest
    key = tuple(os.path.realpath(name) for name in inputs.policy_files)
    if key not in digests:
        digests[key] = _policy_digest(inputs.policy_files)
    return digests[key] == inputs.policy_digest


def _parse(record: Any) -> tuple[int, Inputs] | None:
    """(passes, inputs) of a record read from disk, or None when it is not exactly what ``remember`` writes."""
    def pairs(value: Any) -> tuple[tuple[str, str], ...] | None:
        if not isinstance(value, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in value):
            return None
        return tuple((p[0], p[1]) for p in value)

    if not isinstance(record, dict) or record.get("format") != _FORMAT:
        return None
    passed, raw = record.get("passed"), record.get("inputs")
    if type(passed) is not int or passed < 0 or not isinstance(raw, dict):
        return None
    sources, data, files = pairs(raw.get("sources")), pairs(raw.get("data")), raw.get("policy_files")
    test, policy = raw.get("test"), raw.get("policy")
    if (sources is None or data is None or not isinstance(files, list) or not all(isinstance(f, str) for f in files)
            or not isinstance(test, str) or not isinstance(policy, str)):
        return None
    if any(kind not in ("beside", "folder", "file") for _, kind in sources):
        return None
    return passed, Inputs(test, sources, tuple(files), policy, data)


class OutcomeCache:
    """The recorded passes of policy test files (see the module's docstring)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder if folder is not None else cache_root() / "policy-tests"

    @classmethod
    def open(cls) -> OutcomeCache | None:
        """The user's cache, or None when ``POLICYENGINE_NO_CACHE`` turns caching off."""
        return cls() if caching_enabled() else None

    def _key(self, test: Path, data: bytes) -> str:
        digest = hashlib.sha256(f"{_FORMAT}\0{source_digest()}\0{os.getcwd()}\0{test}\0".encode())
        digest.update(data)
        return digest.hexdigest()

    def passes(self, tests: Sequence[Path]) -> dict[Path, int]:
        """The recorded passes that still hold, by test file (cases passed); the other files must run."""
        digests: dict[tuple[str, ...], str | None] = {}  # for this look-up only: files may change later
        found: dict[Path, int] = {}
        for test in tests:
            passed = self._passes(test, digests)
            if passed is not None:
                found[test] = passed
        return found

    def _passes(self, test: Path, digests: dict[tuple[str, ...], str | None]) -> int | None:
        try:
            data = test.read_bytes()
            with open(self.folder / f"{self._key(test, data)}.json", encoding="utf-8") as handle:
                parsed = _parse(json.load(handle))
        except (OSError, ValueError):  # no record, or one that is not JSON: run the file
            return None
        if parsed is None:
            return None
        passed, inputs = parsed
        if inputs.test_digest != _sha256(data) or not _current(inputs, digests):
            return None
        return passed

    def inputs(self, test: Path) -> Inputs | None:
        """What ``test``'s outcome depends on, read now (before a run); None when the file does not load."""
        from .cases import TestFileError, load_test_file

        try:
            data = test.read_bytes()
            test_file = load_test_file(test)
        except (OSError, TestFileError):
            return None
        data_files = []
        for path in test_file.data_files:
            digest = _file_digest(path)
            if digest is None:
                return None
            data_files.append((path, digest))
        policy = _policy_digest(test_file.policy_files)
        if policy is None:
            return None
        return Inputs(_sha256(data), tuple(test_file.policy_sources), test_file.policy_files, policy,
                      tuple(data_files))

    def remember(self, test: Path, before: Inputs, passed: int) -> None:
        """Record that ``test`` passed ``passed`` cases on ``before``, if its inputs are still ``before``."""
        try:
            data = test.read_bytes()
        except OSError:
            return
        if _sha256(data) != before.test_digest or not _current(before):
            return  # something changed while the tests ran: the state that passed is not the one on disk
        record = {"format": _FORMAT, "passed": passed, "inputs": before.to_json()}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._prune()
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(record, handle)
                os.replace(tmp, self.folder / f"{self._key(test, data)}.json")
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError:
            pass  # best effort: a read-only cache folder only means the tests run again next time

    def _prune(self) -> None:
        """Keep the folder under ``_MAX_RECORDS`` records (each edit of a test file leaves one)."""
        with os.scandir(self.folder) as listing:
            records = [entry for entry in listing if entry.is_file(follow_symlinks=False)]
        if len(records) < _MAX_RECORDS:
            return
        aged = []
        for entry in records:
            try:
                aged.append((entry.stat(follow_symlinks=False).st_mtime, entry.path))
            except OSError:
                continue
        for _, path in sorted(aged)[: len(aged) - _MAX_RECORDS + 1]:
            try:
                os.unlink(path)
            except OSError:
                pass
