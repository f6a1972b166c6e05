"""The gateway's configuration files: ``gateway.yaml``, the virtual keys and the providers.

Paths inside ``gateway.yaml`` (rules, keys, providers) are relative to that
file; ``db``, ``key`` and ``registry`` to the working directory, as for every command.
Every problem is one ``GatewayConfigError`` line naming the file and field.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import yamlfile
from ..ast import attribute_paths
from ..evaluate import PRINCIPAL_KEYS
from ..network import stays_private
from ..store.files import DEFAULT_DB_PATH, DEFAULT_KEY_PATH
from .guards import PII_TYPES, SECRET_TYPES, GuardConfig


class GatewayConfigError(Exception):
    """A configuration file the gateway cannot start with (one line)."""


def hash_key(key: str) -> str:
    """How a virtual key is stored: the hex sha256 of its text."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _load(path: Path, what: str) -> dict[str, Any]:
    try:
        doc = yamlfile.load(path, what)
    except yamlfile.YamlFileError as error:
        raise GatewayConfigError(str(error)) from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise GatewayConfigError(f"{path}: the {what} must be a YAML mapping")
    return doc


def _number(value: Any, where: str, *, minimum: float = 0, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise GatewayConfigError(f"{where}: must be a {'whole ' if integer else ''}number >= {minimum:g}")
    if integer and value != int(value):
        raise GatewayConfigError(f"{where}: must be a whole number")
    return float(value)


@dataclass(frozen=True)
class Limits:
    """Per-minute limits of one key or team from the keys file (``limit`` clauses on allow rules add to them)."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None


def _limits(doc: Any, where: str) -> Limits:
    """An empty ``limits:`` or ``requests_per_minute:`` (YAML null) is refused: read as "no limit" it lifted one."""
    if not isinstance(doc, dict):
        raise GatewayConfigError(f"{where}: must be a mapping with requests_per_minute and/or tokens_per_minute")
    unknown = sorted(set(doc) - {"requests_per_minute", "tokens_per_minute"})
    if unknown:
        raise GatewayConfigError(f"{where}: unknown field {unknown[0]!r}")
    values = {k: _number(v, f"{where}.{k}", minimum=1, integer=True) for k, v in doc.items()}
    return Limits(**values)


@dataclass(frozen=True)
class VirtualKey:
    """Who a virtual key speaks for, and the request defaults every call made with it carries."""

    key_id: str  # first 12 hex of the hash: names the key in logs and audit records
    name: str
    principal: Mapping[str, Any]
    team: str | None
    workflow: str | None
    data: Mapping[str, Any]
    context: Mapping[str, Any]
    limits: Limits


_KEY_FIELDS = {"sha256", "name", "principal", "team", "workflow", "data", "context", "limits"}


def load_keys(path: Path) -> tuple[dict[str, VirtualKey], dict[str, Limits]]:
    """``{sha256 hex: key}`` and the per-team limits from a keys file."""
    doc = _load(path, "keys file")
    unknown = sorted(set(doc) - {"keys", "teams"})
    if unknown:  # a misspelt `teams:` dropped every team's limits
        raise GatewayConfigError(f"{path}: unknown field {unknown[0]!r} (known: keys, teams)")
    entries = doc.get("keys")
    if not isinstance(entries, list) or not entries:
        raise GatewayConfigError(f"{path}: keys: must be a non-empty list")
    keys: dict[str, VirtualKey] = {}
    for index, entry in enumerate(entries):
        where = f"{path}: keys[{index}]"
        if not isinstance(entry, dict):
            raise GatewayConfigError(f"{where}: must be a mapping")
        unknown = sorted(set(entry) - _KEY_FIELDS)
        if unknown:
            raise GatewayConfigError(f"{where}: unknown field {unknown[0]!r} (keys are stored hashed: sha256)")
        digest = entry.get("sha256")
        if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise GatewayConfigError(f"{where}.sha256: must be the 64 lowercase hex digits of the key's sha256")
        if digest in keys:
            raise GatewayConfigError(f"{where}.sha256: the same key is listed twice")
        principal = _principal(entry.get("principal"), f"{where}.principal")
        for name in ("data", "context"):
            if not isinstance(entry.get(name, {}), dict):
                raise GatewayConfigError(f"{where}.{name}: must be a mapping")
        for name in ("team", "workflow", "name"):
            if entry.get(name) is not None and not isinstance(entry[name], str):
                raise GatewayConfigError(f"{where}.{name}: must be a string")
        keys[digest] = VirtualKey(
            key_id=digest[:12], name=entry.get("name") or digest[:12], principal=principal,
            team=entry.get("team"), workflow=entry.get("workflow"), data=dict(entry.get("data") or {}),
            context=dict(entry.get("context") or {}),
            limits=_limits(entry["limits"], f"{where}.limits") if "limits" in entry else Limits())
    teams_doc = doc.get("teams", {})
    if not isinstance(teams_doc, dict):
        raise GatewayConfigError(f"{path}: teams: must be a mapping of team -> {{limits: ...}}")
    teams: dict[str, Limits] = {}
    for team, spec in teams_doc.items():
        # only `limits:` is read: a misspelt one (`limit:`, or the limits written without it) left the team unlimited
        if not isinstance(spec, dict) or set(spec) != {"limits"}:
            raise GatewayConfigError(f"{path}: teams.{team}: must be a mapping with one field, limits")
        teams[str(team)] = _limits(spec["limits"], f"{path}: teams.{team}.limits")
    named = {key.team for key in keys.values()}
    unused = sorted(team for team in teams if team not in named)
    if unused:  # its limits bind no key: the team is misspelt here or in the key meant to be under them
        raise GatewayConfigError(f"{path}: teams.{unused[0]}: no key has this team, so its limits bind no call "
                                 f"(misspelt?)")
    return keys, teams


def _principal(doc: Any, where: str) -> dict[str, Any]:
    """A key's principal as a policy request gives it; checked here, so that a misspelt ``type`` (an agent key
    read as a person's, who may approve held calls) or ``roles`` stops the start instead of every call."""
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not doc["id"]:
        raise GatewayConfigError(f"{where}: must be a mapping with an id")
    unknown = sorted(set(doc) - PRINCIPAL_KEYS)  # the fields the engine reads
    if unknown:
        raise GatewayConfigError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(PRINCIPAL_KEYS))})")
    if doc.get("type", "user") not in ("user", "agent"):
        raise GatewayConfigError(f"{where}.type: must be user or agent")
    roles = doc.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) and r for r in roles):
        raise GatewayConfigError(f"{where}.roles: must be a list of role names")
    if not isinstance(doc.get("attrs", {}), dict):
        raise GatewayConfigError(f"{where}.attrs: must be a mapping")
    return dict(doc)


_GATEWAY_CONTEXT = frozenset({"tokens", "guard", "api", "workflow", "team"})  # what the gateway itself puts there


def check_defaults(keys: Mapping[str, VirtualKey], named: frozenset[tuple[str, str]], path: Path) -> None:
    """Refuse a key's ``data`` or ``context`` field that no rule or schema names: most likely misspelt
    (``clasification``), it would leave the rule that reads the real name reading nothing, and a deny rule
    guarded by ``data has classification`` then lets restricted data go offsite."""
    for key in keys.values():
        for root, given in (("data", key.data), ("context", key.context)):
            for name in given:
                if (root, name) not in named and not (root == "context" and name in _GATEWAY_CONTEXT):
                    raise GatewayConfigError(f"{path}: key {key.name}: {root}.{name}: no rule or schema of the rules "
                                             f"names it (misspelt?)")


def check_guards_read(guards: GuardConfig, policy_set: Any) -> None:
    """Refuse a guard that is off while a rule reads what it finds: its ``pii``, ``secrets`` or
    ``prompt_injection`` would read empty or 0 for every call, and a deny on it (``no_prompt_injection``)
    would never fire. (``toxicity`` off leaves its attribute absent, which such a rule denies on.)"""
    for path in attribute_paths(policy_set.expression_roots()):
        parts = ".".join(path.parts).split(".")
        if path.root != "context" or parts[:1] != ["guard"]:
            continue
        name = parts[2] if parts[1:2] == ["response"] and len(parts) > 2 else parts[1] if len(parts) > 1 else None
        if name in ("pii", "secrets", "prompt_injection") and not getattr(guards, name):
            raise GatewayConfigError(f"guards.{name}: off, but {path.span.file}:{path.span.line} reads "
                                     f"context.{'.'.join(parts)}: it would read nothing found for every call")


@dataclass(frozen=True)
class Upstream:
    """Where one model is served: an OpenAI-compatible base URL, or the local simulator (``base_url`` None)."""

    model: str
    base_url: str | None
    upstream_model: str
    api_key_env: str | None
    timeout_s: float
    retries: int
    fallbacks: tuple[str, ...]
    max_tokens: int  # assumed completion size when the caller gives no max_tokens (the budget estimate)


_UPSTREAM_FIELDS = {"base_url", "model", "api_key_env", "timeout_s", "retries", "fallbacks", "max_tokens"}


def load_providers(path: Path | None) -> dict[str, Upstream]:
    """Model -> upstream from PROVIDERS.yaml; models it does not list are served by the simulator."""
    if path is None:
        return {}
    doc = _load(path, "providers file")
    unknown = sorted(set(doc) - {"defaults", "models"})
    if unknown:  # a misspelt `models:` sent every model to the simulator
        raise GatewayConfigError(f"{path}: unknown field {unknown[0]!r} (known: defaults, models)")
    defaults = doc.get("defaults") or {}
    models = doc.get("models") or {}
    if not isinstance(defaults, dict) or not isinstance(models, dict):
        raise GatewayConfigError(f"{path}: defaults and models must be mappings")
    out: dict[str, Upstream] = {}
    for model, spec in models.items():
        where = f"{path}: models.{model}"
        if not isinstance(spec or {}, dict):
            raise GatewayConfigError(f"{where}: must be a mapping (base_url, model, api_key_env, ...)")
        spec = {**defaults, **(spec or {})}
        unknown = sorted(set(spec) - _UPSTREAM_FIELDS)
        if unknown:
            raise GatewayConfigError(f"{where}: unknown field {unknown[0]!r}")
        base_url = spec.get("base_url")
        if base_url in (None, "local", "simulator"):
            base_url = None
        elif not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")) \
                or not urlsplit(base_url).hostname:
            raise GatewayConfigError(f"{where}.base_url: must be an http(s) URL or 'local' (the simulator)")
        elif spec.get("api_key_env") is not None and not stays_private(base_url):
            raise GatewayConfigError(f"{where}.base_url: plain http to {urlsplit(base_url).hostname} would carry "
                                     f"the API key of api_key_env in clear; use https (http only to loopback)")
        fallbacks = spec.get("fallbacks") or []
        if not isinstance(fallbacks, list) or not all(isinstance(f, str) for f in fallbacks):
            raise GatewayConfigError(f"{where}.fallbacks: must be a list of model names")
        env = spec.get("api_key_env")
        if env is not None and not isinstance(env, str):
            raise GatewayConfigError(f"{where}.api_key_env: must be the name of an environment variable")
        out[str(model)] = Upstream(
            model=str(model), base_url=base_url.rstrip("/") if base_url else None,
            upstream_model=str(spec.get("model") or model), api_key_env=env,
            timeout_s=_number(spec.get("timeout_s", 30), f"{where}.timeout_s", minimum=0.001),
            retries=int(_number(spec.get("retries", 1), f"{where}.retries", integer=True)),
            fallbacks=tuple(fallbacks),
            max_tokens=int(_number(spec.get("max_tokens", 512), f"{where}.max_tokens", minimum=1, integer=True)))
    return out


def _guards(doc: Any, where: str) -> GuardConfig:
    if doc is None:
        return GuardConfig()
    if not isinstance(doc, dict):
        raise GatewayConfigError(f"{where}: must be a mapping")
    unknown = sorted(set(doc) - {"pii", "secrets", "prompt_injection", "mask", "timeout_s", "toxicity"})
    if unknown:
        raise GatewayConfigError(f"{where}: unknown field {unknown[0]!r}")
    masked = doc.get("mask", [])  # an empty `mask:` is null, refused: `mask: []` says "mask nothing" on purpose
    known = set(PII_TYPES) | set(SECRET_TYPES)
    if not isinstance(masked, list) or any(not isinstance(m, str) or m not in known for m in masked):
        raise GatewayConfigError(f"{where}.mask: must be a list of entity types among {', '.join(sorted(known))}")
    switches = {name: doc.get(name, name != "toxicity") for name in ("pii", "secrets", "prompt_injection", "toxicity")}
    for name, value in switches.items():
        if not isinstance(value, bool):  # an empty `pii:` is null: read as false, it turned the guard off
            raise GatewayConfigError(f"{where}.{name}: must be true or false")
    toxicity = switches["toxicity"]
    for kind in masked:  # a type masked by a detector that is off was found nowhere, so masked nowhere
        detector = "pii" if kind in PII_TYPES else "secrets"
        if not switches[detector]:
            raise GatewayConfigError(f"{where}.mask: {kind} is found by the {detector} guard, which is off; "
                                     f"nothing would be masked")
    if toxicity:
        from .toxicity import ToxicityUnavailable, scorer

        try:
            scorer()  # load the model now: a missing package stops the start, not a call
        except ToxicityUnavailable as error:
            raise GatewayConfigError(f"{where}.toxicity: {error}") from None
    return GuardConfig(pii=switches["pii"], secrets=switches["secrets"],
                       prompt_injection=switches["prompt_injection"], mask=frozenset(masked),
                       timeout_s=_number(doc.get("timeout_s", 0.5), f"{where}.timeout_s", minimum=1e-6),
                       toxicity=toxicity)


@dataclass(frozen=True)
class GatewayConfig:
    rules: tuple[str, ...]
    keys: str
    providers: str | None = None
    db: str = str(DEFAULT_DB_PATH)
    key: str = str(DEFAULT_KEY_PATH)
    ledger: str | None = None  # DuckDB file of the budget ledger; None: in memory (budgets reset on restart)
    rate_limits: str | None = None  # redis://... to share per-minute limits across processes; None: in this process
    host: str = "127.0.0.1"
    port: int = 4000
    guards: GuardConfig = field(default_factory=GuardConfig)
    audit_prompts: str = "hash"  # "hash" (sha256 only) or "masked" (text with every finding redacted)
    hold_for_approval: float = 0  # seconds a call needing an approval waits for one (0: answered 403 at once)
    registry: str | None = None  # audit database whose model_version events name the aliases; None: no versions
    max_body: int = 4 << 20
    timeout: float = 30.0


_CONFIG_FIELDS = {"rules", "keys", "providers", "db", "key", "ledger", "rate_limits", "host", "port", "guards",
                  "audit_prompts", "max_body", "hold_for_approval", "registry"}


def load_config(path: str) -> dict[str, Any]:
    """The settings of a ``gateway.yaml`` as keyword arguments of ``GatewayConfig`` (paths resolved)."""
    file = Path(path)
    doc = _load(file, "gateway config")
    unknown = sorted(set(doc) - _CONFIG_FIELDS)
    if unknown:
        raise GatewayConfigError(f"{file}: unknown field {unknown[0]!r} (known: {', '.join(sorted(_CONFIG_FIELDS))})")
    base = file.parent
    out: dict[str, Any] = {}
    if "rules" in doc:
        rules = doc["rules"] if isinstance(doc["rules"], list) else [doc["rules"]]
        if not rules or not all(isinstance(r, str) for r in rules):
            raise GatewayConfigError(f"{file}: rules: must be a path or a list of paths")
        out["rules"] = tuple(str(base / r) for r in rules)
    for name in ("keys", "providers"):
        if name in doc:
            if not isinstance(doc[name], str):
                raise GatewayConfigError(f"{file}: {name}: must be a path")
            out[name] = str(base / doc[name])
    for name in ("db", "key", "ledger", "rate_limits", "host", "audit_prompts", "registry"):
        if name in doc:
            if not isinstance(doc[name], str):
                raise GatewayConfigError(f"{file}: {name}: must be a string")
            out[name] = doc[name]
    if "port" in doc:
        out["port"] = int(_number(doc["port"], f"{file}: port", integer=True))
    if "max_body" in doc:
        out["max_body"] = int(_number(doc["max_body"], f"{file}: max_body", minimum=1, integer=True))
    if "hold_for_approval" in doc:
        out["hold_for_approval"] = _number(doc["hold_for_approval"], f"{file}: hold_for_approval")
    if "guards" in doc:
        out["guards"] = _guards(doc["guards"], f"{file}: guards")
    if out.get("audit_prompts", "hash") not in ("hash", "masked"):
        raise GatewayConfigError(f"{file}: audit_prompts: must be 'hash' or 'masked'")
    guards = out.get("guards") or GuardConfig()
    if out.get("audit_prompts") == "masked" and not (guards.pii and guards.secrets):
        # the masked text redacts what the guards find: with one off, its entities went to the log in clear
        raise GatewayConfigError(f"{file}: audit_prompts: masked needs guards pii and secrets on (with one off, "
                                 f"what it finds would be recorded in clear)")
    return out
