"""Fraud routing: a first model scores the transaction; low confidence asks a second
model; confident fraud is blocked, confident legitimate payments are released,
and ambiguous ones wait for a fraud analyst."""

from __future__ import annotations

from ..workflow import Ask, Context, HumanWait, ModelCall, Prompt, ToolCall, Workflow

NAME = "fraud-routing"
AGENT = "fraud_screener"
ANALYST_ROLE = "fraud_analyst"
LABELS = ("fraud", "legit")
SECOND_OPINION_BELOW = 0.75
DECISIVE = 0.9


# Where the payment systems run: residency rules on card data need a compute region.
TOOL_REGION = "eu-west-1"


def _tool_context(ctx: Context, **extra: object) -> dict:
    """Request context; attributes the item or the model did not give stay missing (never 0)."""
    ctx_ = {"amount": ctx.item.get("amount"), "region": TOOL_REGION, **extra}
    return {k: v for k, v in ctx_.items() if v is not None}


def _data(ctx: Context) -> dict:
    return {"classification": ctx.item.get("classification", "pii"), "origin": ctx.item.get("origin")}


def _prompt(ctx: Context) -> Prompt:
    i = ctx.item
    text = (f"Transaction {i.get('id')}: {i.get('amount')} at {i.get('merchant_category')}, card present "
            f"{i.get('card_present')}, account {i.get('account')}. Fraud or legit?")
    return Prompt((("user", text),), LABELS, i.get("true_label"))


def _verdict(ctx: Context) -> tuple[str | None, float | None]:
    """The deciding model's label and confidence (None when it gave none)."""
    step = "second_opinion" if ctx.ran("second_opinion") else "score"
    conf = ctx.out(step, "confidence")
    return ctx.out(step, "label"), None if conf is None else float(conf)


def _decisive(ctx: Context) -> bool:
    conf = _verdict(ctx)[1]
    return conf is not None and conf >= DECISIVE


def _subject(ctx: Context) -> dict:
    return {"customer_region": ctx.item.get("customer_region"), "merchant_category": ctx.item.get("merchant_category")}


def _model_outcome(ctx: Context, c) -> str:
    conf = c.confidence or 0
    if conf >= DECISIVE:
        return "blocked" if c.label == "fraud" else "auto_resolved"
    return "ambiguous"


def _right_outcome(ctx: Context) -> str:
    """Ground truth in the vocabulary of ``outcome``, so equalized odds can compare the two."""
    return "blocked" if ctx.item.get("true_label") == "fraud" else "auto_resolved"


def _ask_model(task: str):
    return lambda ctx: Ask("invoke", "model", None, _data(ctx), {"task": task, "tokens": 350, **(
        {"amount": ctx.item["amount"]} if ctx.item.get("amount") is not None else {})})


FRAUD = Workflow(
    name=NAME,
    agent=AGENT,
    description="score, second opinion on low confidence, block confident fraud, analyst for the ambiguous",
    nodes=(
        ModelCall("score", ask=_ask_model("fraud_score"), prompt=_prompt, subject=_subject,
                  label=_right_outcome, outcome=_model_outcome),
        ModelCall("second_opinion", ask=_ask_model("fraud_second_opinion"), prompt=_prompt, subject=_subject,
                  label=_right_outcome, outcome=_model_outcome,
                  when=lambda ctx: float(ctx.out("score", "confidence") or 0) < SECOND_OPINION_BELOW),
        ToolCall("block", when=lambda ctx: _verdict(ctx)[0] == "fraud" and _decisive(ctx),
                 effect=True, ask=lambda ctx: Ask("block_transaction", "tool", "payments/blocks", _data(ctx),
                                                  _tool_context(ctx)),
                 run=lambda ctx, key: {"blocked": ctx.item.get("id"), "case": key}),
        HumanWait("analyst_review", role=ANALYST_ROLE, within_seconds=24 * 3600,
                  when=lambda ctx: not _decisive(ctx),
                  ask=lambda ctx: Ask("review_transaction", "tool", "payments/cases", _data(ctx),
                                      _tool_context(ctx, confidence=_verdict(ctx)[1])),
                  summary=lambda ctx: f"{ctx.item.get('id')}: model says {_verdict(ctx)[0]} at "
                  + (f"{_verdict(ctx)[1]:.2f}" if _verdict(ctx)[1] is not None else "no stated confidence"),
                  # an analyst who rejects the payment blocks it
                  fallback=ToolCall("block_after_review", effect=True,
                                    ask=lambda ctx: Ask("block_transaction", "tool", "payments/blocks", _data(ctx),
                                                        _tool_context(ctx)),
                                    run=lambda ctx, key: {"blocked": ctx.item.get("id"), "case": key})),
        ToolCall("release", when=lambda ctx: not ctx.ran("block"),
                 ask=lambda ctx: Ask("release_transaction", "tool", "payments/releases", _data(ctx),
                                     _tool_context(ctx)),
                 run=lambda ctx, key: {"released": ctx.item.get("id")}),
    ),
    numbers=("amount",),
    outcome=lambda ctx: ("blocked" if ctx.ran("block") or ctx.ran("block_after_review")
                         else "released_after_review" if ctx.approved else "auto_resolved"),
)
