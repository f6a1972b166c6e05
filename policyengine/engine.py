"""The public engine: ``load_policy(paths)`` once, then ``policy.evaluate(request)`` many times.

``load_policy`` runs the whole front end (load + parse, check, compile) and raises
``PolicyError`` with every finding when the rule files have errors. The resulting
``Policy`` is immutable and safe to share between threads; its only moving parts
are the budget ledger it reads and the block list of suspended models, both
passed in by the caller.

Compiled policies are cached in-process by the content hash of their files, so
reloading unchanged files is cheap; across processes, checked and compiled sets
are kept on disk without their syntax trees (see "the checked and compiled set
on disk" below), which a warm load reads only when asked for.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import re
import threading
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from . import ast
from .budgets import BudgetLedger, InMemoryLedger
from .check import check_policy
from .compile import CompiledPolicy, cached_conditions, cached_stages, compile_policy, restore_cached
from .decision import Decision
from .diagnostics import Finding, PolicyError, Span
from .evaluate import Evaluator
from .format import format_policy
from .jsontext import Unreadable, bad_numbers, decode, element_spans, may_hold_bad_numbers, number_text
from .loader import (confined_to, has_checked, held_parse_writes, load_files, no_policy_files, policy_paths,
                     read_checked, write_checked, write_held)
from .policyset import LazyPolicySet, PolicySet
from .rule_paths import recorded, recorded_names, rules_root


class BlockList:
    """The models a bias/drift monitor has suspended (``on breach block``).

    Thread-safe and live: a ``Policy`` built with it denies a blocked model from
    the next decision on. Any ``Container[str]`` works in its place, such as a
    ``frozenset`` snapshot.
    """

    def __init__(self, models: Iterable[str] = ()) -> None:
        self._models: frozenset[str] = frozenset(models)
        self._lock = threading.Lock()

    def __contains__(self, model: object) -> bool:
        return model in self._models

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._models))

    def __len__(self) -> int:
        return len(self._models)

    def block(self, model: str) -> None:
        with self._lock:
            self._models = self._models | {model}

    def unblock(self, model: str) -> None:
        with self._lock:
            self._models = self._models - {model}

    def snapshot(self) -> frozenset[str]:
        return self._models


@dataclass(frozen=True)
class Explanation:
    """A decision plus the readable trace of how it was reached (``eval --explain``)."""

    decision: Decision
    trace: tuple[str, ...]

    def text(self) -> str:
        return "\n".join(self.trace)


class Policy:
    """A loaded, checked and compiled policy set, ready to decide requests."""

    def __init__(self, policy_set: PolicySet, *, policy_hash: str, ledger: BudgetLedger | None = None,
                 blocked: Container[str] = frozenset(), compiled: CompiledPolicy | None = None,
                 warnings: tuple[Finding, ...] = ()) -> None:
        self.policy_set = policy_set
        self.policy_hash = policy_hash
        self.compiled = compiled if compiled is not None else compile_policy(policy_set)
        self.ledger: BudgetLedger = ledger if ledger is not None else InMemoryLedger()
        self.blocked = blocked
        self._evaluator = Evaluator(self.compiled, policy_hash=policy_hash, ledger=self.ledger, blocked=blocked)
        self.warnings = warnings  # the checker's warnings (errors raise in load_policy)

    def __repr__(self) -> str:
        return f"<Policy {self.policy_hash[:12]} rules={len(self.compiled.rules)}>"

    @property
    def files(self) -> tuple[str, ...]:
        return self.policy_set.paths()

    @property
    def recorded_files(self) -> tuple[str, ...]:
        """The files as decisions and audit records name them: relative to the rules root (rule_paths.py)."""
        return tuple(recorded(self.policy_set.file_names, f) for f in self.files)

    def evaluate(self, request: Any, *, now: datetime | None = None,
                 directory: Mapping[str, Sequence[str]] | None = None) -> Decision:
        """Decide one request (a dict in the JSON shape of docs/engine.md, or a ``Request``).

        Never raises on a request: a malformed one is denied with a reason naming
        the bad field. ``now`` fixes the time for budget windows and escalation
        deadlines; ``directory`` maps approver ids to their roles for approvals
        that do not carry roles themselves.
        """
        return self._evaluator.evaluate(request, now=now, directory=directory)

    def evaluate_many(self, requests: Iterable[Any], *, now: datetime | None = None,
                      directory: Mapping[str, Sequence[str]] | None = None) -> list[Decision]:
        """Decide each request in order: the same decisions as ``evaluate`` one by one, with less per-call work.

        Never raises on a request (each malformed one is denied, as in ``evaluate``).
        """
        evaluate = self._evaluator.evaluate
        if now is None and directory is None:
            return [evaluate(request) for request in requests]
        return [evaluate(request, now=now, directory=directory) for request in requests]

    def explain(self, request: Any, *, now: datetime | None = None,
                directory: Mapping[str, Sequence[str]] | None = None) -> Explanation:
        """The decision plus a trace of every rule considered, matched or not, and why."""
        from .explain import explain  # the slow path lives apart from the hot one

        return explain(self._evaluator, request, now=now, directory=directory)

    def budget_scopes(self, request: Any) -> tuple[str, ...]:
        """Ledger keys of every budget that covers ``request`` (what ``charge`` charges)."""
        return tuple(dict.fromkeys(b.scope_key for b in self.budgets_for(request)))

    def budgets_for(self, request: Any) -> tuple[Any, ...]:
        """The compiled budgets (id, scope key, limits) covering ``request``: what a caller reserves against."""
        return self._covering(request)[1]

    def budget_currencies(self, request: Any) -> list[str]:
        """The currencies the budgets covering ``request`` limit, sorted (a cost in another counts for none)."""
        return _currencies(self.budgets_for(request))

    def _covering(self, request: Any) -> tuple[Any, tuple[Any, ...]]:
        """The request's checked context (None when malformed) and the budgets covering it."""
        ctx = self._evaluator.context(request)
        if isinstance(ctx, Decision):
            return None, ()
        return ctx, tuple(dict.fromkeys(self._evaluator._budgets_in_scope(ctx)))

    def charge(self, request: Any, *, tokens: float = 0, cost: float = 0, currency: str = "USD",
               at: datetime | None = None, model: str | None = None) -> tuple[str, ...]:
        """Charge actual usage of a finished model call to every budget scope of ``request``.

        Pass ``model`` when a route chose the model (the request had no resource id).
        Returns the scope keys charged.
        """
        if model is not None and isinstance(request, Mapping):
            resource = dict(request.get("resource") or {})
            resource["id"] = model
            request = {**request, "resource": resource}
        scopes = self.budget_scopes(request)
        for key in scopes:
            if tokens:
                self.ledger.charge(key, "tokens", float(tokens), at)
            if cost:
                self.ledger.charge(key, currency, float(cost), at)
        return scopes

    def reserve(self, request: Any, *, at: datetime | None = None) -> Any:
        """Hold ``request``'s estimate (``context.tokens`` and its cost, as budget rules read them) in every limit
        of every budget covering it, all or nothing: a ``store.holds.Hold``, refused (``refused_by``) when a limit
        has no room once the holds of calls in flight are counted. Settle it with the real usage, or release it.

        Deciding a request and charging it later lets concurrent callers all pass one budget check; a hold
        taken at decision time cannot. ``ValueError`` when the ledger takes no holds, or the budgets covering
        the request limit more than one currency (a hold takes one).
        """
        from .store.holds import NO_HOLD, can_reserve, reserve

        ctx, budgets = self._covering(request)
        if not budgets:
            return NO_HOLD
        if not can_reserve(self.ledger):
            raise ValueError("this budget ledger takes no reservations")
        currencies = _currencies(budgets)
        if len(currencies) > 1:
            raise ValueError(f"the budgets covering this request limit several currencies ({', '.join(currencies)}); "
                             "a reservation holds one")
        currency = currencies[0] if currencies else None
        cost = self._evaluator.estimate(ctx, currency) if currency else 0.0
        return reserve(self.ledger, budgets, self._evaluator.estimate(ctx, "tokens"), cost, currency, at=at)

    def budget_refusal(self, hold: Any) -> Decision:
        """The deny for a request whose reservation ``hold`` was refused: the budget, and that calls in flight
        hold the rest."""
        return self._evaluator._deny_builtin(
            hold.refused_by, f"budget {hold.refused_by} has no room for this request's estimate in "
                             f"{hold.refused_unit}, counting what calls in flight have reserved")

    def malformed(self, errors: Sequence[str]) -> Decision:
        """The deny decision for input that is not even a request (bad JSON line, ...)."""
        return self._evaluator._malformed(list(errors))

    def with_blocked(self, blocked: Container[str]) -> Policy:
        """The same compiled policy with another block list (no recompilation)."""
        return Policy(self.policy_set, policy_hash=self.policy_hash, ledger=self.ledger,
                      blocked=blocked, compiled=self.compiled, warnings=self.warnings)


def _currencies(budgets: Iterable[Any]) -> list[str]:
    """The money units the limits of ``budgets`` are written in, sorted (every unit but tokens)."""
    return sorted({limit.unit for budget in budgets for limit in budget.limits if limit.unit != "tokens"})


# --- loading ------------------------------------------------------------------------

# content key of the given files -> (policy set, compiled, policy hash, warnings,
# (name, sha256) of each file loaded for an import, checked again on every hit)
_CACHE: dict[str, "_Loaded"] = {}
_CACHE_LOCK = threading.Lock()


def _read_sources(names: Sequence[str]) -> dict[str, bytes]:
    """Each readable file's bytes, read once: they key the cache *and* are what gets parsed.

    An unreadable file is left out, for the loader to read and report.
    """
    sources: dict[str, bytes] = {}
    for name in names:
        try:
            sources[name] = Path(name).read_bytes()
        except OSError:
            pass
    return sources


def _content_key(names: Sequence[str], sources: Mapping[str, bytes]) -> str | None:
    if len(sources) != len(names):
        return None  # some file is unreadable: do not cache what the loader will report
    digest = hashlib.sha256()
    for name in names:  # in the order given: it is the rules' declaration order, which orders reasons
        data = sources[name]
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def policy_hash(files: Sequence[ast.PolicyFile]) -> str:
    """sha256 of the canonical policy set: every file's formatted text, ordered by path.

    Paths are not hashed, so moving the folder keeps the hash.
    """
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        data = format_policy(f).encode("utf-8")
        digest.update(f"{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _imported_digests(read: Mapping[str, bytes], given: Mapping[str, bytes]) -> tuple[tuple[str, str], ...]:
    """(name, sha256) of the files the loader read for imports, beyond the ``given`` ones."""
    return tuple((name, hashlib.sha256(data).hexdigest()) for name, data in read.items() if name not in given)


def _unchanged(imported: tuple[tuple[str, str], ...]) -> bool:
    """Whether every imported file still holds the bytes its cached policy was built from."""
    for name, digest in imported:
        try:
            if hashlib.sha256(Path(name).read_bytes()).hexdigest() != digest:
                return False
        except OSError:
            return False
    return True


def _build(paths: Sequence[str | Path], sources: Mapping[str, bytes] | None,
           ) -> tuple[PolicySet, list[ast.PolicyFile], list[Finding], dict[str, bytes]]:
    loaded = load_files([str(p) for p in paths], contents=sources)
    files, findings = list(loaded.files), list(loaded.findings)
    if any(f.is_error for f in findings):
        raise PolicyError([f for f in findings if f.is_error])
    result = check_policy(files)
    findings = [*findings, *result.findings]
    if result.policy is None:
        raise PolicyError([f for f in findings if f.is_error] or findings)
    return result.policy, files, findings, loaded.sources


def build_policy_set(paths: Sequence[str | Path], *, sources: Mapping[str, bytes] | None = None,
                     ) -> tuple[PolicySet, list[ast.PolicyFile], list[Finding]]:
    """Load, parse and check; raises ``PolicyError`` when there is any error finding.

    ``sources`` maps file names (as ``policy_paths`` spells them) to bytes already
    read, which are parsed instead of reading those files again.
    """
    policy_set, files, findings, _ = _build(paths, sources)
    return policy_set, files, findings


_Loaded = tuple[PolicySet, CompiledPolicy, str, tuple[Finding, ...], tuple[tuple[str, str], ...]]
_TREES = ".trees"  # the suffix of the part of a cached set that holds its syntax trees


def _loaded(key: str | None, names: Sequence[str], sources: Mapping[str, bytes], root: str) -> _Loaded:
    """(policy set, compiled, policy hash, warnings, imported files' digests): from the disk cache, else built.

    Only sets that import nothing from outside the given files are cached on disk:
    which file an import resolves to depends on the folders around them, which the
    key does not cover. An entry of the wrong shape is ignored (fail closed).
    """
    # the key covers the files' names, order and bytes and the rules root (load_policy): a file name of it
    disk_key = hashlib.sha256(key.encode()).hexdigest() if key is not None else None
    if disk_key is not None:
        warm = _read_warm(disk_key, key, names, root)  # type: ignore[arg-type]
        if warm is not None:
            return warm
    with held_parse_writes() as held:  # written below unless the checked set, trees included, is stored
        try:
            policy_set, parsed, findings, read = _build(names, sources)
            policy_set = replace(policy_set, file_names=recorded_names((f.path for f in parsed), root))
            digest, imported = policy_hash(parsed), _imported_digests(read, sources)
        except BaseException:
            write_held(held)  # a set with errors: ``check`` will want the trees
            raise
    # the trees are written before compiling: their pickler's memo (an entry per node) and the compiled
    # rules and index are not held at once
    beside = _write_trees(disk_key, policy_set) if disk_key is not None and not imported else None
    compiled = compile_policy(policy_set)
    loaded = (policy_set, compiled, digest, tuple(findings), imported)
    if beside is None or not _write_main(disk_key, loaded, beside):  # type: ignore[arg-type]
        write_held(held)
    return loaded


# --- the checked and compiled set on disk -----------------------------------------------
#
# A set is stored in two parts under one key. The main part is what a load needs: the policy
# set without its syntax trees (roles, consts, gates, ... and every declaration that is not a
# rule), the files' names, the policy hash, the warnings, and the compiled rules as plain data
# (compile.cached_stages); reading it builds no node per token. The ``.trees`` part holds the
# files' trees and the rules' declarations, read only when something asks for them
# (LazyPolicySet); the declarations beside the rules are written once, in the main part, and
# the trees refer to them (loader.write_checked ``shared``).


def _write_trees(disk_key: str, policy_set: PolicySet) -> tuple[ast.Decl, ...] | None:
    """Store the ``.trees`` part of a freshly built set (first: a main part is never without it).

    Returns the declarations beside the rules, which it refers to and the main part
    holds, or None when it could not be written.
    """
    beside = tuple(d for f in policy_set.files for d in f.decls if not isinstance(d, ast.RuleDecl))
    return beside if write_checked(disk_key, (policy_set.files, policy_set.rules), _TREES, beside) else None


def _write_main(disk_key: str, loaded: _Loaded, beside: tuple[ast.Decl, ...]) -> bool:
    """Store the main part of a set whose ``.trees`` part ``_write_trees`` stored."""
    policy_set, compiled, digest, warnings, _ = loaded
    scopes = tuple((d, f.scope) for f in policy_set.files if f.scope is not None
                   for d in f.decls if not isinstance(d, ast.RuleDecl))
    light = replace(policy_set, files=(), rules=())
    return write_checked(disk_key, (light, policy_set.paths(), digest, warnings, beside, scopes,
                                    cached_stages(compiled)))


def _read_warm(disk_key: str, key: str, names: Sequence[str], root: str) -> _Loaded | None:
    """The set stored under ``disk_key``, compiled from its stored rules; None when missing, damaged or moved."""
    stored = read_checked(disk_key)
    if not (_is_warm(stored) and has_checked(disk_key, _TREES)):
        return None
    light, paths, digest, warnings, beside, scopes, cached = stored  # type: ignore[misc]
    # recorded names depend on where the files really are (links, the shipped rules' folder): not cached
    if recorded_names(light.file_names, root) != light.file_names:
        return None
    trees = functools.partial(_read_trees, disk_key, key, names, root, beside)
    roots = (*beside, *cached_conditions(cached))
    policy_set = LazyPolicySet.of(light, paths, {d.span: scope for d, scope in scopes}, roots, trees)
    done = restore_cached(cached, policy_set)
    del stored, cached  # the stored rule columns go before the index is built (peak memory)
    if done is None:
        return None
    return policy_set, compile_policy(policy_set, done=done), digest, warnings, ()


def _is_warm(value: object) -> bool:
    return (isinstance(value, tuple) and len(value) == 7 and type(value[0]) is PolicySet
            and not value[0].files and not value[0].rules and isinstance(value[1], tuple)
            and all(type(p) is str for p in value[1]) and isinstance(value[2], str)
            and isinstance(value[3], tuple) and all(isinstance(f, Finding) for f in value[3])
            and isinstance(value[4], tuple) and isinstance(value[5], tuple)
            and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[1], ast.Scope) for p in value[5])
            and isinstance(value[6], dict))


def _read_trees(disk_key: str, key: str, names: Sequence[str], root: str,
                beside: tuple[object, ...]) -> tuple[tuple[ast.PolicyFile, ...], tuple[Any, ...]]:
    """The ``.trees`` part of a stored set, for ``LazyPolicySet``; else the files parsed and checked again.

    Parsing again is for a part removed or damaged since the set was loaded, and
    only when the files still hold the bytes the set was built from (otherwise this
    raises ``PolicyError``: the trees would not be those of the rules deciding).
    Those new trees hold new declarations beside the rules, not the ones gates and
    residencies were compiled from: explanations then name no scope for them.
    """
    stored = read_checked(disk_key, _TREES, beside)
    if (isinstance(stored, tuple) and len(stored) == 2 and isinstance(stored[0], tuple) and isinstance(stored[1], tuple)
            and all(isinstance(f, ast.PolicyFile) for f in stored[0])):
        return stored  # type: ignore[return-value]
    sources = _read_sources(names)
    now = _content_key(names, sources)
    if now is None or f"{now}:{root}" != key:
        where = Span(names[0] if names else ".", 1, 1, 1, 2)
        raise PolicyError([Finding("load", "the rule files changed since this policy was loaded", where,
                                   help="load the policy again")])
    policy_set, _, _, _ = _build(names, sources)
    return policy_set.files, policy_set.rules


def load_policy(paths: str | Path | Sequence[str | Path], *, ledger: BudgetLedger | None = None,
                blocked: Container[str] = frozenset()) -> Policy:
    """Load, check and compile rule files (or folders of ``.policy`` files) into a ``Policy``.

    Raises ``PolicyError`` carrying every finding when the files have errors.
    ``ledger`` holds budget usage (default: a fresh in-memory ledger);
    ``blocked`` is the set of suspended models (a ``BlockList`` or a frozenset).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    names, missing = policy_paths(paths)
    if missing:
        raise PolicyError(missing)
    if not names:  # an empty folder is no policy: never decide with the hash of nothing
        raise PolicyError([no_policy_files(paths)])
    sources = _read_sources(names)  # read once: an edit meanwhile cannot be cached under the old key
    root = rules_root(paths)  # decisions name files relative to it (rule_paths.py)
    key = _content_key(names, sources)
    key = None if key is None else f"{key}:{root}"
    confined = confined_to()
    if key is not None and confined is not None:  # the same files resolve their imports elsewhere
        key = f"{key}:only-inside:{confined}"
    cached = _CACHE.get(key) if key is not None else None
    if cached is not None and not _unchanged(cached[4]):
        cached = None  # a package the files import (found beside them) was edited
    if cached is None:
        paused = gc.isenabled()
        gc.disable()  # the front end allocates a large, long-lived tree: skip repeated rescans
        try:
            cached = _loaded(key, names, sources, root)
        finally:
            if paused:
                gc.enable()
        if key is not None:
            with _CACHE_LOCK:
                if len(_CACHE) > 16:
                    _CACHE.clear()
                _CACHE[key] = cached
    policy_set, compiled, digest, warnings, _ = cached
    return Policy(policy_set, policy_hash=digest, ledger=ledger, blocked=blocked, compiled=compiled,
                  warnings=warnings)


# --- request input (``policyengine eval``) ----------------------------------------------

@dataclass(frozen=True)
class InputItem:
    """One request read from input: where it was, and the request or why it is unreadable."""

    line: int
    request: Any = None
    error: str | None = None
    item: int | None = None  # 1-based position in the JSON array it came from, if any

    @property
    def where(self) -> str:
        """``line 3`` or, for an element of an array, ``line 3 item 2``."""
        return f"line {self.line}" if self.item is None else f"line {self.line} item {self.item}"


def _bad_number(value: Any) -> str | None:
    """Why ``value`` holds numbers without a JSON/IEEE-754 form (naming each field, in order), or None."""
    return "; ".join(f"{path or 'request'}: {why}" for path, why in bad_numbers(value)) or None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _may_hold_surrogates(text: str) -> bool:
    """Cheap test: only a ``\\u`` escape (or an undecodable byte kept as a surrogate) can make one."""
    return "\\u" in text or (not text.isascii() and _SURROGATE.search(text) is not None)


def escape_surrogates(value: Any) -> Any:
    """A copy of ``value`` whose strings hold no lone surrogate: each is written as the text ``\\ud800``.

    JSON's ``\\ud800`` escape parses into a Python string that is not valid
    Unicode (RFC 8785 and I-JSON forbid it); this is the safe form to print or log.
    """
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8") if _SURROGATE.search(value) else value
    if isinstance(value, dict):
        return {escape_surrogates(k): escape_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [escape_surrogates(v) for v in value]
    return value


def _lone_surrogate(value: Any) -> str | None:
    """Why ``value`` is not valid Unicode text (naming the field), or None when it is."""
    stack: list[tuple[str, Any]] = [("request", value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                return f'{escape_surrogates(path)}: not valid Unicode text (lone surrogate in "{escape_surrogates(node)}")'
        elif isinstance(node, dict):
            for key, child in reversed(node.items()):
                name = f"{path}.{key}" if path != "request" else key
                if _SURROGATE.search(key):
                    return f"{escape_surrogates(name)}: not valid Unicode text (lone surrogate in a key)"
                stack.append((name, child))
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", child) for i, child in reversed(list(enumerate(node))))
    return None


def not_json(error: json.JSONDecodeError) -> str:
    return f"not valid JSON: {error.msg} (column {error.colno})"


def iter_requests(lines: Iterable[str]) -> Iterator[InputItem]:
    """Requests from JSON Lines as they arrive, or from one JSON document (an object or an array).

    When the first non-blank line is JSON by itself, the input is JSON Lines and
    each line is yielded as soon as it is read (so ``eval`` can sit in a pipe);
    otherwise the whole input is read as one, possibly multi-line, document. A
    line holding an array is a batch. A line that is not JSON, or is nested more
    than ``MAX_DEPTH`` levels, becomes an ``InputItem`` with ``error`` set, so
    the caller can deny it and go on.
    """
    it = iter(lines)
    consumed: list[str] = []
    for raw in it:
        if not consumed and raw.startswith("\ufeff"):
            raw = raw[1:]  # a UTF-8 byte order mark, as editors on Windows write
        consumed.append(raw)
        if raw.strip():
            break
    else:
        return
    number = len(consumed)
    try:
        first = decode(consumed[-1])
    except Unreadable as error:
        yield InputItem(number, error=str(error))
    except json.JSONDecodeError:
        yield from _read_document("".join(consumed) + "".join(it))
        return
    else:
        yield from _batch(number, first, text=consumed[-1])
    for raw in it:
        number += 1
        if raw.strip():
            yield from _line(number, raw.rstrip("\r\n"))


def read_requests(text: str) -> Iterator[InputItem]:
    """``iter_requests`` over a string."""
    return iter_requests(text.splitlines(keepends=True))


def read_document(text: str) -> Any:
    """The one JSON value ``text`` holds, read as one document: the reader for a body that must be exactly one
    value (the server's), where ``read_requests`` reads files and pipes leniently.

    Only JSON's whitespace (space, tab, LF, CR) may stand around the value, and a
    leading byte order mark; the text is never split into lines (``splitlines``
    also splits at U+2028, U+0085 and form feeds, so ``{...}<U+2028>`` would pass
    as one request, and a broken array as the lines of it that parse), and an
    array is not taken as its elements. ``json.JSONDecodeError`` when it is not
    one JSON value (``not_json`` words it), ``Unreadable`` when it nests too
    deeply or repeats a key; numbers without an IEEE-754 double come back as
    ``BadNumber`` (``read_value`` and ``read_items`` name them).
    """
    return decode(text[1:] if text.startswith("\ufeff") else text)


def read_value(text: str) -> InputItem:
    """``read_document`` as an ``InputItem``: ``error`` set when ``text`` is not one JSON value, nests too deeply
    or repeats a key (``request`` None), or holds a number without an IEEE-754 double or a lone surrogate
    (``request`` in safe form)."""
    try:
        value = read_document(text)
    except Unreadable as error:
        return InputItem(1, error=str(error))
    except json.JSONDecodeError as error:
        return InputItem(1, error=not_json(error))
    return replace(next(_batch(1, [value], text=text)), item=None)


def read_items(values: list[Any], text: str) -> Iterator[InputItem]:
    """Each element of ``values`` (the array ``read_value`` read from ``text``) as an ``InputItem``, ``error``
    naming a number without an IEEE-754 double or a lone surrogate in that element alone."""
    return _batch(1, values, text=text)


def _line(number: int, raw: str) -> Iterator[InputItem]:
    try:
        value = decode(raw)
    except json.JSONDecodeError as error:
        yield InputItem(number, error=not_json(error))
    except Unreadable as error:
        yield InputItem(number, error=str(error))
    else:
        yield from _batch(number, value, text=raw)


def _batch(line: int, value: Any, lines: Sequence[int] = (), *, text: str = "") -> Iterator[InputItem]:
    """The request, or each element of an array (at its own line when ``lines`` gives them).

    A request holding a lone surrogate (``text`` is the JSON it came from), or a
    number without an IEEE-754 double (``1e400``, ``NaN``, an integer beyond 2**53
    that no double holds), is unreadable: it comes with ``error`` set naming the
    field and ``request`` in escaped, safe form (such numbers as their text).
    """
    suspect = _may_hold_surrogates(text)
    numbers = may_hold_bad_numbers(text)
    items = enumerate(value, start=1) if isinstance(value, list) else [(None, value)]
    for position, request in items:
        where = lines[position - 1] if lines and position is not None else line
        problem = _bad_number(request) if numbers else None
        if problem is not None:
            request = number_text(request)
            problem = escape_surrogates(problem)  # the field's name may hold one
        elif suspect:
            problem = _lone_surrogate(request)
        if problem is None:
            yield InputItem(where, request, item=position)
        else:
            yield InputItem(where, escape_surrogates(request), error=problem, item=position)


def _element_lines(text: str) -> list[int]:
    """The line each element of the top-level array in ``text`` starts on (``text`` is valid JSON)."""
    line, counted = 1, 0
    lines: list[int] = []
    for start, _ in element_spans(text):
        line += text.count("\n", counted, start)
        counted = start
        lines.append(line)
    return lines


def _read_document(text: str) -> Iterator[InputItem]:
    """A whole multi-line document, or else line by line with bad lines reported."""
    start = text[: len(text) - len(text.lstrip())].count("\n") + 1
    try:
        whole = decode(text)
    except Unreadable as error:
        yield InputItem(start, error=str(error))
        return
    except json.JSONDecodeError:
        pass
    else:
        yield from _batch(start, whole, _element_lines(text) if isinstance(whole, list) else (), text=text)
        return
    for number, raw in enumerate(text.splitlines(), start=1):
        if raw.strip():
            yield from _line(number, raw)
