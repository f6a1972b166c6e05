"""Personalized marketing campaign: profile -> segmentation model -> content selection -> channel
routing -> launch (a person approves large or costly campaigns) -> send -> performance feedback ->
follow-up on the channel the feedback picks.

One item is one customer in one campaign's audience (``data/marketing_deliveries.json``):
the customer as the CRM had them when the audience was built (consent per
channel, the time a consent was withdrawn) and the campaign's size, spend,
compute region and dates. Every step names the campaign's compute region, so
the residency rules keep EEA customers' data in EU regions at every step; every
send states the consent for its channel *at the time of that send*, so a
consent withdrawn between launch and follow-up stops the follow-up (the policy
denies it and the customer is put on the suppression list instead).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from ..workflow import Ask, Context, DataRead, ModelCall, Prompt, ToolCall, Workflow

NAME = "marketing-campaign"
AGENT = "campaign_orchestrator"
SEGMENTS = ("loyal", "value_seeker", "lapsed", "not_a_fit")
CHANNELS = ("email", "web", "paid")
# which channel the router tries first for each segment
CHANNEL_PREFERENCE = {"loyal": ("email", "web", "paid"), "value_seeker": ("paid", "email", "web"),
                      "lapsed": ("web", "email", "paid")}
CONTENT = {"loyal": ("early_access", "loyalty_points"), "value_seeker": ("discount_20", "bundle_offer"),
           "lapsed": ("win_back", "whats_new")}


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def withdrawn(item: Any, channel: str, at: Any) -> bool | None:
    """Whether the consent for ``channel`` was withdrawn by time ``at``; None when either time is unreadable.

    An unreadable time is not guessed: the send then states no withdrawal flag and the policy denies it."""
    when = (item.get("consent_withdrawn_at") or {}).get(channel)
    if when is None:
        return False
    t, send = _time(when), _time(at)
    if t is None or send is None:
        return None
    return t <= send


def _consented(ctx: Context, channel: str | None) -> bool | None:
    return (ctx.item.get("consent") or {}).get(channel) if channel else None


def _pii(ctx: Context, **extra: Any) -> dict:
    """Data attributes of a request carrying the customer's personal data; missing values stay missing."""
    d = {"classification": ctx.item.get("classification", "pii"), "origin": ctx.item.get("country"), **extra}
    return {k: v for k, v in d.items() if v is not None}


def _where(ctx: Context, **extra: Any) -> dict:
    """Request context: the campaign and its compute region (residency rules read ``region``)."""
    c = {"region": ctx.item.get("processing_region"), "campaign": ctx.item.get("campaign"), **extra}
    return {k: v for k, v in c.items() if v is not None}


def _unit(*parts: str) -> float:
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _segment(ctx: Context) -> str | None:
    return ctx.out("segment", "label")


def _targeted(ctx: Context) -> bool:
    return _segment(ctx) in CHANNEL_PREFERENCE


def _segment_prompt(ctx: Context) -> Prompt:
    i = ctx.item
    text = (f"Customer {i.get('customer')} ({i.get('age_band')}, {i.get('country')}) for campaign "
            f"{i.get('campaign')}. Segment?")
    return Prompt((("user", text),), SEGMENTS, i.get("true_segment"))


def _content_prompt(ctx: Context) -> Prompt:
    options = CONTENT.get(_segment(ctx) or "", ("generic",))
    hint = options[int(_unit("content", str(ctx.item.get("id"))) * len(options))]
    text = f"Campaign {ctx.item.get('campaign')}, segment {_segment(ctx)}. Which message?"
    return Prompt((("user", text),), options, hint)


def _route(ctx: Context, key: str) -> dict:
    """The routing agent: the first channel of the segment's preference the audience snapshot says is consented."""
    order = CHANNEL_PREFERENCE.get(_segment(ctx) or "", CHANNELS)
    channel = next((c for c in order if _consented(ctx, c) is True), None)
    return {"channel": channel, "order": list(order)}


def _send_ask(channel_of: Any, time_field: str):
    def ask(ctx: Context) -> Ask:
        channel = channel_of(ctx)
        data = _pii(ctx, consent=_consented(ctx, channel),
                    consent_withdrawn=withdrawn(ctx.item, channel, ctx.item.get(time_field)) if channel else None)
        # one delivery reaches one person; the campaign's size is judged at launch (large_campaign_launch)
        return Ask("send", "tool", f"messaging/{channel}", data, _where(ctx, channel=channel, audience_size=1))
    return ask


def _feedback(ctx: Context, key: str) -> dict:
    """Performance feedback: engaged customers get an upsell on the same channel, the others a reminder on
    the next consented channel of their segment's preference (none left: no follow-up)."""
    channel = ctx.out("route_channel", "channel")
    engaged = _unit("engaged", str(ctx.item.get("id")), str(ctx.out("select_content", "label"))) < 0.35
    if engaged:
        return {"engaged": True, "next_channel": channel, "offer": "upsell"}
    order = ctx.out("route_channel", "order") or []
    rest = order[order.index(channel) + 1:] if channel in order else []
    nxt = next((c for c in rest if _consented(ctx, c) is True), None)
    return {"engaged": False, "next_channel": nxt, "offer": "reminder" if nxt else None}


def _suppress(name: str, channel_of: Any) -> ToolCall:
    return ToolCall(name, ask=lambda ctx: Ask("suppress", "tool", "marketing/suppression-list", _pii(ctx),
                                              _where(ctx, channel=channel_of(ctx))),
                    run=lambda ctx, key: {"suppressed": ctx.item.get("customer"), "channel": channel_of(ctx)})


def _first_channel(ctx: Context) -> str | None:
    return ctx.out("route_channel", "channel")


def _next_channel(ctx: Context) -> str | None:
    return ctx.out("feedback", "next_channel")


def _outcome(ctx: Context) -> str:
    if ctx.ran("suppress_follow_up") or ctx.ran("suppress_send"):
        return "suppressed"
    if ctx.ran("follow_up"):
        return "followed_up"
    if ctx.ran("send"):
        return "sent"
    return "not_targeted" if not _targeted(ctx) else "no_consented_channel"


MARKETING = Workflow(
    name=NAME,
    agent=AGENT,
    description="segment, select content, route to a consented channel, launch (approval when large), send, "
                "learn from results, follow up while consent holds",
    nodes=(
        DataRead("profile",
                 ask=lambda ctx: Ask("read", "dataset", "crm/customers",
                                     _pii(ctx, purpose="profiling",
                                          profiling_opt_out=ctx.item.get("profiling_opt_out", True)),
                                     _where(ctx)),
                 read=lambda ctx: {k: ctx.item.get(k) for k in ("customer", "age_band", "country")}),
        ModelCall("segment",
                  ask=lambda ctx: Ask("invoke", "model", None, _pii(ctx),
                                      _where(ctx, task="segmentation", tokens=200)),
                  prompt=_segment_prompt,
                  subject=lambda ctx: {"age_band": ctx.item.get("age_band"), "country": ctx.item.get("country")},
                  label=lambda ctx: None if ctx.item.get("true_segment") is None
                  else "not_targeted" if ctx.item.get("true_segment") == "not_a_fit" else "targeted",
                  outcome=lambda ctx, c: "targeted" if c.label in CHANNEL_PREFERENCE else "not_targeted"),
        ModelCall("select_content", when=_targeted,
                  ask=lambda ctx: Ask("invoke", "model", None, {"classification": "marketing"},
                                      _where(ctx, task="content_selection", tokens=150)),
                  prompt=_content_prompt,
                  subject=lambda ctx: {"segment": _segment(ctx)},
                  label=lambda ctx: _content_prompt(ctx).hint,  # the variant the sample's campaign plan assigns
                  outcome=lambda ctx, c: "selected"),
        ToolCall("route_channel", when=_targeted,
                 ask=lambda ctx: Ask("route_channel", "tool", "marketing/channel-router", _pii(ctx), _where(ctx)),
                 run=_route),
        ToolCall("launch", when=lambda ctx: _first_channel(ctx) is not None,
                 ask=lambda ctx: Ask("launch", "tool", "marketing/campaigns", {"classification": "internal"},
                                     _where(ctx, audience_size=ctx.item.get("audience_size"),
                                            spend_usd=ctx.item.get("spend_usd"))),
                 run=lambda ctx, key: {"launched": ctx.item.get("campaign")}),
        ToolCall("send", when=lambda ctx: _first_channel(ctx) is not None, effect=True,
                 ask=_send_ask(_first_channel, "launch_at"),
                 run=lambda ctx, key: {"sent": ctx.out("select_content", "label"), "channel": _first_channel(ctx),
                                       "message": key},
                 fallback=_suppress("suppress_send", _first_channel)),
        ToolCall("feedback", when=lambda ctx: ctx.ran("send"),
                 ask=lambda ctx: Ask("record_performance", "tool", "marketing/performance",
                                     {"classification": "internal"}, _where(ctx)),
                 run=_feedback),
        ToolCall("follow_up", when=lambda ctx: _next_channel(ctx) is not None, effect=True,
                 ask=_send_ask(_next_channel, "follow_up_at"),
                 run=lambda ctx, key: {"sent": ctx.out("feedback", "offer"), "channel": _next_channel(ctx),
                                       "message": key},
                 fallback=_suppress("suppress_follow_up", _next_channel)),
    ),
    numbers=("audience_size", "spend_usd"),
    outcome=_outcome,
)
