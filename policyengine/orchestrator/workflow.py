"""The typed workflow API: steps, groups and the context passed between them.

A workflow is data: a name, the agent it acts as, and an ordered tuple of
steps or parallel groups. Each step says what it will ask the engine (an
``Ask``: action, resource, data, context) as a function of the run's
``Context``, so the runner can put the question to the policy *before* the step
does anything. Steps never call the engine or the audit log themselves; the
runner does, which is what makes every step governed and recorded the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Context:
    """What a step can see: the run's input item and the outputs of earlier steps."""

    run_id: str
    workflow: str
    requested_by: str
    item: Mapping[str, Any]
    outputs: Mapping[str, Mapping[str, Any]]
    approved: frozenset[str] = frozenset()  # steps a human approved in this run

    def out(self, step: str, key: str, default: Any = None) -> Any:
        """The value ``key`` of step ``step``'s output, or ``default`` if it did not run."""
        return self.outputs.get(step, {}).get(key, default)

    def ran(self, step: str) -> bool:
        return step in self.outputs

    def with_output(self, step: str, output: Mapping[str, Any]) -> Context:
        merged = dict(self.outputs)
        merged[step] = MappingProxyType(dict(output))
        return Context(self.run_id, self.workflow, self.requested_by, self.item, MappingProxyType(merged), self.approved)


@dataclass(frozen=True, slots=True)
class Ask:
    """The engine request a step makes, minus the principal (the runner adds it)."""

    action: str
    kind: Literal["model", "dataset", "tool", "agent", "workflow"]
    id: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Prompt:
    """What a model call sends. ``hint`` feeds the local simulator only, never a real API.

    ``max_tokens`` caps the answer (sent to the provider) and, with the prompt's
    length, makes the estimate the runner reserves in the budgets before the call.
    """

    messages: tuple[tuple[str, str], ...]
    labels: tuple[str, ...] = ()
    hint: str | None = None
    max_tokens: int = 64

    def text(self) -> str:
        return "\n".join(content for _, content in self.messages)


@dataclass(frozen=True, slots=True)
class Completion:
    """A model's answer, normalised across providers."""

    label: str | None
    confidence: float | None
    text: str
    tokens: int
    cost_usd: float | None = None


Condition = Callable[[Context], bool]
AskFn = Callable[[Context], Ask]


def always(_: Context) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class ModelCall:
    """Call a model. ``ask`` usually leaves ``id`` empty so a ``route`` rule picks the model.

    ``read`` turns the completion into the step's output; ``subject``,
    ``outcome`` and ``label`` fill the ``model_call`` audit row that the bias and
    drift reports read. If the chosen model fails, the runner tries the models
    after it in the matching ``route`` rule, then ``fallback_models``, each only
    if the policy allows it.
    """

    name: str
    ask: AskFn
    prompt: Callable[[Context], Prompt]
    read: Callable[[Context, Completion], JSON] = lambda ctx, c: {"label": c.label, "confidence": c.confidence}
    subject: Callable[[Context], JSON] = lambda ctx: {}
    label: Callable[[Context], str | None] = lambda ctx: None
    outcome: Callable[[Context, Completion], str] = lambda ctx, c: "ok"
    fallback_models: tuple[str, ...] = ()
    when: Condition = always
    fallback: Step | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """Call a tool. With ``effect=True`` the call changes the world, so it runs exactly once:
    the runner journals it (with an idempotency key) before the call and records
    its result in the same transaction as the step's completion."""

    name: str
    ask: AskFn
    run: Callable[[Context, str], JSON]  # (context, idempotency key) -> output
    effect: bool = False
    when: Condition = always
    fallback: Step | None = None


@dataclass(frozen=True, slots=True)
class DataRead:
    """Read a dataset (recorded as a ``data_access`` event)."""

    name: str
    ask: AskFn
    read: Callable[[Context], JSON]
    when: Condition = always
    fallback: Step | None = None


@dataclass(frozen=True, slots=True)
class RulesDecision:
    """Ask the engine a question whose answer *is* the step's output (no side effect).

    The output is ``{"effect": ..., "route": ...}``; a deny does not fail the run.
    """

    name: str
    ask: AskFn
    when: Condition = always
    fallback: Step | None = None


@dataclass(frozen=True, slots=True)
class HumanWait:
    """Wait for a human. The role and deadline come from the policy's escalation gate
    when one matches; otherwise from ``role`` / ``within_seconds`` declared here."""

    name: str
    ask: AskFn
    role: str
    within_seconds: int | None = None
    summary: Callable[[Context], str] = lambda ctx: ""
    when: Condition = always
    fallback: Step | None = None


Step = ModelCall | ToolCall | DataRead | RulesDecision | HumanWait
STEP_KINDS: Mapping[type, str] = MappingProxyType(
    {ModelCall: "model", ToolCall: "tool", DataRead: "data", RulesDecision: "decision", HumanWait: "human"}
)


@dataclass(frozen=True, slots=True)
class Parallel:
    """Steps that do not depend on each other and run concurrently (leaf steps only)."""

    name: str
    steps: tuple[Step, ...]


Node = Step | Parallel


@dataclass(frozen=True, slots=True)
class Workflow:
    """A named, governed workflow run once per input item.

    ``agent`` is the principal every step acts as (its authority comes from its
    ``agent`` declaration in the rules). ``fallback`` runs when a step is denied
    and has no fallback of its own. ``outcome`` names the run's result for
    summaries and reports (e.g. ``auto_resolved``, ``routed``, ``blocked``).
    ``numbers`` names the item fields the workflow reads as numbers; when present
    and not null they must be JSON numbers, or ``load_items`` refuses the input.
    """

    name: str
    agent: str
    nodes: tuple[Node, ...]
    outcome: Callable[[Context], str] = lambda ctx: "completed"
    # an item's declared id ("" for none: a null id is none, not "None"); a batch knows an item by it
    item_id: Callable[[Mapping[str, Any]], str] = lambda item: "" if item.get("id") is None else str(item["id"])
    fallback: Step | None = None
    description: str = ""
    numbers: tuple[str, ...] = ()  # item fields read as numbers: the input reader refuses other values in them

    def __post_init__(self) -> None:
        names = [s.name for s in self.steps()]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"workflow {self.name!r}: duplicate step names {sorted(dupes)}")

    def steps(self) -> list[Step]:
        """Every step, flattened in order, including declared fallbacks."""
        out: list[Step] = []
        for node in self.nodes:
            group = node.steps if isinstance(node, Parallel) else (node,)
            for step in group:
                out.append(step)
                if step.fallback is not None:
                    out.append(step.fallback)
        if self.fallback is not None:
            out.append(self.fallback)
        return out


def step_kind(step: Step) -> str:
    return STEP_KINDS[type(step)]
