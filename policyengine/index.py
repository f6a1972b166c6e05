"""The candidate index: which rules could apply to a request, found without scanning any list of rules.

Every rule is filed under the literal prefix of its resource-id pattern: the
whole ``/``-separated segments before the first one holding a glob character
(``erp/invoices/*`` under ``"erp/invoices"``; ``calc`` under ``"calc"``; ``*``
and ``e*/x`` under ``ROOT``, no segments). Only ids that start with those
segments can match the pattern, so the rules that could match an id are those
filed under the prefixes of its own segments (``ROOT``, ``"erp"``,
``"erp/invoices"``, ...).

Loading only groups the rules: one dict from prefix string to what the index
needs of the rules filed there (key, kind, actions, principal, effect: read
once, by one C call a rule), in declaration order, plus, for a prefix with a
deeper one below it, an entry saying so (a walk down an id stops at the first
prefix no rule has). Nothing else is built for a prefix until a lookup
reaches it:

* a prefix of at most ``SCAN`` rules is read as is: a lookup keeps those of
  the request's action, kind and principal (a few comparisons a rule);
* a larger one is split once, the first time a lookup reaches it, by
  (action, kind), then by who its rules are about (any principal, a role, an
  agent), as the ``(action, kind) -> Bucket`` index of ``compile`` does; a
  lookup then reads the lists for the request's action, kind, roles and agent.

Either way a lookup's cost depends on the id's depth, the request's roles and
the size of the small prefixes it reads, not on how many rules the policy
holds, and an id never seen before costs what a known one does. A split is
built whole before it is stored (one dict assignment): two threads reaching a
new prefix together may both build it, alike, and neither sees half of one.

``CandidateIndex.node`` names the deepest prefix with rules on an id's path
(``ROOT`` when none): every id reaching the same prefix has the same
candidates, so callers may cache a lookup by it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from operator import attrgetter
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from .compile import CompiledRule

_NOTHING: tuple = ()

ROOT: tuple = ()  # the prefix of no segments: where ``*``, ``**`` and ``e*/x`` are filed
Prefix = Union[str, tuple]  # "erp/invoices", or ROOT

SCAN = 8  # a prefix of at most this many rules is read rule by rule; a larger one is split on first use


def literal_prefix(pattern: str) -> tuple[str, ...]:
    """The whole segments of ``pattern`` before the first one holding ``*``, ``?`` or ``[``.

    ``"erp/invoices/*"`` -> ``("erp", "invoices")``; ``"calc"`` -> ``("calc",)``;
    ``"*"``, ``"**"`` and ``"e*/x"`` -> ``()``. Every id the pattern matches starts
    with these segments, each followed by ``/`` or the end of the id.
    """
    key = prefix_key(pattern)
    return ROOT if key is ROOT else tuple(key.split("/"))


def prefix_key(pattern: str) -> Prefix:
    """``literal_prefix(pattern)`` joined by ``/`` (``"erp/invoices"``), or ``ROOT`` when it has no segment.

    (``"/x*"``'s prefix is one empty segment, ``""``: not ``ROOT``.)
    """
    glob = _FIRST_GLOB(pattern)
    if glob is None:
        return pattern
    cut = pattern.rfind("/", 0, glob.start())  # the "/" that starts the segment holding the glob
    return ROOT if cut < 0 else pattern[:cut]


_FIRST_GLOB = re.compile(r"[*?\[]").search


# What the index reads of a rule, read once at load by one C call (seven attribute reads in Python code a rule
# cost more, and a small prefix's lookup reads these tuples, not the rules)
ENTRY_FIELDS = ("key", "kind", "actions", "principal_kind", "principal_name", "effect", "pattern")
_ENTRY = attrgetter(*ENTRY_FIELDS)
Entry = tuple  # (key, kind, actions, principal_kind, principal_name, effect, pattern) of one rule


class _Run:
    """Keys of the rules of one list of a split prefix, in declaration order, by effect."""

    __slots__ = ("denies", "allows")

    def __init__(self, entries: list[Entry]) -> None:
        self.denies = tuple([e[0] for e in entries if e[5] == "deny"]) or _NOTHING
        self.allows = tuple([e[0] for e in entries if e[5] == "allow"]) or _NOTHING


class _Who:
    """Rules of one (action, kind) at one prefix, split by the principal they are about."""

    __slots__ = ("any", "by_role", "by_agent")

    def __init__(self, any_list: list, by_role: dict[str, list], by_agent: dict[str, list]) -> None:
        self.any = _Run(any_list) if any_list else None
        self.by_role = {name: _Run(v) for name, v in by_role.items()}
        self.by_agent = {name: _Run(v) for name, v in by_agent.items()}


class _Split:
    """A large prefix's rules by (action, kind), then principal: built the first time a lookup reaches it."""

    __slots__ = ("rules", "wild")

    def __init__(self, entries: Iterable[Entry]) -> None:
        staged: dict[tuple[str, str], tuple[list, dict, dict]] = {}
        wild = False  # some rule is filed under action "*" or kind "*": lookups read those keys too
        for entry in entries:
            _, kind, actions, principal, name, _, _ = entry
            if kind == "any":
                kind = "*"
            if len(actions) == 1:
                if actions[0] == "any":
                    actions = ("*",)
            else:
                names = {_normal(a): None for a in actions}
                # a request of any action matches "*": the rule goes there only (never twice)
                actions = ("*",) if "*" in names else tuple(names)
            if kind == "*" or actions[0] == "*":
                wild = True
            for action in actions:
                any_list, by_role, by_agent = staged.setdefault((action, kind), ([], {}, {}))
                if principal == "role":
                    by_role.setdefault(name, []).append(entry)
                elif principal == "agent":
                    by_agent.setdefault(name, []).append(entry)
                else:
                    any_list.append(entry)  # rules arrive in declaration order: each list is sorted
        self.rules = {action_kind: _Who(*lists) for action_kind, lists in staged.items()}
        self.wild = wild

    def keys(self, action: str, kind: str, roles: Iterable[str], agent: str | None,
             denies: list, allows: list) -> None:
        """Add the keys of this prefix's rules for the request to ``denies`` and ``allows``."""
        if self.wild:  # (the dict drops a key listed twice, as when the request's action is "*")
            keys: Iterable[tuple[str, str]] = dict.fromkeys(((action, kind), (action, "*"), ("*", kind), ("*", "*")))
        else:
            keys = ((action, kind),)
        for key in keys:
            who = self.rules.get(key)
            if who is None:
                continue
            if who.any is not None:
                denies += who.any.denies
                allows += who.any.allows
            if who.by_role:
                for role in roles:
                    run = who.by_role.get(role)
                    if run is not None:
                        denies += run.denies
                        allows += run.allows
            if agent is not None and who.by_agent:
                run = who.by_agent.get(agent)
                if run is not None:
                    denies += run.denies
                    allows += run.allows


def _normal(name: str) -> str:
    return "*" if name in ("*", "any") else name


class CandidateIndex:
    """Rules grouped by the literal prefix of their id pattern; a prefix's split by (action, kind) and
    principal is built when a lookup first reaches it (see the module docstring)."""

    __slots__ = ("size", "_rules", "_at", "_root", "_split", "_folded", "_self_folded")

    def __init__(self, rules: Iterable[CompiledRule]) -> None:
        """``rules`` in declaration order, each ``key`` its position (as ``compile`` numbers them).

        Rules that can give their entries without being made (``compile.CachedRules``, a warm load) are kept
        as they are: the index reads a rule only when a lookup needs it.
        """
        fields_of = getattr(rules, "fields_of", None)
        if fields_of is None:
            rules = tuple(rules)
            entries: Iterable[Entry] = map(_ENTRY, rules)
        else:
            entries = fields_of(ENTRY_FIELDS)
        self._rules = rules
        if rules and (rules[0].key != 0 or rules[-1].key != len(rules) - 1):
            raise ValueError("the index needs the rules in declaration order, each key its position")
        # prefix -> its rules' entries in declaration order: a list when no prefix goes deeper (a walk down
        # an id stops there), a tuple (maybe empty) when one does
        at: dict[str, list | tuple] = {}
        root: list[Entry] = []
        get = at.get
        search = _FIRST_GLOB
        for entry in entries:
            pattern = entry[6]
            # prefix_key, inline (this loop runs once a rule), "*" found without a regex when it is the only
            # glob character, and without looking back for the "/" when it starts its segment (as in "p/*")
            if "?" in pattern or "[" in pattern:
                star = search(pattern).start()
            else:
                star = pattern.find("*")
            if star < 0:
                key = pattern
            elif star and pattern[star - 1] == "/":
                key = pattern[:star - 1]
            else:
                cut = pattern.rfind("/", 0, star)
                if cut < 0:
                    root.append(entry)
                    continue
                key = pattern[:cut]
            found = get(key)
            if found is None:
                at[key] = [entry]
            else:
                found.append(entry)
        self.size = len(rules)
        for key in [k for k in at if "/" in k]:  # every prefix above a prefix: a tuple of its rules, maybe ()
            cut = key.rfind("/")
            while cut >= 0:
                above = key[:cut]
                found = get(above)
                if type(found) is tuple:  # done already, with the prefixes above it
                    break
                at[above] = _NOTHING if found is None else tuple(found)
                cut = above.rfind("/")
        self._at = at
        self._root = root
        self._split: dict[Prefix, _Split] = {}  # large prefixes split so far (ROOT too, if large)
        self._folded: dict[str, str] | None = None  # prefixes by case-folded spelling (``case_twin``), once read
        self._self_folded = False  # every prefix is its own case fold (set with ``_folded``)

    def node(self, rid: str | None) -> Prefix:
        """The deepest prefix with rules that ``rid``'s segments reach (``ROOT`` when none).

        Every id reaching the same prefix has the same candidates.
        """
        if rid is None:
            return ROOT
        head, sep, _ = rid.partition("/")  # (one call: cheaper than find and a slice)
        found = self._at.get(head)
        if found is None:
            return ROOT
        if type(found) is list:  # a prefix with rules, none deeper
            return head
        owner = head if found else ROOT
        return self._deeper(rid, len(head), owner) if sep else owner

    def _deeper(self, rid: str, cut: int, owner: Prefix) -> Prefix:
        """``node`` below the id's first segment (whose prefix has a deeper one), from the ``/`` at ``cut``."""
        at = self._at
        while True:
            end = rid.find("/", cut + 1)
            head = rid if end < 0 else rid[:end]
            found = at.get(head)
            if found is None:
                return owner
            if found:
                owner = head
            if end < 0 or type(found) is list:
                return owner
            cut = end

    def case_twin(self, rid: str) -> tuple[str, str] | None:
        """(the part of ``rid``, the prefix the rules name) where ``rid`` differs from a prefix only in case.

        Walks down the id as ``node`` does; where it leaves the prefixes, the
        same segments in another case may still name one (``Prod/x`` beside
        ``prod/**``): such an id would pass by every rule filed there. None when
        the id's own spelling is the only one the rules name.
        """
        folded = self._folded
        if folded is None:
            folded = self._fold_prefixes()
        if self._self_folded and rid.isascii() and rid.islower():
            return None  # its parts are their own case folds, as every prefix is: equal folds are equal names
        at = self._at
        end = rid.find("/")
        while True:
            head = rid if end < 0 else rid[:end]
            found = at.get(head, None)
            if found is None:
                named = folded.get(head.casefold())
                return None if named is None else (head, named)
            if end < 0 or type(found) is list:  # the id ends, or no prefix is deeper
                return None
            end = rid.find("/", end + 1)

    def _fold_prefixes(self) -> dict[str, str]:
        """The prefixes by case-folded spelling, once; notes whether every prefix is its own case fold."""
        folded: dict[str, str] = {}
        for key in self._at:
            folded.setdefault(key.casefold(), key)
        self._self_folded = len(folded) == len(self._at) and all(fold == key for fold, key in folded.items())
        self._folded = folded  # built whole, then stored (after the flag): a lost race stores an equal one
        return folded

    def rules_at(self, prefix: Prefix) -> tuple[CompiledRule, ...]:
        """The rules filed under ``prefix`` itself (not above it), in declaration order."""
        entries = self._root if prefix is ROOT else self._at.get(prefix, _NOTHING)
        return tuple([self._rules[e[0]] for e in entries])

    def chain(self, prefix: Prefix) -> tuple[Prefix, ...]:
        """The prefixes with rules from ``ROOT`` down to ``prefix``: where an id reaching it finds its candidates."""
        out: list[Prefix] = [ROOT] if self._root else []
        if prefix is ROOT:
            return tuple(out)
        at = self._at
        cut = prefix.find("/")
        while cut >= 0:
            if at.get(prefix[:cut]):
                out.append(prefix[:cut])
            cut = prefix.find("/", cut + 1)
        if at.get(prefix):
            out.append(prefix)
        return tuple(out)

    def _split_of(self, prefix: Prefix, entries: list | tuple) -> _Split:
        split = self._split.get(prefix)
        if split is None:
            split = _Split(entries)  # built whole, then stored: a lost race stores an equal one
            self._split[prefix] = split
        return split

    def pairs(self, at: Prefix, action: str, kind: str, roles: Iterable[str],
              agent: str | None) -> tuple[tuple[CompiledRule, ...], tuple[CompiledRule, ...]]:
        """(deny rules, allow rules) filed from ``ROOT`` down to ``at`` for this action, kind and principal,
        each in declaration order: what a decision runs."""
        root = self._root
        if at is ROOT:
            chain: Iterable[tuple[Prefix, list | tuple]] = ((ROOT, root),)
        elif "/" not in at:  # the usual: the root's rules and one prefix's
            chain = ((ROOT, root), (at, self._at.get(at, _NOTHING)))
        else:
            chain = [(ROOT, root), *((above, self._at[above]) for above in self.chain(at) if above is not ROOT)]
        denies: list[int] = []  # keys
        allows: list[int] = []
        parts = 0
        for prefix, entries in chain:
            if not entries:
                continue
            parts += 1
            if len(entries) > SCAN:
                self._split_of(prefix, entries).keys(action, kind, roles, agent, denies, allows)
                parts += 1  # (its runs may interleave)
                continue
            for key, rule_kind, actions, principal, name, effect, _ in entries:  # what a split would give
                if rule_kind != kind and rule_kind != "*" and rule_kind != "any":
                    continue
                if action not in actions and "*" not in actions and "any" not in actions:
                    continue
                if principal == "role":
                    if name not in roles:
                        continue
                elif principal == "agent":
                    if agent is None or name != agent:
                        continue
                if effect == "deny":
                    denies.append(key)
                elif effect == "allow":
                    allows.append(key)
        if parts > 1:  # each part in declaration order, no rule in two: sorting merges them (ints: no key)
            denies.sort()
            allows.sort()
        return self._of(denies), self._of(allows)

    def _of(self, keys: list[int]) -> tuple[CompiledRule, ...]:
        if not keys:
            return _NOTHING
        if len(keys) == 1:
            return (self._rules[keys[0]],)
        return tuple(map(self._rules.__getitem__, keys))

    def lookup(self, at: Prefix, action: str, kind: str, roles: Iterable[str],
               agent: str | None) -> tuple[CompiledRule, ...]:
        """``pairs`` as one tuple in declaration order."""
        denies, allows = self.pairs(at, action, kind, roles, agent)
        return tuple(sorted(denies + allows, key=_KEY))


_KEY = attrgetter("key")
