"""IT ticket triage: classify, auto-resolve routine password resets, route the rest with context."""

from __future__ import annotations

from ..workflow import Ask, Context, ModelCall, Prompt, ToolCall, Workflow

NAME = "it-ticket-triage"
AGENT = "ticket_triage"
CATEGORIES = ("password_reset", "access_request", "hardware", "outage", "software")
QUEUES = {"access_request": "iam", "hardware": "desk-side", "outage": "major-incident", "software": "apps",
          "password_reset": "service-desk"}
RESET_CONFIDENCE = 0.9


def _data(ctx: Context) -> dict:
    return {"classification": ctx.item.get("classification", "internal"), "account_type": ctx.item.get("account_type")}


def _prompt(ctx: Context) -> Prompt:
    text = f"Ticket {ctx.item.get('id')} ({ctx.item.get('priority')}): {ctx.item.get('text')}. Category?"
    return Prompt((("user", text),), CATEGORIES, ctx.item.get("true_category"))


def _routine_reset(ctx: Context) -> bool:
    return (ctx.out("triage", "label") == "password_reset"
            and (ctx.out("triage", "confidence") or 0) >= RESET_CONFIDENCE)


TICKETS = Workflow(
    name=NAME,
    agent=AGENT,
    description="auto-resolve routine password resets, route other tickets with context",
    nodes=(
        ModelCall("triage",
                  ask=lambda ctx: Ask("invoke", "model", None, _data(ctx), {"task": "triage", "tokens": 300}),
                  prompt=_prompt,
                  subject=lambda ctx: {"department": ctx.item.get("department")},
                  label=lambda ctx: ctx.item.get("true_category"),
                  outcome=lambda ctx, c: "auto_resolved" if c.label == "password_reset"
                  and (c.confidence or 0) >= RESET_CONFIDENCE else "routed"),
        ToolCall("reset_password", when=_routine_reset,
                 ask=lambda ctx: Ask("reset_password", "tool", "iam/password-reset", _data(ctx),
                                     {"confidence": ctx.out("triage", "confidence"),
                                      "priority": ctx.item.get("priority")}),
                 run=lambda ctx, key: {"reset_for": ctx.item.get("requester"), "ticket": ctx.item.get("id")},
                 effect=True),
        ToolCall("route_ticket", when=lambda ctx: not _routine_reset(ctx),
                 ask=lambda ctx: Ask("route_ticket", "tool", "itsm/queues", _data(ctx),
                                     {"priority": ctx.item.get("priority")}),
                 run=lambda ctx, key: {
                     "queue": QUEUES.get(ctx.out("triage", "label") or "", "service-desk"),
                     "context": {"category": ctx.out("triage", "label"),
                                 "confidence": ctx.out("triage", "confidence"),
                                 "department": ctx.item.get("department"), "text": ctx.item.get("text")}}),
    ),
    fallback=ToolCall("route_to_service_desk",
                      ask=lambda ctx: Ask("route_ticket", "tool", "itsm/queues", _data(ctx)),
                      run=lambda ctx, key: {"queue": "service-desk", "reason": "automation denied"}),
    outcome=lambda ctx: "auto_resolved" if ctx.ran("reset_password") else "routed",
)
