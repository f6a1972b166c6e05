"""Supply-chain disruption: risk signal -> inventory check and alternative suppliers
(in parallel) -> recommendation -> a human approver -> purchase order."""

from __future__ import annotations

from functools import lru_cache

from ..workflow import Ask, Context, DataRead, HumanWait, ModelCall, Parallel, Prompt, ToolCall, Workflow

NAME = "supply-chain-disruption"
AGENT = "supply_planner"
APPROVER_ROLE = "supply_manager"
ACTIONS = ("monitor", "expedite_alternative")


@lru_cache(maxsize=1)
def _tables() -> tuple[dict, dict]:
    from . import read_csv_table

    inventory = {r["sku"]: r for r in read_csv_table("inventory.csv")}
    suppliers: dict[str, list[dict]] = {}
    for r in read_csv_table("suppliers.csv"):
        suppliers.setdefault(r["sku"], []).append(r)
    return inventory, suppliers


def _data(ctx: Context) -> dict:
    return {"classification": ctx.item.get("classification", "internal")}


def _inventory(ctx: Context) -> dict:
    """Stock of the item's SKU; all None for a SKU the inventory does not know (not invented zeros)."""
    row = _tables()[0].get(str(ctx.item.get("sku")))
    if row is None:
        return {"on_hand": None, "daily_demand": None, "days_cover": None, "current_supplier": None}
    on_hand, demand = int(row["on_hand"]), max(1, int(row["daily_demand"]))
    return {"on_hand": on_hand, "daily_demand": demand, "days_cover": round(on_hand / demand, 1),
            "current_supplier": row.get("supplier")}


def _alternatives(ctx: Context, key: str) -> dict:
    rows = sorted(_tables()[1].get(str(ctx.item.get("sku")), []), key=lambda r: int(r["lead_days"]))
    return {"alternatives": [{"supplier": r["supplier"], "region": r["region"], "lead_days": int(r["lead_days"]),
                              "unit_price": float(r["unit_price"])} for r in rows[:3]]}


def _prompt(ctx: Context) -> Prompt:
    i = ctx.item
    alts = ", ".join(a["supplier"] for a in ctx.out("find_suppliers", "alternatives", []))
    text = (f"Signal {i.get('signal')} ({i.get('severity')}) in {i.get('region')} affecting {i.get('sku')}; "
            f"{ctx.out('inventory', 'days_cover') if ctx.out('inventory', 'days_cover') is not None else 'unknown'}"
            f" days of cover; alternatives: {alts or 'none'}. Action?")
    return Prompt((("user", text),), ACTIONS, i.get("true_action"))


def _order_value(ctx: Context) -> float | None:
    """30 days of demand at the best alternative's price; None without a supplier or known demand."""
    alts = ctx.out("find_suppliers", "alternatives") or []
    demand = ctx.out("inventory", "daily_demand")
    if not alts or demand is None:
        return None
    return round(alts[0]["unit_price"] * demand * 30, 2)


def _order_context(ctx: Context) -> dict:
    """The order's amount when it is known; a missing amount stays missing (never 0)."""
    value = _order_value(ctx)
    return {} if value is None else {"amount": value}


def _expedite(ctx: Context) -> bool:
    return ctx.out("recommend", "label") == "expedite_alternative"


SUPPLY_CHAIN = Workflow(
    name=NAME,
    agent=AGENT,
    description="risk signal, inventory and alternative suppliers, recommendation, human approval, order",
    nodes=(
        DataRead("risk_signal",
                 ask=lambda ctx: Ask("read", "dataset", "scm/risk-signals", _data(ctx)),
                 read=lambda ctx: {k: ctx.item.get(k) for k in ("signal", "severity", "region", "sku")}),
        Parallel("assess", (
            DataRead("inventory", ask=lambda ctx: Ask("read", "dataset", "scm/inventory", _data(ctx)),
                     read=_inventory),
            ToolCall("find_suppliers", ask=lambda ctx: Ask("search_suppliers", "tool", "scm/supplier-search",
                                                           _data(ctx)),
                     run=_alternatives),
        )),
        ModelCall("recommend",
                  ask=lambda ctx: Ask("invoke", "model", None, _data(ctx), {"task": "recommend", "tokens": 600}),
                  prompt=_prompt,
                  subject=lambda ctx: {"region": ctx.item.get("region"), "severity": ctx.item.get("severity")},
                  label=lambda ctx: ctx.item.get("true_action"),
                  outcome=lambda ctx, c: "auto_resolved" if c.label == "monitor" else "escalated"),
        HumanWait("planner_approval", role=APPROVER_ROLE, within_seconds=24 * 3600, when=_expedite,
                  ask=lambda ctx: Ask("approve_order", "tool", "scm/purchase-orders", _data(ctx),
                                      _order_context(ctx)),
                  summary=lambda ctx: f"expedite {ctx.item.get('sku')} from "
                  f"{(ctx.out('find_suppliers', 'alternatives') or [{}])[0].get('supplier', '?')}"),
        ToolCall("place_order", when=_expedite, effect=True,
                 ask=lambda ctx: Ask("place_order", "tool", "scm/purchase-orders", _data(ctx),
                                     _order_context(ctx)),
                 run=lambda ctx, key: {"po": key, "sku": ctx.item.get("sku"), "value": _order_value(ctx)}),
    ),
    outcome=lambda ctx: "mitigated" if ctx.ran("place_order") else "auto_resolved",
)
