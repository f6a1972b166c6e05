"""Generate the shipped sample inputs of the five mission workflows.

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


COUNTRIES = [  # country, market: EEA countries, the UK and North America
    ("DE", "EU"), ("FR", "EU"), ("IT", "EU"), ("ES", "EU"), ("NL", "EU"), ("SE", "EU"), ("NO", "EU"),
    ("GB", "UK"), ("US", "NA"), ("US", "NA"), ("CA", "NA"),
]
AGE_BANDS = ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"]
SEGMENTS = ["loyal", "value_seeker", "lapsed", "not_a_fit"]
CHANNELS = ["email", "web", "paid"]
# campaign id, markets, processing region, declared audience size, spend in USD, launch, follow-up
CAMPAIGNS = [
    ("spring-eu", ("EU",), "eu-west-1", 42_000, 18_000, "2026-03-02T09:00:00Z", "2026-03-16T09:00:00Z"),
    ("loyalty-na", ("NA",), "us-east-1", 15_000, 6_500, "2026-03-03T15:00:00Z", "2026-03-17T15:00:00Z"),
    ("winter-uk", ("UK",), "eu-west-2", 30_000, 62_000, "2026-03-04T10:00:00Z", "2026-03-18T10:00:00Z"),
    ("global-mass", ("EU", "UK", "NA"), "eu-west-1", 240_000, 95_000, "2026-03-09T08:00:00Z", "2026-03-23T08:00:00Z"),
    # a look-alike campaign configured to run in a US region whose audience includes EEA customers
    ("lookalike-us", ("NA", "EU"), "us-east-1", 60_000, 21_000, "2026-03-05T16:00:00Z", "2026-03-19T16:00:00Z"),
]
CAMPAIGN_SIZE = {"spring-eu": 70, "loyalty-na": 50, "winter-uk": 20, "global-mass": 20, "lookalike-us": 40}


def customers(rng: random.Random, n: int = 400) -> list[dict]:
    """The CRM: consent per channel (with the time it was withdrawn, if it was), market and age band."""
    out = []
    for i in range(n):
        country, market = rng.choice(COUNTRIES)
        consent = {c: rng.random() < p for c, p in zip(CHANNELS, (0.75, 0.6, 0.45), strict=True)}
        withdrawn_channel, withdrawn_at = "", ""
        if rng.random() < 0.12 and any(consent.values()):
            withdrawn_channel = rng.choice([c for c in CHANNELS if consent[c]])
            withdrawn_at = f"2026-03-{rng.randint(1, 28):02d}T12:00:00Z"
        age = rng.choice(AGE_BANDS)
        out.append({
            "customer_id": f"CUST-{60000 + i}", "country": country, "market": market, "age_band": age,
            "consent_email": consent["email"], "consent_web": consent["web"], "consent_paid": consent["paid"],
            "withdrawn_channel": withdrawn_channel, "withdrawn_at": withdrawn_at,
            "profiling_opt_out": rng.random() < 0.04,
            "true_segment": rng.choices(SEGMENTS, [3, 3, 2, 2 if age != "65+" else 2.5])[0],
        })
    return out


def deliveries(rng: random.Random, crm: list[dict]) -> list[dict]:
    """One item per customer in a campaign's audience: the customer as the CRM had them when the audience
    was built (consent per channel, withdrawal time) and the campaign's size, spend, region and dates."""
    out = []
    for cid, markets, region, audience, spend, launch, follow_up in CAMPAIGNS:
        pool = [c for c in crm if c["market"] in markets]
        for c in rng.sample(pool, CAMPAIGN_SIZE[cid]):
            withdrawn = {c["withdrawn_channel"]: c["withdrawn_at"]} if c["withdrawn_channel"] else {}
            out.append({
                "id": f"{cid}/{c['customer_id']}", "campaign": cid, "customer": c["customer_id"],
                "country": c["country"], "age_band": c["age_band"], "classification": "pii",
                "consent": {ch: c[f"consent_{ch}"] for ch in CHANNELS}, "consent_withdrawn_at": withdrawn,
                "profiling_opt_out": c["profiling_opt_out"], "processing_region": region,
                "audience_size": audience, "spend_usd": spend, "launch_at": launch, "follow_up_at": follow_up,
                "true_segment": c["true_segment"],
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
    crm = customers(rng)
    write_csv("customers.csv", crm)
    write_json("marketing_deliveries.json", deliveries(rng, crm))


if __name__ == "__main__":
    main()
