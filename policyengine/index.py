"""The candidate index: which rules could apply to a request, found without scanning any list of rules.

Every rule is filed under the literal prefix of its resource-id pattern: the
whole ``/``-separated segments before the first one holding a glob character
(``erp/invoices/*`` under ``erp`` > ``invoices``; ``calc`` under ``calc``;
``*`` and ``e*/x`` at the root). Only ids that start with those segments can
match the pattern, so the rules that could match an id are those filed at the
nodes its own segments walk through (the root, ``erp``, ``erp/invoices``, ...).

Each node splits its rules by (action, kind), then by who they are about
(any principal, a role, an agent), as the ``(action, kind) -> Bucket`` index
of ``compile`` does. A lookup walks the id's segments down the trie (one dict
read each) and reads, at each node with rules, the lists for the request's
action, kind, roles and agent. Its cost depends on the id's depth and the
request's roles, not on how many rules the policy holds, and an id never seen
before costs what a known one does.

``CandidateIndex.node`` names the deepest node with rules on an id's path:
every id reaching the same node has the same candidates, so callers may cache
a lookup by it (an id under no literal prefix of any rule maps to the root).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from operator import attrgetter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .compile import CompiledRule

_NOTHING: tuple = ()


def literal_prefix(pattern: str) -> tuple[str, ...]:
    """The whole segments of ``pattern`` before the first one holding ``*``, ``?`` or ``[``.

    ``"erp/invoices/*"`` -> ``("erp", "invoices")``; ``"calc"`` -> ``("calc",)``;
    ``"*"``, ``"**"`` and ``"e*/x"`` -> ``()``. Every id the pattern matches starts
    with these segments, each followed by ``/`` or the end of the id.
    """
    glob = _FIRST_GLOB(pattern)
    if glob is None:
        return tuple(pattern.split("/"))
    head = pattern[:glob.start()]
    if "/" not in head:  # the first segment holds it
        return _NOTHING
    return tuple(head.rpartition("/")[0].split("/"))  # the segments before the "/" that starts its segment


_FIRST_GLOB = re.compile(r"[*?\[]").search


class _Run:
    """Rules of one list in declaration order, split by effect when the index is built.

    ``lo``/``hi`` are its first and last keys: runs whose key ranges do not
    overlap merge by concatenation, without sorting (reading every key). A run
    holds the rules themselves: a decision reads a rule's ``reason`` only when
    the rule matched, so the reasons of rules that never decide are never built.
    """

    __slots__ = ("denies", "allows", "lo", "hi")

    def __init__(self, rules: list[CompiledRule]) -> None:
        if len(rules) == 1:  # the usual run: one rule, one tuple; the other side is the shared ()
            rule = rules[0]
            self.denies: tuple[CompiledRule, ...] = (rule,) if rule.effect == "deny" else _NOTHING
            self.allows: tuple[CompiledRule, ...] = (rule,) if rule.effect == "allow" else _NOTHING
        else:
            self.denies = tuple([r for r in rules if r.effect == "deny"]) or _NOTHING
            self.allows = tuple([r for r in rules if r.effect == "allow"]) or _NOTHING
        self.lo = rules[0].key
        self.hi = rules[-1].key


class _Who:
    """Rules of one (action, kind) at one node, split by the principal they are about."""

    __slots__ = ("any", "by_role", "by_agent")

    def __init__(self, any_list: list, by_role: dict[str, list], by_agent: dict[str, list]) -> None:
        self.any = _Run(any_list) if any_list else None
        self.by_role = {name: _Run(v) for name, v in by_role.items()}
        self.by_agent = {name: _Run(v) for name, v in by_agent.items()}


class _Node:
    """One literal segment of some patterns: its children and the rules filed here."""

    __slots__ = ("children", "rules", "chain", "owner")

    def __init__(self) -> None:
        # None once the index is built if no pattern goes deeper: a lookup stops without reading a dict
        self.children: dict[str, _Node] | None = {}
        self.rules: dict[tuple[str, str], _Who] = {}  # (action, kind) -> rules filed at this node
        # set once the index is built: the nodes with rules from the root down to this one, and the
        # deepest of them (this node or an ancestor; the root when none), read without touching ``rules``
        self.chain: tuple[_Node, ...] = ()
        self.owner: _Node = self


def _normal(name: str) -> str:
    return "*" if name in ("*", "any") else name


class CandidateIndex:
    """Rules filed by the literal prefix of their id pattern, then (action, kind), then principal."""

    __slots__ = ("root", "size", "wild")

    def __init__(self, rules: Iterable[CompiledRule], patterns: Iterable[str]) -> None:
        self.root = root = _Node()
        size = 0
        wild = False  # some rule is filed under action "*" or kind "*": lookups read those keys too
        # per node with rules: (action, kind) -> (any, by role, by agent) lists of rules
        staged: dict[int, tuple[_Node, dict[tuple[str, str], tuple[list, dict, dict]]]] = {}
        for rule, pattern in zip(rules, patterns, strict=True):
            size += 1
            node = root
            for segment in literal_prefix(pattern):
                child = node.children.get(segment)
                if child is None:
                    child = node.children[segment] = _Node()
                node = child
            found = staged.get(id(node))
            if found is None:
                found = staged[id(node)] = (node, {})
            per_node = found[1]
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
                any_list, by_role, by_agent = per_node.setdefault((action, kind), ([], {}, {}))
                if principal == "role":
                    by_role.setdefault(rule.principal_name, []).append(rule)
                elif principal == "agent":
                    by_agent.setdefault(rule.principal_name, []).append(rule)
                else:
                    any_list.append(rule)  # rules arrive in declaration order: each list is sorted
        self.size = size
        self.wild = wild
        for node, per_node in staged.values():
            node.rules = {action_kind: _Who(*lists) for action_kind, lists in per_node.items()}
        stack: list[tuple[_Node, tuple[_Node, ...], _Node]] = [(self.root, (), self.root)]
        while stack:  # no recursion: a pattern may have many segments
            node, above, owner = stack.pop()
            node.chain = (*above, node) if node.rules else above
            node.owner = node if node.rules else owner
            if node.children:
                stack.extend((child, node.chain, node.owner) for child in node.children.values())
            elif node is not self.root:
                node.children = None

    def node(self, rid: str | None) -> _Node:
        """The deepest node with rules that ``rid``'s segments reach (the root when none).

        Every id reaching the same node has the same candidates: its ``chain``.
        """
        root = self.root
        if rid is None or not root.children:
            return root
        head, sep, rest = rid.partition("/")
        node = root.children.get(head)
        if node is None:
            return root
        while sep:
            children = node.children
            if children is None:
                break
            head, sep, rest = rest.partition("/")
            child = children.get(head)
            if child is None:
                break
            node = child
        return node.owner

    def _runs(self, at: _Node, action: str, kind: str, roles: Iterable[str], agent: str | None) -> list[_Run]:
        if self.wild:  # (the dict drops a key listed twice, as when the request's action is "*")
            keys: Iterable[tuple[str, str]] = dict.fromkeys(((action, kind), (action, "*"), ("*", kind), ("*", "*")))
        else:
            keys = ((action, kind),)
        runs: list[_Run] = []
        for node in at.chain:
            for key in keys:
                who = node.rules.get(key)
                if who is None:
                    continue
                if who.any is not None:
                    runs.append(who.any)
                if who.by_role:
                    for role in roles:
                        found = who.by_role.get(role)
                        if found is not None:
                            runs.append(found)
                if agent is not None and who.by_agent:
                    found = who.by_agent.get(agent)
                    if found is not None:
                        runs.append(found)
        return runs

    def lookup(self, at: _Node, action: str, kind: str, roles: Iterable[str],
               agent: str | None) -> tuple[CompiledRule, ...]:
        """Rules filed on the way to ``at`` for this action, kind and principal, in declaration order."""
        return tuple(sorted([r for run in self._runs(at, action, kind, roles, agent) for r in (*run.denies, *run.allows)],
                            key=_KEY))

    def pairs(self, at: _Node, action: str, kind: str, roles: Iterable[str],
              agent: str | None) -> tuple[tuple[CompiledRule, ...], tuple[CompiledRule, ...]]:
        """``lookup`` split into (deny rules, allow rules), each in declaration order: what a decision runs."""
        runs = self._runs(at, action, kind, roles, agent)
        if not runs:
            return _NOTHING, _NOTHING
        if len(runs) == 1:
            return runs[0].denies, runs[0].allows
        if len(runs) == 2:  # the usual miss (a root rule and a node's): no sort; adding () returns the other tuple
            first, second = runs
            if second.hi < first.lo:
                first, second = second, first
            if first.hi < second.lo:
                return first.denies + second.denies, first.allows + second.allows
        # Each run is in declaration order and no rule is in two of them (one node, one principal, and
        # one (action, kind) that a request can match: see __init__), so sorting the runs is a merge.
        runs.sort(key=_LO)
        last = -1
        for run in runs:
            if run.lo <= last:  # key ranges overlap: a real merge (keys are unique, so by key alone)
                return (tuple(sorted([r for run in runs for r in run.denies], key=_KEY)),
                        tuple(sorted([r for run in runs for r in run.allows], key=_KEY)))
            last = run.hi
        # one run after another in declaration order (as a root rule before or after a node's): concatenate
        return (tuple([r for run in runs for r in run.denies]),
                tuple([r for run in runs for r in run.allows]))


_KEY = attrgetter("key")
_LO = attrgetter("lo")
