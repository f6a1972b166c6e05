"""Generate the shipped sample inputs of the four mission workflows.

Run ``python data/generate.py`` from the repository root; the output is
deterministic (fixed seed), so re-running it changes nothing. Fields named
``true_*`` are ground truth: the local model simulator uses them as the answer
it gets right with its configured accuracy, and they become the ``label`` of
``model_call`` audit rows for the equalized-odds reports. A real model never
sees them.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20261124

VENDORS = [  # name, country, region
    ("Acme Metals", "DE", "EU"), ("Nordlicht GmbH", "DE", "EU"), ("Lumen SARL", "FR", "EU"),
    ("Porto Textil", "PT", "EU"), ("Vistula Parts", "PL", "EU"), ("Hudson Supply", "US", "NA"),
    ("Lone Star Freight", "US", "NA"), ("Maple Logistics", "CA", "NA"), ("Sakura Components", "JP", "APAC"),
    ("Harbour Electronics", "SG", "APAC"), ("Ganges Textiles", "IN", "APAC"), ("Andes Minerals", "CL", "LATAM"),
]
EXCEPTIONS = ["price_mismatch", "missing_po", "duplicate", "quantity_mismatch", "none"]


def invoices(rng: random.Random, n: int = 300) -> list[dict]:
    out = []
    for i in range(n):
        vendor, country, region = rng.choice(VENDORS)
        amount = round(rng.lognormvariate(7.6, 1.1), 2)
        out.append({
            "id": f"INV-{10000 + i}", "vendor": vendor, "vendor_country": country, "vendor_region": region,
            "amount": min(amount, 250_000.0), "currency": "USD" if region == "NA" else "EUR",
            "po_number": None if rng.random() < 0.12 else f"PO-{rng.randint(40000, 49999)}",
            "classification": "confidential", "true_exception": rng.choices(EXCEPTIONS, [3, 2, 1, 2, 4])[0],
            "vendor_age_days": rng.choice([3, 12, 45, 400, 900, 2000, 2500, 3000]),
            "vendor_status": "sanctioned" if rng.random() < 0.02 else "active",
        })
    return out


TICKET_TEXT = {
    "password_reset": ["I forgot my password and I'm locked out", "Password expired, please reset",
                       "Can't log in after too many attempts", "Need a password reset for my VPN account"],
    "access_request": ["Please grant me access to the finance share", "Need read access to the CRM reports",
                       "Request admin rights on my laptop"],
    "hardware": ["My laptop screen flickers", "Docking station not detected", "Keyboard keys stuck"],
    "outage": ["Email is down for the whole floor", "ERP returns 502 for everyone", "Wi-Fi outage in building B"],
    "software": ["Excel crashes when opening macros", "Need Visio installed", "Teams won't start after update"],
}
DEPARTMENTS = ["finance", "sales", "engineering", "hr", "operations", "legal"]


def tickets(rng: random.Random, n: int = 300) -> list[dict]:
    cats = list(TICKET_TEXT)
    out = []
    for i in range(n):
        cat = rng.choices(cats, [5, 2, 1.5, 0.7, 1.8])[0]
        out.append({
            "id": f"TCK-{20000 + i}", "requester": f"user{rng.randint(1, 400):03d}",
            "department": rng.choice(DEPARTMENTS), "text": rng.choice(TICKET_TEXT[cat]),
            "priority": rng.choices(["low", "normal", "high"], [3, 5, 1])[0],
            "classification": "internal", "true_category": cat,
            "account_type": rng.choices(["standard", "privileged", "admin"], [18, 2, 1])[0],
        })
    return out


SKUS = [f"SKU-{n}" for n in range(1001, 1041)]
SIGNALS = ["port_congestion", "supplier_insolvency", "weather", "strike", "export_ban", "quality_recall"]


def supply(rng: random.Random, n: int = 200) -> tuple[list[dict], list[dict], list[dict]]:
    inventory = [{"sku": s, "on_hand": rng.randint(0, 900), "daily_demand": rng.randint(5, 60),
                  "supplier": rng.choice(VENDORS)[0]} for s in SKUS]
    suppliers = []
    for s in SKUS:
        for _ in range(rng.randint(1, 3)):
            name, country, region = rng.choice(VENDORS)
            suppliers.append({"sku": s, "supplier": name, "country": country, "region": region,
                              "unit_price": round(rng.uniform(2, 80), 2), "lead_days": rng.randint(3, 40)})
    signals = []
    for i in range(n):
        sev = rng.choices(["low", "medium", "high"], [4, 3, 2])[0]
        signals.append({
            "id": f"SIG-{30000 + i}", "signal": rng.choice(SIGNALS), "severity": sev,
            "region": rng.choice(["EU", "NA", "APAC", "LATAM"]), "sku": rng.choice(SKUS),
            "classification": "internal", "true_action": "expedite_alternative" if sev == "high" else "monitor",
        })
    return signals, inventory, suppliers


MERCHANTS = ["grocery", "electronics", "travel", "gaming", "jewelry", "fuel", "restaurants"]


def transactions(rng: random.Random, n: int = 300) -> list[dict]:
    out = []
    for i in range(n):
        fraud = rng.random() < 0.15
        out.append({
            "id": f"TXN-{50000 + i}", "account": f"ACC-{rng.randint(1000, 1999)}",
            "amount": round(rng.lognormvariate(4.5 if not fraud else 6.2, 1.0), 2),
            "merchant_category": rng.choice(MERCHANTS), "card_present": rng.random() < (0.7 if not fraud else 0.2),
            "customer_region": rng.choice(["EU", "NA", "APAC"]), "classification": "pii",
            "origin": rng.choice(["DE", "FR", "US", "SG"]), "true_label": "fraud" if fraud else "legit",
        })
    return out


def write_json(name: str, rows: list[dict]) -> None:
    (HERE / name).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")


def write_csv(name: str, rows: list[dict]) -> None:
    with open(HERE / name, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def main() -> None:
    rng = random.Random(SEED)
    write_json("invoices.json", invoices(rng))
    write_json("tickets.json", tickets(rng))
    signals, inventory, suppliers = supply(rng)
    write_json("supply_signals.json", signals)
    write_csv("inventory.csv", inventory)
    write_csv("suppliers.csv", suppliers)
    write_json("transactions.json", transactions(rng))


if __name__ == "__main__":
    main()
