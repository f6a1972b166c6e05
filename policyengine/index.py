"""The candidate index: which rules could apply to a request, found without scanning any list of rules.

Every rule is filed under the literal prefix of its resource-id pattern: the
whole ``/``-separated segments before the first one holding a glob character
(``erp/invoices/*`` under ``"erp/invoices"``; ``calc`` under ``"calc"``; ``*``
and ``e*/x`` under ``ROOT``, no segments). Only ids that start with those
segments can match the pattern, so the rules that could match an id are those
filed under the prefixes of its own segments (``ROOT``, ``"erp"``,
``"erp/invoices"``, ...).

Loading only groups the rules: one dict from prefix string to the rules filed
there, in declaration order (plus, for a prefix with a deeper one below it,
an entry saying so, so a walk down an id stops at the first prefix no rule
has). Nothing else is built for a prefix until a lookup reaches it:

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


class _Run:
    """Rules of one list of a split prefix, in declaration order, by effect."""

    __slots__ = ("denies", "allows")

    def __init__(self, rules: list[CompiledRule]) -> None:
        if len(rules) == 1:  # one rule, one tuple; the other side is the shared ()
            rule = rules[0]
            self.denies: tuple[CompiledRule, ...] = (rule,) if rule.effect == "deny" else _NOTHING
            self.allows: tuple[CompiledRule, ...] = (rule,) if rule.effect == "allow" else _NOTHING
        else:
            self.denies = tuple([r for r in rules if r.effect == "deny"]) or _NOTHING
            self.allows = tuple([r for r in rules if r.effect == "allow"]) or _NOTHING


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

    def __init__(self, rules: Iterable[CompiledRule]) -> None:
        staged: dict[tuple[str, str], tuple[list, dict, dict]] = {}
        wild = False  # some rule is filed under action "*" or kind "*": lookups read those keys too
        for rule in rules:
            kind = rule.kind
            if kind == "any":
                kind = "*"
            actions = rule.actions
            if len(actions) == 1:
                if actions[0] == "any":
                    actions = ("*",)
            else:
                names = {_normal(a): None for a in actions}
                # a request of any action matches "*": the rule goes there only (never twice)
                actions = ("*",) if "*" in names else tuple(names)
            if kind == "*" or actions[0] == "*":
                wild = True
            principal = rule.principal_kind
            for action in actions:
                any_list, by_role, by_agent = staged.setdefault((action, kind), ([], {}, {}))
                if principal == "role":
                    by_role.setdefault(rule.principal_name, []).append(rule)
                elif principal == "agent":
                    by_agent.setdefault(rule.principal_name, []).append(rule)
                else:
                    any_list.append(rule)  # rules arrive in declaration order: each list is sorted
        self.rules = {action_kind: _Who(*lists) for action_kind, lists in staged.items()}
        self.wild = wild

    def runs(self, action: str, kind: str, roles: Iterable[str], agent: str | None,
             denies: list, allows: list) -> None:
        """Append this prefix's rules for the request to ``denies`` and ``allows``, one sorted part per run."""
        if self.wild:  # (the dict drops a key listed twice, as when the request's action is "*")
            keys: Iterable[tuple[str, str]] = dict.fromkeys(((action, kind), (action, "*"), ("*", kind), ("*", "*")))
        else:
            keys = ((action, kind),)
        found: list[_Run] = []
        for key in keys:
            who = self.rules.get(key)
            if who is None:
                continue
            if who.any is not None:
                found.append(who.any)
            if who.by_role:
                for role in roles:
                    run = who.by_role.get(role)
                    if run is not None:
                        found.append(run)
            if agent is not None and who.by_agent:
                run = who.by_agent.get(agent)
                if run is not None:
                    found.append(run)
        for run in found:
            if run.denies:
                denies.append(run.denies)
            if run.allows:
                allows.append(run.allows)


def _normal(name: str) -> str:
    return "*" if name in ("*", "any") else name


class CandidateIndex:
    """Rules grouped by the literal prefix of their id pattern; a prefix's split by (action, kind) and
    principal is built when a lookup first reaches it (see the module docstring)."""

    __slots__ = ("size", "_at", "_root", "_split")

    def __init__(self, rules: Iterable[CompiledRule], patterns: Iterable[str]) -> None:
        # prefix -> its rules in declaration order: a list when no prefix goes deeper (a walk down an id
        # stops there), a tuple (maybe empty) when one does
        at: dict[str, list | tuple] = {}
        root: list[CompiledRule] = []
        get = at.get
        search = _FIRST_GLOB
        for rule, pattern in zip(rules, patterns, strict=True):
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
                    root.append(rule)
                    continue
                key = pattern[:cut]
            found = get(key)
            if found is None:
                at[key] = [rule]
            else:
                found.append(rule)
        self.size = len(root) + sum(map(len, at.values()))
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

    def rules_at(self, prefix: Prefix) -> tuple[CompiledRule, ...]:
        """The rules filed under ``prefix`` itself (not above it), in declaration order."""
        return tuple(self._root if prefix is ROOT else self._at.get(prefix, _NOTHING))

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

    def _parts(self, prefix: Prefix, rules: list | tuple, action: str, kind: str, roles: Iterable[str],
               agent: str | None, denies: list, allows: list) -> None:
        """Append the rules filed under ``prefix`` that the request could match, as sorted parts by effect."""
        if len(rules) > SCAN:
            split = self._split.get(prefix)
            if split is None:
                split = _Split(rules)  # built whole, then stored: a lost race stores an equal one
                self._split[prefix] = split
            split.runs(action, kind, roles, agent, denies, allows)
            return
        d = a = None
        for rule in rules:  # what a split would give, read from the rules themselves
            rule_kind = rule.kind
            if rule_kind != kind and rule_kind != "*" and rule_kind != "any":
                continue
            actions = rule.actions
            if action not in actions and "*" not in actions and "any" not in actions:
                continue
            principal = rule.principal_kind
            if principal == "role":
                if rule.principal_name not in roles:
                    continue
            elif principal == "agent":
                if agent is None or rule.principal_name != agent:
                    continue
            if rule.effect == "deny":
                if d is None:
                    d = [rule]
                else:
                    d.append(rule)
            elif a is None:
                a = [rule]
            else:
                a.append(rule)
        if d is not None:
            denies.append(d)
        if a is not None:
            allows.append(a)

    def pairs(self, at: Prefix, action: str, kind: str, roles: Iterable[str],
              agent: str | None) -> tuple[tuple[CompiledRule, ...], tuple[CompiledRule, ...]]:
        """(deny rules, allow rules) filed from ``ROOT`` down to ``at`` for this action, kind and principal,
        each in declaration order: what a decision runs."""
        denies: list = []
        allows: list = []
        if self._root:
            self._parts(ROOT, self._root, action, kind, roles, agent, denies, allows)
        if at is not ROOT:
            table = self._at
            if "/" in at:
                cut = at.find("/")
                while cut >= 0:
                    above = table.get(at[:cut])
                    if above:
                        self._parts(at[:cut], above, action, kind, roles, agent, denies, allows)
                    cut = at.find("/", cut + 1)
            rules = table.get(at)
            if rules:
                self._parts(at, rules, action, kind, roles, agent, denies, allows)
        return _merged(denies), _merged(allows)

    def lookup(self, at: Prefix, action: str, kind: str, roles: Iterable[str],
               agent: str | None) -> tuple[CompiledRule, ...]:
        """``pairs`` as one tuple in declaration order."""
        denies, allows = self.pairs(at, action, kind, roles, agent)
        return tuple(sorted(denies + allows, key=_KEY))


def _merged(parts: list) -> tuple[CompiledRule, ...]:
    """One tuple in declaration order from parts each in declaration order, no rule in two of them (one
    prefix, one principal and one (action, kind) that a request can match: see ``_Split``)."""
    if not parts:
        return _NOTHING
    if len(parts) == 1:
        return tuple(parts[0])
    parts.sort(key=_FIRST_KEY)
    last = -1
    for part in parts:
        if part[0].key <= last:  # key ranges overlap: a real merge (keys are unique, so by key alone)
            return tuple(sorted([r for part in parts for r in part], key=_KEY))
        last = part[-1].key
    # one part after another in declaration order (as a root rule before or after a prefix's): concatenate
    return tuple([r for part in parts for r in part])


_KEY = attrgetter("key")


def _FIRST_KEY(part) -> int:
    return part[0].key
