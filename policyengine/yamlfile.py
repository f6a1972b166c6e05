"""The one way configuration and test files in YAML are read: safe, bounded, and clear when wrong.

Every YAML file the engine reads (user directory, provider configuration,
masking config, policy test files) goes through here, so they all:

* are UTF-8 text (a byte order mark is skipped); other bytes are one error
  naming the file and the byte offset, never a traceback;
* are parsed by PyYAML's safe loader (libyaml's when available): no Python
  objects, only plain data;
* may use anchors, aliases and merge keys (``<<: *defaults``) within bounds: at
  most ``MAX_ALIASES`` alias uses and ``MAX_NODES`` nodes once aliases are
  expanded, so a 1 KB "billion laughs" file is refused at once instead of
  expanding for minutes; a recursive alias is refused too;
* refuse a mapping that gives one key twice (``principal:`` twice in a key's
  entry): YAML forbids it, and PyYAML would keep the last one silently, so a
  reader of the file and the engine could see two different settings;
* refuse the tags ``!!binary``, ``!!set``, ``!!omap`` and ``!!pairs``: their
  values (bytes, sets, lists of pairs) are no plain data;
* refuse the plain (unquoted) values that only YAML 1.1 reads as something
  other than text: ``yes``/``no``/``on``/``off`` (booleans there, strings in
  YAML 1.2: ``country: NO`` was ``false``), numbers with a leading zero (octal:
  the user ``0100`` was the user ``64``) and with colons (base 60: ``1:30`` was
  ``90``). Quote them, or write ``true``/``false`` and plain decimals;
* fail with ``YamlFileError`` whose text is ``FILE:LINE: what is wrong``
  (a merge key with a plain value, a tab, an unclosed bracket...).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_ALIASES = 100
MAX_NODES = 100_000
LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

__all__ = ["LOADER", "MAX_ALIASES", "MAX_NODES", "YamlFileError", "compose", "load", "loads", "read_text"]


class YamlFileError(ValueError):
    """A YAML file that cannot be read or is not acceptable; ``str()`` is ``FILE:LINE: message``."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path, self.line, self.message = path, line, message
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")


def read_text(path: str | os.PathLike[str], what: str = "YAML file") -> str:
    """The file's text; ``YamlFileError`` when it cannot be read or is not UTF-8."""
    where = os.fspath(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise YamlFileError(where, None, f"cannot read {what}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise YamlFileError(where, line, f"{what} is not UTF-8 text (byte {exc.start})") from None


def _line(exc: BaseException, text: str) -> int | None:
    """The 1-based line of the problem; libyaml puts an error at the end of input one past the last line."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return min(mark.line + 1, text.count("\n") + 1) if mark is not None else None


def _problem(exc: BaseException) -> str:
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    text = problem or str(exc).splitlines()[0]
    return f"{context}: {text}" if context and problem else text


def _check_bounds(root: Node, where: str, what: str) -> None:
    """Refuse more than ``MAX_ALIASES`` alias uses, recursive aliases and more than ``MAX_NODES`` expanded nodes."""
    size: dict[int, int] = {}
    visiting: set[int] = set()
    aliases = 0
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            visiting.discard(key)
            children = _children(node)
            total = 1 + sum(size[id(c)] for c in children)
            if total > MAX_NODES:
                raise YamlFileError(where, node.start_mark.line + 1,
                                    f"{what} expands to more than {MAX_NODES:,} values through aliases; refused")
            size[key] = total
            continue
        if key in size:
            aliases += 1
            if aliases > MAX_ALIASES:
                raise YamlFileError(where, node.start_mark.line + 1,
                                    f"{what} uses more than {MAX_ALIASES} aliases (*name); refused")
            continue
        if key in visiting:
            raise YamlFileError(where, node.start_mark.line + 1, f"{what} has an alias that contains itself")
        if node.tag in _NOT_JSON:
            raise YamlFileError(where, node.start_mark.line + 1,
                                f"{what}: {_NOT_JSON[node.tag]} is no JSON value (bytes, sets and pairs are not "
                                "plain data); refused")
        visiting.add(key)
        if isinstance(node, MappingNode):
            _check_unique_keys(node, where, what)
        elif isinstance(node, ScalarNode) and not node.style:  # plain: None in PyYAML, "" in libyaml
            _check_plain_scalar(node, where, what)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in visiting:
                raise YamlFileError(where, child.start_mark.line + 1, f"{what} has an alias that contains itself")
            stack.append((child, False))


_MERGE = "tag:yaml.org,2002:merge"
# Tags the safe loader builds into values no JSON holds (bytes, sets, lists of pairs): a reader expecting plain
# data would fail on them with a traceback, or take a set for a mapping.
_NOT_JSON = {f"tag:yaml.org,2002:{name}": f"!!{name}" for name in ("binary", "set", "omap", "pairs")}


def _check_unique_keys(node: MappingNode, where: str, what: str) -> None:
    """Refuse a mapping that gives one (scalar) key twice; keys a merge (``<<``) brings in may be overridden."""
    seen: set[tuple[str, str]] = set()
    for key, _ in node.value:
        if not isinstance(key, ScalarNode) or key.tag == _MERGE:
            continue
        if (key.tag, key.value) in seen:
            raise YamlFileError(where, key.start_mark.line + 1,
                                f"{what} gives the key {key.value!r} twice in one mapping; refused")
        seen.add((key.tag, key.value))


_BOOL = "tag:yaml.org,2002:bool"
_NUMBERS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_YAML12_BOOLS = frozenset(("true", "True", "TRUE", "false", "False", "FALSE"))
_OCTAL = re.compile(r"[-+]?0[0-9_]+")


def _check_plain_scalar(node: ScalarNode, where: str, what: str) -> None:
    """Refuse a plain value YAML 1.1 (PyYAML) reads otherwise than YAML 1.2 and a person do."""
    value = node.value
    if node.tag == _BOOL and value not in _YAML12_BOOLS:
        truth = "true" if value.lower() in ("yes", "on") else "false"
        problem = f"{value} is the boolean {truth} in YAML 1.1 and text in YAML 1.2; write {truth}, or quote it"
    elif node.tag in _NUMBERS and ":" in value:
        problem = f"{value} is a number in base 60 in YAML 1.1; quote it"
    elif node.tag in _NUMBERS and _OCTAL.fullmatch(value):
        problem = f"{value} is an octal number in YAML 1.1; quote it, or write it without the leading 0"
    else:
        return
    raise YamlFileError(where, node.start_mark.line + 1, f"{what}: {problem}")


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def compose(text: str, path: str | os.PathLike[str], what: str = "YAML file") -> tuple[Any, Node | None]:
    """(loader, root node) of ``text``, bounds checked; the loader constructs values of its nodes."""
    where = os.fspath(path)
    loader = LOADER(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        raise YamlFileError(where, _line(exc, text), f"{what} is not valid YAML: {_problem(exc)}") from None
    if root is not None:
        _check_bounds(root, where, what)
    return loader, root


def loads(text: str, path: str | os.PathLike[str] = "<string>", what: str = "YAML file") -> Any:
    """Plain data (dicts, lists, scalars) of ``text``; ``YamlFileError`` names ``path`` and the line."""
    loader, root = compose(text, path, what)
    if root is None:
        return None
    try:
        return loader.construct_document(root)
    except yaml.YAMLError as exc:
        raise YamlFileError(os.fspath(path), _line(exc, text), f"{what} is not valid YAML: {_problem(exc)}") from None
    except RecursionError:
        raise YamlFileError(os.fspath(path), None, f"{what} is nested too deeply") from None


def load(path: str | os.PathLike[str], what: str = "YAML file") -> Any:
    """Plain data of the YAML file at ``path`` (None for an empty file)."""
    return loads(read_text(path, what), path, what)
