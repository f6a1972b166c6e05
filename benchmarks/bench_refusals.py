"""What refusing disguised input costs: decisions against rules/ and the gateway's screening, per call.

    python benchmarks/bench_refusals.py                  # this tree
    PYTHONPATH=/tmp/base python benchmarks/bench_refusals.py --rules /tmp/base/rules   # an older tree, for A/B

Decisions: a plain hit, a request in a budgeted workflow (context.workflow is
checked against the budgets' names), schema-normalised strings (checked for
invisible characters and mixed scripts) and a non-ASCII resource id (checked
for mixed scripts). Screening: one ASCII and one non-ASCII prompt through the
guards (the detectors read a normalised copy of each text). Minimum and median
of 5 rounds, in microseconds per call. Run by hand; results in README.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from policyengine.engine import load_policy

REQUESTS = {
    "hit": {"principal": {"id": "carol", "roles": ["analyst"]}, "action": "read",
            "resource": {"kind": "dataset", "id": "finance/invoices/2026"}, "data": {"classification": "internal"}},
    "budgeted workflow": {"principal": {"type": "agent", "id": "invoice_classifier"}, "action": "invoke",
                          "resource": {"kind": "model", "id": "classifier_small"},
                          "context": {"tokens": 1000, "workflow": "invoice-exceptions"}},
    "schema strings": {"principal": {"type": "agent", "id": "invoice_classifier"}, "action": "invoke",
                       "resource": {"kind": "model", "id": "frontier_llm"},
                       "data": {"classification": "phi", "origin": "DE"}, "context": {"tokens": 100}},
    "non-ASCII id": {"principal": {"id": "carol", "roles": ["analyst"]}, "action": "read",
                     "resource": {"kind": "dataset", "id": "finance/donn\u00e9es/2026"}},
}
PROMPTS = {
    "screen, 120 ASCII characters": "Please summarise invoice INV-2026-0042 for ACME GmbH, amount 1200 EUR, due next "
                                    "week. Contact the vendor if needed.\nThanks",
    "screen, 100 non-ASCII characters": "Bitte fasse Rechnung INV-2026-0042 f\u00fcr ACME GmbH zusammen, Betrag 1200 "
                                        "EUR, f\u00e4llig n\u00e4chste Woche. Danke",
}


def per_call_us(op: Callable[[], object], n: int = 20_000, rounds: int = 5) -> tuple[float, float]:
    op()
    runs = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(n):
            op()
        runs.append((time.perf_counter() - started) / n * 1e6)
    return min(runs), statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default=str(Path(__file__).resolve().parent.parent / "rules"))
    args = parser.parse_args()
    policy = load_policy([args.rules])
    for name, request in REQUESTS.items():
        low, mid = per_call_us(lambda r=request: policy.evaluate(r))
        print(f"{name}: {low:.2f} us (median {mid:.2f})")
    from policyengine.gateway import guards

    config = guards.GuardConfig(mask=frozenset({"email", "phone"}))
    for name, text in PROMPTS.items():
        low, mid = per_call_us(lambda t=text: guards.screen(t, config))
        print(f"{name}: {low:.1f} us (median {mid:.1f})")


if __name__ == "__main__":
    main()
