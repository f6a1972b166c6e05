"""Read policy files and folders into parsed ``PolicyFile`` trees, collecting problems.

``load_files`` never raises for bad input: an unreadable file, a file that is not
UTF-8, or a syntax error each become one ``Finding`` and loading carries on with
the other files, so ``check`` can report every broken file at once.

Parsing is cached by content. A file's parse result (tree or syntax finding) is
stored under the sha256 of its path and bytes, in memory (least recently used
evicted past ``_MEMORY_BYTES`` of source) and as a pickle under
``$XDG_CACHE_HOME/policyengine/parse`` (``~/.cache`` by default), so reloading
unchanged files skips parsing. The cache folder is versioned by the grammar and
the parser's own source, so a new parser never reads an old tree. A corrupt or
unreadable cache entry is ignored; ``POLICYENGINE_NO_CACHE=1`` turns caching off.
The folder is bounded: past ``_DISK_LIMIT`` entries (every edited or moved
version of a file leaves one) the oldest written are removed, and
``no_disk_cache()`` keeps throwaway loads (mutation tests) out of it.

Beside it, under ``checked/`` and the same rules, ``load_policy`` keeps whole
checked policy sets (``read_checked`` / ``write_checked``), so a warm load skips
parsing and checking too; see "checked policy sets" below.
"""

from __future__ import annotations

import dataclasses
import hashlib
import operator
import os
import pickle
import shutil
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from . import ast
from .diagnostics import Finding, PolicyError, Span
from .ast import fast_constructor, paused_gc
from .policyset import Scoped
from .resources import cache_root, caching_enabled, data_path, grammar_text, source_digest

__all__ = ["LoadResult", "load_files", "policy_paths", "no_policy_files", "cache_dir", "no_disk_cache",
           "resolve_imports_as_at", "imports_only_inside", "confined_to", "read_checked", "write_checked", "has_checked", "held_parse_writes", "write_held"]

_Parsed = ast.PolicyFile | Finding
# In-memory parse results, least recently used first, weighed by the bytes of the source they came
# from (a tree takes some 30x its source): bounded by bytes, so 100 edits of a 200 KB file do not
# keep 100 trees (about 700 MB) alive. An entry larger than the whole budget is not kept.
_MEMORY_BYTES = 8 * 1024 * 1024  # source bytes whose trees are kept


class _ParseMemory(OrderedDict[str, tuple["_Parsed", int]]):
    """key -> (parse result, source bytes), oldest use first; ``used`` is the sum of the weights."""

    used = 0

    def clear(self) -> None:
        super().clear()
        self.used = 0


_MEMORY = _ParseMemory()
_VERSION: str | None = None
_DISK_LIMIT = 20_000  # most entries (one pickle per parsed file version) the on-disk cache keeps
_PRUNE_EVERY = 256  # count the cache folder on a process's first write and then every this many
_WRITES = 0
_DISK: ContextVar[bool] = ContextVar("policyengine_disk_parse_cache", default=True)
# parse-cache entries kept back from the disk inside ``held_parse_writes``
_HELD: ContextVar[list[tuple[str, "_Parsed"]] | None] = ContextVar("policyengine_held_parse_writes", default=None)
# (copy, original): files under the throwaway folder ``copy`` import as if they were under ``original``
_RELOCATED: ContextVar[tuple[Path, Path] | None] = ContextVar("policyengine_relocated_rules", default=None)
# the one folder imports may resolve in (a signed bundle's rules), or None: the ordinary lookup
_CONFINED: ContextVar[Path | None] = ContextVar("policyengine_confined_imports", default=None)


@dataclass(frozen=True)
class LoadResult:
    """The files that parsed, and one finding per file that did not."""

    files: tuple[ast.PolicyFile, ...]
    findings: list[Finding] = field(default_factory=list)
    # every file read, given or imported, by name: the bytes its tree was parsed from
    sources: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return not any(f.is_error for f in self.findings)


def _where(path: str, line: int = 1, col: int = 1) -> Span:
    return Span(path, line, col, line, col + 1)


def policy_paths(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[str], list[Finding]]:
    """Expand files and folders (recursively, ``*.policy``, sorted) into file names.

    A path that is neither, and a folder holding no ``.policy`` file, is a
    finding: beside other paths it would otherwise add nothing, unnoticed.
    """
    found: list[str] = []
    findings: list[Finding] = []
    seen: set[str] = set()
    for given in paths:
        path = Path(given)
        if path.is_dir():
            members, unlisted = policy_files_under(path)
            if unlisted:  # its rules would be left out unnoticed: a deny among them would no longer deny
                findings.extend(Finding("load", f"cannot list this folder: {error.strerror or error}",
                                        _where(error.filename or str(given))) for error in unlisted)
                continue
            if not members:  # a folder named for its rules that holds none is checked for nothing: an error
                findings.append(no_policy_files([given]))
                continue
        elif path.is_file():
            members = [str(path)]
        else:
            findings.append(Finding("load", "no such file or folder", _where(str(given))))
            continue
        for member in members:
            if not _utf8_name(member):
                shown = os.fsencode(member).decode("utf-8", "backslashreplace")
                findings.append(Finding("load", "this file's name is not UTF-8; rename it", _where(shown)))
                continue
            key = os.path.realpath(member)
            if key not in seen:
                seen.add(key)
                found.append(member)
    return found, findings


def policy_files_under(folder: Path) -> tuple[list[str], list[OSError]]:
    """(the ``.policy`` files under ``folder``, sorted; why each folder in it that cannot be listed could not)."""
    return files_under(folder, ".policy")


def files_under(folder: Path, suffix: str = "") -> tuple[list[str], list[OSError]]:
    """(the files under ``folder`` whose names end with ``suffix``, sorted; why each folder that cannot be listed
    could not).

    As ``folder.rglob("*" + suffix)`` finds them (symbolic links to folders not
    followed), except that ``rglob`` passes over a folder it may not list as if
    it were empty: rules left out that way are a policy quietly missing a deny.
    """
    unlisted: list[OSError] = []
    found = [os.path.join(top, name) for top, _, names in os.walk(folder, onerror=unlisted.append)
             for name in names if name.endswith(suffix)]
    return sorted(name for name in found if os.path.isfile(name)), unlisted


def _utf8_name(name: str) -> bool:
    """Whether ``name`` is text (a name of undecodable bytes holds surrogates, which no hash or record can take)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def no_policy_files(paths: Iterable[str | os.PathLike[str]]) -> Finding:
    """The finding for paths that hold no ``.policy`` file at all: deciding with no rules is refused, not empty."""
    where = str(next(iter(paths), "."))
    return Finding("load", "no .policy files found here", _where(where),
                   help="name a .policy file or a folder that holds some")


def cache_dir() -> Path:
    return cache_root() / "parse" / _version()


def _version() -> str:
    """Changes whenever the grammar or the code that shapes the tree changes."""
    global _VERSION
    if _VERSION is None:
        digest = hashlib.sha256(grammar_text().encode())
        here = Path(__file__).resolve().parent
        for module in ("syntax.py", "syntax_scope.py", "syntax_routing.py", "syntax_errors.py", "ast.py",
                       "diagnostics.py", "loader.py"):
            try:
                digest.update((here / module).read_bytes())
            except OSError:
                digest.update(module.encode())
        _VERSION = digest.hexdigest()[:16]
    return _VERSION


def _read_cached(key: str, size: int) -> _Parsed | None:
    entry = _MEMORY.get(key)
    if entry is not None:
        _MEMORY.move_to_end(key)
        return entry[0]
    value = _read_disk(cache_dir(), key)
    if isinstance(value, (ast.PolicyFile, Finding)):
        _remember(key, value, size)
        return value
    return None


@contextmanager
def no_disk_cache() -> Iterator[None]:
    """Neither read nor write the on-disk parse cache inside this block (this thread/context).

    For loads of throwaway copies, such as the mutants of ``policyengine test
    --mutations``, whose entries would only fill the cache. The in-memory cache
    still serves files loaded again in the same process.
    """
    token = _DISK.set(False)
    try:
        yield
    finally:
        _DISK.reset(token)


def _maybe_prune(folder: Path) -> None:
    """Keep the cache folder to ``_DISK_LIMIT`` entries, removing the oldest (by mtime).

    Counting the folder costs a directory listing, so it is done on a process's
    first write and then every ``_PRUNE_EVERY`` writes; between two counts the
    folder may hold up to ``_PRUNE_EVERY`` entries more than the limit.
    """
    global _WRITES
    _WRITES += 1
    if (_WRITES - 1) % _PRUNE_EVERY:
        return
    with os.scandir(folder) as listing:
        entries = [e for e in listing if e.is_file(follow_symlinks=False)]
    if len(entries) < _DISK_LIMIT:  # room left for the entry about to be written
        return
    aged: list[tuple[float, str]] = []
    for entry in entries:
        try:
            aged.append((entry.stat(follow_symlinks=False).st_mtime, entry.path))
        except OSError:
            continue  # removed meanwhile by another process
    aged.sort()
    for _, path in aged[: len(aged) - _DISK_LIMIT + 1]:
        try:
            os.unlink(path)
        except OSError:
            pass


def _remember(key: str, value: _Parsed, size: int) -> None:
    """Keep ``value`` (parsed from ``size`` bytes), evicting the least recently used beyond ``_MEMORY_BYTES``."""
    weight = max(size, 1)
    if weight > _MEMORY_BYTES:
        return
    old = _MEMORY.pop(key, None)
    if old is not None:
        _MEMORY.used -= old[1]
    while _MEMORY and _MEMORY.used + weight > _MEMORY_BYTES:
        _, (_, evicted) = _MEMORY.popitem(last=False)
        _MEMORY.used -= evicted
    _MEMORY[key] = (value, weight)
    _MEMORY.used += weight


def memory_cache_bytes() -> int:
    """Source bytes whose parse results the in-memory cache holds now (at most ``_MEMORY_BYTES``)."""
    return _MEMORY.used


def _write_cached(key: str, value: _Parsed, size: int) -> None:
    _remember(key, value, size)
    held = _HELD.get()
    if held is not None:
        held.append((key, value))
        return
    _write_disk(cache_dir(), key, value)


@contextmanager
def held_parse_writes() -> Iterator[list[tuple[str, _Parsed]]]:
    """Inside this block, trees parsed are kept in the yielded list instead of written to disk.

    ``load_policy`` stores the checked set, trees included, under one key; writing
    each tree to the parse cache as well would pickle it twice (3 s at 100,000
    rules). It writes the held trees (``write_held``) only when it cannot store the set.
    """
    held: list[tuple[str, _Parsed]] = []
    token = _HELD.set(held)
    try:
        yield held
    finally:
        _HELD.reset(token)


def write_held(held: list[tuple[str, _Parsed]]) -> None:
    """Write the parse-cache entries ``held_parse_writes`` kept back."""
    for key, value in held:
        _write_disk(cache_dir(), key, value)
    held.clear()


def _private(status: os.stat_result) -> bool:
    """Owned by this user and writable by no one else: unpickling a file another user could write runs their code."""
    return status.st_uid == os.getuid() and not status.st_mode & 0o022


def _read_disk(folder: Path, key: str, suffix: str = ".pickle", shared: Sequence[object] = ()) -> object | None:
    """The entry ``key`` unpickled, or None when disk caching is off here or it is missing, unreadable or not private.

    ``shared``: the objects ``_write_disk`` was given as ``shared``, read elsewhere, in the same order.
    """
    if not _DISK.get():
        return None
    try:
        fd = os.open(folder / f"{key}{suffix}", os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            if not (_private(os.fstat(fd)) and _private(os.stat(folder))):
                return None
            token = _SHARED.set(shared)
            try:
                with paused_gc():
                    return pickle.load(handle)
            finally:
                _SHARED.reset(token)
    except Exception:  # noqa: BLE001 - a missing or corrupt entry just means "build it again"
        return None
    finally:
        _LINES.clear()


def _write_disk(folder: Path, key: str, value: object, suffix: str = ".pickle", shared: Sequence[object] = ()) -> bool:
    """Store ``value`` under ``key`` in ``folder`` (atomically, best effort), removing older versions' folders.

    The objects in ``shared`` are written as references (their position), not
    pickled: ``_read_disk`` is given them again. Returns whether the entry was written.
    """
    if not _DISK.get():
        return False
    try:
        if not folder.is_dir():
            _forget_old_versions(folder.parent)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # entries are trusted only when private
        _maybe_prune(folder)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                pickler = pickle.Pickler(handle, protocol=pickle.HIGHEST_PROTOCOL)
                pickler.dispatch_table = _shared_reducers(shared) if shared else _REDUCERS  # type: ignore[assignment]
                pickler.dump(value)
            os.replace(tmp, folder / f"{key}{suffix}")
        except BaseException:
            os.unlink(tmp)
            raise
    except Exception:  # noqa: BLE001 - caching is best effort; a read-only home still loads
        return False
    return True


# --- checked policy sets ---------------------------------------------------------------------
#
# ``load_policy`` keeps what parsing and checking a set of files produced (the policy set, its
# hash and warnings) under a key it derives from the files' names and bytes, beside the parse
# cache and under the same rules. The folder is versioned by the digest of all of policyengine's
# code, since checking involves most of it; every entry also stores its own key and is used only
# when that matches, so a renamed or foreign file is never trusted.


def checked_cache_dir() -> Path:
    return cache_root() / "checked" / source_digest()[:16]


def read_checked(key: str, suffix: str = ".pickle", shared: Sequence[object] = ()) -> object | None:
    """What ``write_checked`` stored under ``key`` with this engine, or None (missing, corrupt, foreign, caching off)."""
    if not caching_enabled():
        return None
    entry = _read_disk(checked_cache_dir(), key, suffix, shared)
    if isinstance(entry, tuple) and len(entry) == 2 and entry[0] == key:
        return entry[1]
    return None


def write_checked(key: str, value: object, suffix: str = ".pickle", shared: Sequence[object] = ()) -> bool:
    """Store ``value`` under ``key`` (best effort: False when it could not be written).

    An entry may come in parts, one a ``suffix``: objects of one part that the
    other holds too are written once, in that other part, and named in ``shared``
    (read them first and give them to ``read_checked`` in the same order).
    """
    return caching_enabled() and _write_disk(checked_cache_dir(), key, (key, value), suffix, shared)


def has_checked(key: str, suffix: str) -> bool:
    """Whether an entry (part) is stored under ``key`` (it may still be unreadable when read)."""
    return caching_enabled() and _DISK.get() and (checked_cache_dir() / f"{key}{suffix}").is_file()


# --- fast pickles of syntax trees ------------------------------------------------------------
#
# A frozen, slotted dataclass unpickles through dataclasses' own __setstate__, which
# calls dataclasses.fields() for every node; for the ~400,000 nodes and spans of
# 10,000 rules that is most of the load time. These reducers store a node as
# (constructor, field values) and the constructors set the slots directly, so a
# cached tree loads about three times faster (0.53 s -> 0.18 s for 10,000 rules).
# The constructors are generated (``ast.fast_constructor``), like dataclasses
# generates __init__, because a generic loop over the fields costs half the gain.


def _tree_classes() -> list[type]:
    nodes = [c for c in vars(ast).values() if isinstance(c, type) and dataclasses.is_dataclass(c)]
    return [Span, Finding, Scoped, *nodes]


def _constructor(cls: type) -> tuple[Callable[..., object], Callable[[object], tuple[object, ...]]]:
    names = [f.name for f in dataclasses.fields(cls)]
    make = fast_constructor(cls)
    name = f"_make_{cls.__name__}"
    make.__module__, make.__name__, make.__qualname__ = __name__, name, name
    globals()[name] = make  # pickle finds it by module and name
    get = operator.attrgetter(*names)
    values = (lambda node: (get(node),)) if len(names) == 1 else get
    return make, values  # type: ignore[return-value]


def _reducers() -> dict[type, Callable[[object], tuple[object, ...]]]:
    table: dict[type, Callable[[object], tuple[object, ...]]] = {}
    for cls in _tree_classes():
        table[cls] = _reducer(*_constructor(cls))
    table[Span] = _reduce_span
    table[ast.Name] = _reduce_name
    return table


def _reducer(
    make: Callable[..., object], values: Callable[[object], tuple[object, ...]]
) -> Callable[[object], tuple[object, ...]]:
    return lambda node: (make, values(node))


_intern = sys.intern


def _reduce_name(name: ast.Name) -> tuple[object, ...]:
    # The pickler writes an object once and refers back to it after: interned, every ``principal``,
    # ``read`` or role name of a tree is read back as one string, not one per occurrence.
    return _make_Name, (_intern(name.value), name.span)  # type: ignore[name-defined] # noqa: F821 - by _constructor


# Line numbers read back while one entry is unpickled, each kept once. Pickle writes integers by
# value, so the spans of a 100,000-rule file would otherwise hold some two million int objects of
# their own (~28 bytes each) for a few hundred thousand distinct lines. Emptied after every read.
_LINES: dict[int, int] = {}


def _reduce_span(span: Span) -> tuple[object, ...]:
    return _load_span, (_intern(span.file), span.line, span.col, span.end_line - span.line, span.end_col)


def _load_span(file: str, line: int, col: int, lines: int, end_col: int) -> Span:
    """A span read from the cache, sharing its line numbers with the spans before it."""
    line = _LINES.setdefault(line, line)
    end = line if not lines else _LINES.setdefault(line + lines, line + lines)
    return _make_Span(file, line, col, end, end_col)  # type: ignore[name-defined] # noqa: F821 - made by _constructor


_REDUCERS = _reducers()

# The objects an entry being read refers to by position (``_read_disk``'s ``shared``).
_SHARED: ContextVar[Sequence[object]] = ContextVar("policyengine_shared_objects", default=())


def _shared_object(position: int) -> object:
    """A shared object, while its entry is read (IndexError outside: that entry is read as damaged)."""
    return _SHARED.get()[position]


def _shared_reducers(shared: Sequence[object]) -> dict[type, Callable[[object], tuple[object, ...]]]:
    """``_REDUCERS`` writing each of ``shared`` as its position (``_shared_object``) instead of its contents.

    Only the classes of the shared objects get a reducer that looks them up, so
    the other objects (millions in a large tree) cost no extra call, as they
    would through ``Pickler.persistent_id``.
    """
    position = {id(o): i for i, o in enumerate(shared)}
    table = dict(_REDUCERS)
    for cls in {type(o) for o in shared}:
        table[cls] = _shared_or(position, table.get(cls))
    return table


def _shared_or(position: dict[int, int], base: Callable[[object], tuple[object, ...]] | None,
               ) -> Callable[[object], tuple[object, ...]]:
    def reduce(obj: object) -> tuple[object, ...]:
        found = position.get(id(obj))
        if found is not None:
            return _shared_object, (found,)
        return base(obj) if base is not None else obj.__reduce_ex__(pickle.HIGHEST_PROTOCOL)  # type: ignore[return-value]
    return reduce


def _forget_old_versions(parent: Path) -> None:
    """Remove cache folders of earlier parser versions: their trees are never read again."""
    if parent.is_dir():
        for old in parent.iterdir():
            if old.is_dir() and len(old.name) == 16:
                shutil.rmtree(old, ignore_errors=True)


def _decode(name: str, data: bytes) -> str | Finding:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        before = data[: error.start]
        line = before.count(b"\n") + 1
        col = len(before) - (before.rfind(b"\n") + 1) + 1
        return Finding(
            "load",
            f"this file is not UTF-8 text (byte 0x{data[error.start]:02x} cannot be read)",
            _where(name, line, col),
            help="save the file as UTF-8",
        )


def _parse(name: str, data: bytes, use_cache: bool) -> _Parsed:
    key = hashlib.sha256(name.encode() + b"\0" + data).hexdigest() if use_cache else ""
    if use_cache:
        cached = _read_cached(key, len(data))
        if cached is not None:
            return cached
    text = _decode(name, data)
    if isinstance(text, Finding):
        return text
    from .syntax import parse_policy  # Lark only when a file is not in the cache

    try:
        result: _Parsed = parse_policy(text, name)
    except PolicyError as error:
        result = error.findings[0]
    if use_cache:
        _write_cached(key, result, len(data))
    return result


def load_files(paths: Iterable[str | os.PathLike[str]], *, cache: bool | None = None,
               contents: Mapping[str, bytes] | None = None) -> LoadResult:
    """Parse every ``.policy`` file under ``paths``; one finding per file that fails.

    ``cache`` defaults to on unless ``POLICYENGINE_NO_CACHE=1`` is set.
    ``contents`` maps file names, spelled as ``policy_paths`` lists them, to bytes
    the caller has already read: those are parsed instead of reading the file
    again (so a caller that hashed the bytes parses exactly what it hashed).
    """
    use_cache = caching_enabled() if cache is None else cache
    names, findings = policy_paths(paths)
    files: list[ast.PolicyFile] = []
    read: dict[str, bytes] = {}
    with paused_gc():
        _load_each(names, use_cache, files, findings, contents, read)
        _load_imports(names, use_cache, files, findings, read)
    return LoadResult(tuple(files), findings, read)


def _load_imports(names: list[str], use_cache: bool, files: list[ast.PolicyFile], findings: list[Finding],
                  read: dict[str, bytes] | None = None) -> None:
    """Load packages that given files import but that were not given.

    ``import common.regions`` in ``rules/finance/invoices.policy`` finds
    ``common/regions.policy`` in the importing file's folder or the nearest
    folder above it that has one, so a single file can be checked or evaluated
    on its own; failing that, in the example rules shipped with policyengine,
    whose ``common.regions`` serves as a standard library of region sets. A
    package that cannot be found is left for ``check`` to report.
    """
    loaded = {os.path.realpath(name) for name in names}
    declared = {f.package.value for f in files}
    pending = list(files)
    while pending:
        file = pending.pop()
        for imp in file.imports:
            package = imp.package.value
            if package in declared:
                continue
            found = _find_package_file(Path(file.path).resolve().parent, package)
            if found is None or os.path.realpath(found) in loaded:
                continue
            loaded.add(os.path.realpath(found))
            before = len(files)
            _load_each([str(found)], use_cache, files, findings, None, read)
            for new in files[before:]:
                declared.add(new.package.value)
                pending.append(new)


@contextmanager
def imports_only_inside(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Inside this block, imports resolve only in ``folder`` and the folders between it and the importing file.

    For a signed bundle, whose policy must be exactly the signed files in it: no
    folder above it (the temporary folder it is extracted to, which others may
    write) and no shipped rules. An import it does not hold is left unresolved,
    which ``check`` reports as an error.
    """
    token = _CONFINED.set(Path(folder).resolve())
    try:
        yield
    finally:
        _CONFINED.reset(token)


def confined_to() -> Path | None:
    """The folder ``imports_only_inside`` confines imports to here, or None."""
    return _CONFINED.get()


@contextmanager
def resolve_imports_as_at(copy: str | os.PathLike[str], original: str | os.PathLike[str]) -> Iterator[None]:
    """Inside this block, files under the folder ``copy`` import packages as if they lay under ``original``.

    For throwaway copies of a rules folder (the mutants of ``policyengine test
    --mutations``): the folders inside the copy are searched, then those above the
    original, never the temporary folder the copy lives in, whose other contents
    (leftovers of earlier runs) are not part of the policy.
    """
    token = _RELOCATED.set((Path(copy).resolve(), Path(original).resolve()))
    try:
        yield
    finally:
        _RELOCATED.reset(token)


def _search_folders(start: Path) -> list[Path]:
    """The folders an import from a file in ``start`` is looked up in, nearest first."""
    folders = [start, *start.parents]
    confined = _CONFINED.get()
    if confined is not None:
        return [f for f in folders if f == confined or confined in f.parents]
    moved = _RELOCATED.get()
    if moved is not None:
        copy, original = moved
        if start == copy or copy in start.parents:
            folders = [f for f in folders if f == copy or copy in f.parents] + list(original.parents)
    return [*folders, _shipped_rules()]


def _find_package_file(start: Path, package: str) -> Path | None:
    relative = Path(*package.split(".")).with_suffix(".policy")
    for folder in _search_folders(start):
        candidate = folder / relative
        if candidate.is_file():
            return candidate
    return None


def _shipped_rules() -> Path:
    try:
        return data_path("rules")
    except FileNotFoundError:
        return Path(os.devnull)


def _load_each(names: list[str], use_cache: bool, files: list[ast.PolicyFile], findings: list[Finding],
               contents: Mapping[str, bytes] | None = None, read: dict[str, bytes] | None = None) -> None:
    for name in names:
        try:
            data = contents[name] if contents is not None and name in contents else Path(name).read_bytes()
        except OSError as error:
            findings.append(Finding("load", f"cannot read this file: {error.strerror or error}", _where(name)))
            continue
        if read is not None:
            read[name] = data
        parsed = _parse(name, data, use_cache)
        if isinstance(parsed, Finding):
            findings.append(parsed)
        else:
            files.append(parsed)
