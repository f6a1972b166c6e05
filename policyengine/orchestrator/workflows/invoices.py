"""Invoice exception handling: read the invoice, classify its exception, then act.

Duplicates are blocked, invoices without a PO go back to the buyer, the rest are
approved for payment; the policy escalates large or low-confidence payments to
a senior analyst (four-eyes), and a denied step queues the invoice for review.
"""

from __future__ import annotations

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


def _amount(ctx: Context) -> float:
    return float(ctx.item.get("amount") or 0)


def _payment_outcome(ctx: Context, c) -> str:
    return "auto_resolved" if (c.confidence or 0) >= 0.85 and _amount(ctx) <= 10_000 else "escalated"


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
                                     {"amount": _amount(ctx)}),
                 run=lambda ctx, key: {"blocked": ctx.item.get("id"), "reference": key}, effect=True),
        ToolCall("request_po", when=lambda ctx: _label(ctx) == "missing_po",
                 ask=lambda ctx: Ask("notify", "tool", "erp/buyer-requests", _data(ctx)),
                 run=lambda ctx, key: {"sent_to": "buyer", "invoice": ctx.item.get("id")}),
        ToolCall("approve_payment", when=lambda ctx: _label(ctx) not in ("duplicate", "missing_po"),
                 ask=lambda ctx: Ask("approve_payment", "tool", "erp/payments", _data(ctx),
                                     {"amount": _amount(ctx), "confidence": ctx.out("classify", "confidence"),
                                      "currency": ctx.item.get("currency")}),
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
