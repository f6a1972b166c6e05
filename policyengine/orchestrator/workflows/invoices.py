"""Invoice exception handling: read the invoice, classify its exception, then act.

Duplicates are blocked, invoices without a PO go back to the buyer, the rest are
approved for payment; the policy escalates large or low-confidence payments to
a senior analyst (four-eyes), and a denied step queues the invoice for review.
"""

from __future__ import annotations

import math

from ..workflow import Ask, Context, DataRead, ModelCall, Prompt, ToolCall, Workflow

NAME = "invoice-exceptions"
AGENT = "invoice_classifier"
EXCEPTIONS = ("price_mismatch", "missing_po", "duplicate", "quantity_mismatch", "none")


def _data(ctx: Context) -> dict:
    i = ctx.item
    return {"classification": i.get("classification", "confidential"), "origin": i.get("vendor_country"),
            "vendor_status": i.get("vendor_status"), "vendor_age_days": i.get("vendor_age_days")}


def _prompt(ctx: Context) -> Prompt:
    i = ctx.item
    text = (f"Invoice {i.get('id')} from {i.get('vendor')} ({i.get('vendor_country')}) for {i.get('amount')} "
            f"{i.get('currency')}, PO {i.get('po_number') or 'missing'}. Which exception applies?")
    return Prompt((("user", text),), EXCEPTIONS, i.get("true_exception"))


def _label(ctx: Context) -> str | None:
    return ctx.out("classify", "label")


def _amount(ctx: Context) -> float | None:
    """The invoice amount, or None when the item has none: a missing amount stays missing
    (rules compare a missing attribute as false), it never becomes 0."""
    value = ctx.item.get("amount")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _given(**values: object) -> dict:
    """Request context without the attributes the item does not have."""
    return {k: v for k, v in values.items() if v is not None}


def _payment_outcome(ctx: Context, c) -> str:
    amount = _amount(ctx)
    return "auto_resolved" if (c.confidence or 0) >= 0.85 and amount is not None and amount <= 10_000 else "escalated"


INVOICES = Workflow(
    name=NAME,
    agent=AGENT,
    description="classify invoice exceptions; pay, block duplicates or return to the buyer",
    nodes=(
        DataRead("load_invoice",
                 ask=lambda ctx: Ask("read", "dataset", f"erp/invoices/{ctx.item.get('id')}", _data(ctx)),
                 read=lambda ctx: {"amount": _amount(ctx), "vendor": ctx.item.get("vendor")}),
        ModelCall("classify",
                  ask=lambda ctx: Ask("invoke", "model", None, _data(ctx), {"task": "classify", "tokens": 400}),
                  prompt=_prompt,
                  subject=lambda ctx: {"vendor_region": ctx.item.get("vendor_region"),
                                       "vendor": ctx.item.get("vendor")},
                  label=lambda ctx: ctx.item.get("true_exception"),
                  outcome=_payment_outcome),
        ToolCall("block_duplicate", when=lambda ctx: _label(ctx) == "duplicate",
                 ask=lambda ctx: Ask("block_invoice", "tool", "erp/invoices", _data(ctx),
                                     _given(amount=_amount(ctx))),
                 run=lambda ctx, key: {"blocked": ctx.item.get("id"), "reference": key}, effect=True),
        ToolCall("request_po", when=lambda ctx: _label(ctx) == "missing_po",
                 ask=lambda ctx: Ask("notify", "tool", "erp/buyer-requests", _data(ctx)),
                 run=lambda ctx, key: {"sent_to": "buyer", "invoice": ctx.item.get("id")}),
        ToolCall("approve_payment", when=lambda ctx: _label(ctx) not in ("duplicate", "missing_po"),
                 ask=lambda ctx: Ask("approve_payment", "tool", "erp/payments", _data(ctx),
                                     _given(amount=_amount(ctx), confidence=ctx.out("classify", "confidence"),
                                            currency=ctx.item.get("currency"))),
                 run=lambda ctx, key: {"paid": _amount(ctx), "payment_ref": key}, effect=True),
    ),
    fallback=ToolCall("queue_for_review",
                      ask=lambda ctx: Ask("notify", "tool", "ap/review-queue", _data(ctx)),
                      run=lambda ctx, key: {"queue": "ap-review", "invoice": ctx.item.get("id")}),
    numbers=("amount", "vendor_age_days"),
    outcome=lambda ctx: (
        "queued_for_review" if ctx.ran("queue_for_review")
        else "returned_to_buyer" if ctx.ran("request_po")
        else "approved" if ctx.approved else "auto_resolved"),
)
