"""Decisions for the example rule files in ``rules/``, loaded together as deployed.

Every access rule, residency, escalation gate, budget and route of the examples
is exercised by at least one case below (``test_every_example_rule_is_covered``).
Global declarations interact across packages (a gate or residency of one file
applies to requests of another), so expected reasons are what the whole set decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest

from policyengine import InMemoryLedger, load_policy
from policyengine.resources import data_path

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=timezone.utc)
BANK_CHANGE = (NOW - timedelta(days=13)).isoformat()  # bank details changed 13 days before the decision

DS = "finance.invoices."
FI = "finance.invoice_exceptions."
FR = "fraud.routing."
IT = "it.tickets."
MK = "marketing.campaigns."
MP = "marketing.personalization."
SC = "supply_chain.disruptions."
GR = "growth.experiments."
GROWTH = {"workflow": "growth-experiments", "region": "eu-west-1"}  # growth's declarations are scoped to it


def user(pid: str, *roles: str) -> dict:
    return {"id": pid, "type": "user", "roles": list(roles)}


def agent(pid: str) -> dict:
    return {"id": pid, "type": "agent"}


@dataclass(frozen=True)
class Case:
    name: str
    principal: dict
    action: str
    kind: str
    rid: str | None
    effect: str
    rules: tuple[str, ...]  # rule ids of the decision's reasons, in any order
    route: str | None = None
    data: dict = field(default_factory=dict)
    context: dict = field(default_factory=dict)
    approvals: tuple[dict, ...] = ()
    charges: tuple[tuple[str, str, float], ...] = ()  # (scope, unit, amount) charged before deciding
    obligations: tuple[str, ...] = ()  # obligation kinds expected
    covers: tuple[str, ...] = ()  # declarations exercised besides the reasons (routes)

    def request(self) -> dict:
        resource = {"kind": self.kind}
        if self.rid is not None:
            resource["id"] = self.rid
        # Deny, residency and escalation conditions fail closed on a missing attribute, so each
        # case carries what the workflows always send, unless the case says otherwise.
        data = {**_DATA_SENT.get(self.action, {}), **self.data}
        if "classification" in data:
            data.setdefault("origin", "US")
        if self.rid is not None and self.rid.startswith("crm/segments/"):
            data.setdefault("contains_minors", False)
        context = {**_CONTEXT_SENT.get(self.action, {}), **self.context}
        if self.approvals:
            context["run_id"] = "r-example"
        given = NOW.isoformat()  # approvals are bound to the request's run and given at the decision time
        return {"principal": self.principal, "action": self.action, "resource": resource,
                "data": data, "context": context,
                "approvals": [{"run_id": "r-example", "ts": given, **a} for a in self.approvals]}


_DATA_SENT: dict[str, dict] = {
    "approve_payment": {"vendor_status": "active", "vendor_age_days": 400},
    "block_invoice": {"vendor_status": "active"},
    "reset_password": {"account_type": "standard"},
}
_CONTEXT_SENT: dict[str, dict] = {"send": {"audience_size": 1_000}}


ALICE = user("alice", "analyst")
SUE = user("sue", "senior_analyst")
CONTROLLER = user("carl", "payments_controller")
AP_BOT = agent("invoice_classifier")
FRAUD_BOT = agent("fraud_screener")
TRIAGE_BOT = agent("ticket_triage")
CAMPAIGN_BOT = agent("campaign_writer")
ORCHESTRATOR = agent("campaign_orchestrator")
EU_PII = {"classification": "pii", "origin": "DE"}
PLANNER = agent("supply_planner")
EUR = {"currency": "EUR"}

CASES = [
    # --- the DESIGN sample (finance.invoices) ------------------------------------------
    Case("analyst reads an invoice", ALICE, "read", "dataset", "erp/invoices/7", "allow", (DS + "analysts_read_invoices",)),
    Case("agent calls a model within its token limit", AP_BOT, "invoke", "model", "classifier_small", "allow",
         (DS + "agents_call_models",), context={"tokens": 1000}),
    Case("agent over its token limit", AP_BOT, "invoke", "model", "classifier_small", "deny", ("<default-deny>",),
         context={"tokens": 9000}),
    Case("restricted data never goes to an external model", AP_BOT, "invoke", "model", "frontier_llm", "deny",
         (DS + "no_restricted_data_offsite",), data={"classification": "secret"}, context={"tokens": 10}),
    Case("EU personal data on an EU model", AP_BOT, "invoke", "model", "classifier_small", "allow",
         (DS + "agents_call_models",), data={"classification": "phi", "origin": "DE"}, context={"tokens": 10}),
    Case("EU personal data computed in the US", ALICE, "read", "dataset", "erp/invoices/7", "deny",
         (DS + "eu_personal_data",), data={"classification": "phi", "origin": "DE"}, context={"region": "us-east-1"}),
    Case("invoice workflow over its monthly tokens", AP_BOT, "invoke", "model", "classifier_small", "deny",
         (DS + "invoice_workflow",), context={"tokens": 1000, "workflow": "invoice-exceptions"},
         charges=(("workflow:invoice-exceptions", "tokens", 1_999_500),)),
    Case("invoice workflow near its limit warns", AP_BOT, "invoke", "model", "classifier_small", "allow",
         (DS + "agents_call_models",), context={"tokens": 1000, "workflow": "invoice-exceptions"},
         charges=(("workflow:invoice-exceptions", "tokens", 1_700_000),), obligations=("budget_warning",)),
    Case("large payment escalates", ALICE, "approve_payment", "tool", "erp/payments", "escalate",
         (DS + "large_payment", FI + "analysts_pay_invoices"), context={"amount": 20_000, **EUR},
         obligations=("approval_required",)),
    Case("large payment approved by a senior analyst", ALICE, "approve_payment", "tool", "erp/payments", "allow",
         (FI + "analysts_pay_invoices",), context={"amount": 20_000, **EUR},
         approvals=({"gate": DS + "large_payment", "approver": "sue", "roles": ["senior_analyst"]},)),
    Case("requester cannot approve their own payment", SUE, "approve_payment", "tool", "erp/payments", "escalate",
         (DS + "large_payment", FI + "analysts_pay_invoices"), context={"amount": 20_000, **EUR},
         approvals=({"gate": DS + "large_payment", "approver": "sue", "roles": ["senior_analyst"]},),
         obligations=("approval_required",)),
    Case("classification is routed to the small model", AP_BOT, "invoke", "model", None, "allow",
         (DS + "agents_call_models",), route="classifier_small", context={"task": "classify", "tokens": 500},
         covers=(DS + "exception_classification",)),
    Case("drafts are routed to the cheapest model", AP_BOT, "invoke", "model", None, "allow",
         (DS + "agents_call_models",), route="classifier_small", context={"task": "draft", "tokens": 500},
         covers=(DS + "cheap_drafts",)),
    Case("undeclared agent", agent("shadow_agent"), "read", "dataset", "erp/invoices/7", "deny", ("<agent-identity>",)),
    # --- finance.invoice_exceptions ----------------------------------------------------------
    Case("agent reads the invoice", AP_BOT, "read", "dataset", "erp/invoices/7", "allow", (FI + "agent_reads_invoices",)),
    Case("agent blocks a duplicate", AP_BOT, "block_invoice", "tool", "erp/invoices", "allow",
         (FI + "agent_blocks_duplicates",)),
    Case("agent asks the buyer", AP_BOT, "notify", "tool", "erp/buyer-requests", "allow", (FI + "agent_asks_buyers",)),
    Case("agent queues for review", AP_BOT, "notify", "tool", "ap/review-queue", "allow",
         (FI + "agent_queues_for_review",)),
    Case("agent pays a routine invoice", AP_BOT, "approve_payment", "tool", "erp/payments", "allow",
         (FI + "agent_pays_routine_invoices",), context={"amount": 5_000, "confidence": 0.95, **EUR}),
    Case("a payment from outside the corporate network", AP_BOT, "approve_payment", "tool", "erp/payments", "deny",
         (FI + "payments_from_corporate_networks_only",),
         context={"amount": 5_000, "confidence": 0.95, "source_ip": "198.51.100.4", **EUR}),
    Case("an agent's payment on a Paris Saturday", AP_BOT, "approve_payment", "tool", "erp/payments", "deny",
         (FI + "agent_pays_on_paris_working_days",),
         context={"amount": 5_000, "confidence": 0.95, "requested_at": "2026-03-14T10:00:00+01:00", **EUR}),
    Case("an agent's payment at 19:00 in Paris", AP_BOT, "approve_payment", "tool", "erp/payments", "deny",
         (FI + "agent_pays_in_paris_office_hours",),
         context={"amount": 5_000, "confidence": 0.95, "requested_at": "2026-03-10T18:00:00Z", **EUR}),
    Case("an agent's payment after a bank change", AP_BOT, "approve_payment", "tool", "erp/payments", "deny",
         (FI + "agent_never_pays_after_a_bank_change",), context={"amount": 5_000, "confidence": 0.95, **EUR},
         data={"vendor_status": "active", "vendor_age_days": 400, "bank_details_changed_at": BANK_CHANGE}),
    Case("agent may not pay above the auto-pay limit", AP_BOT, "approve_payment", "tool", "erp/payments", "deny",
         ("<default-deny>",), context={"amount": 60_000, "confidence": 0.95, **EUR}),
    Case("analyst may not pay above 250k", ALICE, "approve_payment", "tool", "erp/payments", "deny",
         ("<default-deny>",), context={"amount": 300_000, **EUR}),
    Case("controller pays a large invoice after approval", CONTROLLER, "approve_payment", "tool", "erp/payments",
         "allow", (FI + "controller_pays_large_invoices",), context={"amount": 300_000, **EUR},
         approvals=({"gate": DS + "large_payment", "approver": "sue", "roles": ["senior_analyst"]},)),
    Case("unknown currency", ALICE, "approve_payment", "tool", "erp/payments", "deny",
         (FI + "no_payment_in_unknown_currency",), context={"amount": 100, "currency": "JPY"}),
    Case("sanctioned vendor", AP_BOT, "block_invoice", "tool", "erp/invoices", "deny", (FI + "no_sanctioned_vendors",),
         data={"vendor_status": "sanctioned"}),
    Case("first payment to a new vendor", ALICE, "approve_payment", "tool", "erp/payments", "escalate",
         (FI + "new_vendor_payments", FI + "analysts_pay_invoices"), context={"amount": 500, **EUR},
         data={"vendor_age_days": 10}, obligations=("approval_required",)),
    Case("classifier over its daily tokens is rerouted", AP_BOT, "invoke", "model", "frontier_llm", "allow",
         (FI + "classifier_daily_tokens", DS + "agents_call_models"), route="classifier_small",
         context={"tokens": 1000}, charges=(("agent:invoice_classifier", "tokens", 399_500),),
         obligations=("budget_warning",)),
    Case("over budget but already on the fallback model", AP_BOT, "invoke", "model", "classifier_small", "allow",
         (DS + "agents_call_models",), context={"tokens": 1000},
         charges=(("agent:invoice_classifier", "tokens", 450_000),), obligations=("budget_warning",)),
    # --- fraud.routing -------------------------------------------------------------------------
    Case("first pass goes to the fast model", FRAUD_BOT, "invoke", "model", None, "allow",
         (FR + "screener_calls_models",), route="fraud_fast", context={"task": "fraud_score", "tokens": 500},
         covers=(FR + "first_pass",)),
    Case("second opinion goes to the deep model", FRAUD_BOT, "invoke", "model", None, "allow",
         (FR + "screener_calls_models",), route="fraud_deep",
         context={"task": "fraud_second_opinion", "tokens": 500}, covers=(FR + "second_opinion",)),
    Case("card data stays internal", FRAUD_BOT, "invoke", "model", "frontier_llm", "deny",
         (FR + "card_data_stays_internal",), data={"classification": "pii"}, context={"tokens": 10}),
    Case("screener blocks fraud", FRAUD_BOT, "block_transaction", "tool", "payments/blocks", "allow",
         (FR + "screener_blocks_fraud",)),
    Case("screener releases a small transaction", FRAUD_BOT, "release_transaction", "tool", "payments/releases",
         "allow", (FR + "screener_releases",), context={"amount": 5_000}),
    Case("release above 10k needs the fraud lead", FRAUD_BOT, "release_transaction", "tool", "payments/releases",
         "escalate", (FR + "large_releases", FR + "screener_releases"), context={"amount": 15_000},
         obligations=("approval_required",)),
    Case("screener may not release above 25k", FRAUD_BOT, "release_transaction", "tool", "payments/releases",
         "deny", ("<default-deny>",), context={"amount": 30_000}),
    Case("screener opens a confident case", FRAUD_BOT, "review_transaction", "tool", "payments/cases", "allow",
         (FR + "screener_opens_cases",), context={"confidence": 0.95}),
    Case("ambiguous score goes to an analyst", FRAUD_BOT, "review_transaction", "tool", "payments/cases", "escalate",
         (FR + "ambiguous_scores", FR + "screener_opens_cases"), context={"confidence": 0.88},
         obligations=("approval_required",)),
    Case("analyst works a case", user("fay", "fraud_lead"), "review_transaction", "tool", "payments/cases/9",
         "allow", (FR + "analysts_work_cases",), context={"confidence": 0.95}),
    Case("fraud screening over its daily tokens is rerouted", FRAUD_BOT, "invoke", "model", "fraud_deep", "allow",
         (FR + "screening_tokens", FR + "screener_calls_models"), route="fraud_fast",
         context={"tokens": 1000, "workflow": "fraud-routing"},
         charges=(("workflow:fraud-routing", "tokens", 1_999_500),), obligations=("budget_warning",)),
    # --- it.tickets --------------------------------------------------------------------------------
    Case("triage is routed to the small model", TRIAGE_BOT, "invoke", "model", None, "allow",
         (IT + "triage_bot_calls_models",), route="triage_small", context={"task": "triage", "tokens": 800},
         covers=(IT + "ticket_labelling",)),
    Case("confidential ticket stays internal", TRIAGE_BOT, "invoke", "model", "frontier_llm", "deny",
         (IT + "no_confidential_tickets_offsite", SC + "no_confidential_plans_offsite"), data={"classification": "confidential"}, context={"tokens": 10}),
    Case("bot resets a routine password", TRIAGE_BOT, "reset_password", "tool", "iam/password-reset", "allow",
         (IT + "auto_reset_passwords",), context={"confidence": 0.95, "priority": "low"}),
    Case("bot never resets an admin account", TRIAGE_BOT, "reset_password", "tool", "iam/password-reset", "deny",
         (IT + "no_admin_resets_by_bots",), data={"account_type": "admin"}, context={"confidence": 0.95}),
    Case("bot never resets a break-glass account", TRIAGE_BOT, "reset_password", "tool", "iam/password-reset", "deny",
         (IT + "no_bot_resets_of_emergency_accounts",), data={"account_name": "breakglass-7"},
         context={"confidence": 0.95, "priority": "low"}),
    Case("bot never resets a compromised account", TRIAGE_BOT, "reset_password", "tool", "iam/password-reset", "deny",
         (IT + "no_bot_resets_of_flagged_accounts",), data={"flags": ["compromised"]},
         context={"confidence": 0.95, "priority": "low"}),
    Case("bot routes a ticket", TRIAGE_BOT, "route_ticket", "tool", "itsm/queues", "allow",
         (IT + "triage_bot_routes_tickets",)),
    Case("privileged reset needs the service manager", user("dan", "service_desk"), "reset_password", "tool",
         "iam/password-reset", "escalate", (IT + "privileged_resets", IT + "service_desk_works_tickets"),
         data={"account_type": "privileged"}, obligations=("approval_required",)),
    Case("privileged reset approved", user("dan", "service_desk"), "reset_password", "tool", "iam/password-reset",
         "allow", (IT + "service_desk_works_tickets",), data={"account_type": "privileged"},
         approvals=({"gate": IT + "privileged_resets", "approver": "mia", "roles": ["it_service_manager"]},)),
    Case("triage over its daily spend is rerouted", TRIAGE_BOT, "invoke", "model", "frontier_llm", "allow",
         (IT + "triage_tokens", IT + "triage_bot_calls_models"), route="triage_small",
         context={"tokens": 1000, "workflow": "it-ticket-triage"},
         charges=(("workflow:it-ticket-triage", "USD", 19.999),), obligations=("budget_warning",)),
    # --- marketing.campaigns -----------------------------------------------------------------------
    Case("marketer reads a segment", user("max", "marketer"), "read", "dataset", "crm/segments/spring", "allow",
         (MK + "marketers_read_segments",)),
    Case("segments with minors are off limits", user("max", "marketer"), "read", "dataset", "crm/segments/teens",
         "deny", ("<default-deny>",), data={"contains_minors": True}),
    Case("bot drafts copy", CAMPAIGN_BOT, "invoke", "model", "copy_writer", "allow", (MK + "bot_drafts_copy",),
         data={"classification": "marketing"}, context={"tokens": 1000}),
    # != on a missing attribute is false (DESIGN "Meaning"), so the rule needs data.classification
    Case("bot drafts copy: classification missing", CAMPAIGN_BOT, "invoke", "model", "copy_writer", "deny",
         ("<default-deny>",), context={"tokens": 1000}),
    Case("special-category data is not drafted", CAMPAIGN_BOT, "invoke", "model", "copy_writer", "deny",
         ("<default-deny>",), data={"classification": "special_category"}, context={"tokens": 1000}),
    Case("bot sends with consent", CAMPAIGN_BOT, "send", "tool", "messaging/email", "allow",
         (MK + "bot_sends_with_consent",), data={"consent": True}, context={"channel": "email"}),
    Case("no consent, no message", CAMPAIGN_BOT, "send", "tool", "messaging/email", "deny",
         (MK + "no_send_without_consent",), data={"consent": False}, context={"channel": "email"}),
    Case("no profiling after opt-out", user("max", "marketer"), "read", "dataset", "crm/segments/spring", "deny",
         (MK + "no_profiling_after_opt_out",), data={"purpose": "profiling", "profiling_opt_out": True}),
    Case("EEA customer data computed in the US", user("max", "marketer"), "read", "dataset", "crm/segments/spring",
         "deny", (MK + "eea_customer_data", DS + "eu_personal_data"), data={"classification": "pii", "origin": "FR"},
         context={"region": "us-east-1"}),
    Case("UK customer data computed in the US", user("max", "marketer"), "read", "dataset", "crm/segments/spring",
         "deny", (MK + "uk_customer_data",), data={"classification": "pii", "origin": "GB"},
         context={"region": "us-east-1"}),
    Case("UK customer data computed in London", user("max", "marketer"), "read", "dataset", "crm/segments/spring",
         "allow", (MK + "marketers_read_segments",), data={"classification": "pii", "origin": "GB"},
         context={"region": "eu-west-2"}),
    Case("mass send needs the marketing lead", CAMPAIGN_BOT, "send", "tool", "messaging/email", "escalate",
         (MK + "large_campaigns", MK + "bot_sends_with_consent"), data={"consent": True},
         context={"channel": "email", "audience_size": 200_000}, obligations=("approval_required",)),
    Case("special category data needs the privacy officer", user("max", "marketer"), "read", "dataset",
         "crm/segments/health", "escalate", (MK + "special_category_segments", MK + "marketers_read_segments"),
         data={"classification": "special_category"}, obligations=("approval_required",)),
    Case("copy budget spent", CAMPAIGN_BOT, "invoke", "model", "copy_writer", "deny", (MK + "copy_generation",),
         data={"classification": "marketing"}, context={"tokens": 1000}, charges=(("model:copy_writer", "USD", 300),)),
    # --- marketing.personalization (the marketing-campaign workflow) ---------------------------------
    Case("orchestrator reads a profile for segmentation", ORCHESTRATOR, "read", "dataset", "crm/customers", "allow",
         (MP + "orchestrator_reads_profiles",), data={**EU_PII, "purpose": "profiling", "profiling_opt_out": False},
         context={"region": "eu-west-1"}),
    Case("segmentation is routed to the segmenter", ORCHESTRATOR, "invoke", "model", None, "allow",
         (MP + "orchestrator_uses_marketing_models",), route="segmenter", data=EU_PII,
         context={"task": "segmentation", "tokens": 200, "region": "eu-west-1"}, covers=(MP + "segmentation",)),
    Case("content selection is routed to the content selector", ORCHESTRATOR, "invoke", "model", None, "allow",
         (MP + "orchestrator_uses_marketing_models",), route="content_selector",
         data={"classification": "marketing"}, context={"task": "content_selection", "tokens": 150},
         covers=(MP + "content_selection",)),
    Case("segmentation over the workflow's daily tokens", ORCHESTRATOR, "invoke", "model", "segmenter", "deny",
         (MP + "segmentation_tokens",), data=EU_PII,
         context={"task": "segmentation", "tokens": 200, "region": "eu-west-1", "workflow": "marketing-campaign"},
         charges=(("workflow:marketing-campaign", "tokens", 999_900),)),
    Case("orchestrator routes a channel", ORCHESTRATOR, "route_channel", "tool", "marketing/channel-router", "allow",
         (MP + "orchestrator_plans_delivery",), data=EU_PII, context={"region": "eu-west-1"}),
    Case("a small campaign launches", ORCHESTRATOR, "launch", "tool", "marketing/campaigns", "allow",
         (MP + "orchestrator_launches",), context={"audience_size": 10_000, "spend_usd": 5_000}),
    Case("a costly campaign waits for a marketing lead", ORCHESTRATOR, "launch", "tool", "marketing/campaigns",
         "escalate", (MP + "large_campaign_launch", MP + "orchestrator_launches"),
         context={"audience_size": 10_000, "spend_usd": 60_000}, obligations=("approval_required",)),
    Case("a send on a consented channel", ORCHESTRATOR, "send", "tool", "messaging/web", "allow",
         (MP + "orchestrator_sends_with_consent",), data={**EU_PII, "consent": True, "consent_withdrawn": False},
         context={"channel": "web", "region": "eu-west-1", "audience_size": 1}),
    Case("a send after consent was withdrawn", ORCHESTRATOR, "send", "tool", "messaging/web", "deny",
         (MK + "no_send_without_consent",), data={**EU_PII, "consent": True, "consent_withdrawn": True},
         context={"channel": "web", "region": "eu-west-1", "audience_size": 1}),
    # --- supply_chain.disruptions --------------------------------------------------------------------
    Case("planner reads supply data", PLANNER, "read", "dataset", "scm/signals/port-closures", "allow",
         (SC + "planner_reads_supply_data",)),
    Case("planner searches suppliers", PLANNER, "search_suppliers", "tool", "scm/supplier-search", "allow",
         (SC + "planner_searches_suppliers",)),
    Case("recommendation is routed to the planner model", PLANNER, "invoke", "model", None, "allow",
         (SC + "planner_calls_models",), route="planner_llm", context={"task": "recommend", "tokens": 1000},
         covers=(SC + "disruption_recommendation",)),
    Case("confidential plans: every candidate denied", PLANNER, "invoke", "model", None, "deny",
         (SC + "disruption_recommendation", SC + "no_confidential_plans_offsite", IT + "no_confidential_tickets_offsite",
          SC + "no_confidential_plans_offsite", IT + "no_confidential_tickets_offsite"),
         data={"classification": "confidential"}, context={"task": "recommend", "tokens": 1000}),
    Case("planner places an order", PLANNER, "place_order", "tool", "scm/purchase-orders", "allow",
         (SC + "planner_orders",), context={"amount": 100_000}),
    Case("large order needs the procurement director", PLANNER, "place_order", "tool", "scm/purchase-orders",
         "escalate", (SC + "large_expedite_orders", SC + "planner_orders"), context={"amount": 600_000},
         obligations=("approval_required",)),
    Case("orders over 1M need a contract", user("sam", "procurement_director"), "place_order", "tool",
         "scm/purchase-orders", "deny", (SC + "no_orders_without_contract",), context={"amount": 2_000_000}),
    Case("expedite approval needs a manager", PLANNER, "approve_order", "tool", "scm/purchase-orders", "escalate",
         (SC + "expedite_approval", SC + "planner_orders"), context={"amount": 1_000},
         obligations=("approval_required",)),
    Case("manager places an order", user("mo", "supply_manager"), "place_order", "tool", "scm/purchase-orders",
         "allow", (SC + "managers_order",), context={"amount": 100}),
    Case("planner spend over budget escalates", PLANNER, "invoke", "model", "planner_llm", "escalate",
         (SC + "planner_spend", SC + "planner_calls_models"),
         context={"tokens": 1000, "workflow": "supply-chain-disruption"},
         charges=(("workflow:supply-chain-disruption", "tokens", 999_500),), obligations=("approval_required",)),
    # growth: a scoped package; outside its workflow none of it applies
    Case("growth marketer reads events in the workflow", user("gia", "growth.marketer"), "read", "dataset",
         "events/web/1", "allow", (GR + "marketers_read_events",), data={"classification": "internal"},
         context=GROWTH),
    Case("growth marketer reads events outside the workflow", user("gia", "growth.marketer"), "read", "dataset",
         "events/web/1", "deny", ("<default-deny>",), data={"classification": "internal"}),
    Case("no personal data in experiments", user("gia", "growth.marketer"), "read", "dataset", "events/web/1",
         "deny", (GR + "no_personal_data_in_experiments",), data={"classification": "pii"}, context=GROWTH),
    Case("experiments outside the EU", user("gia", "growth.marketer"), "read", "dataset", "events/web/1", "deny",
         (GR + "experiments_in_the_eu",), data={"classification": "internal"},
         context={**GROWTH, "region": "us-east-1"}),
    Case("a large experiment waits for the growth lead", user("gia", "growth.marketer"), "send", "tool",
         "messaging/experiments", "escalate", (GR + "large_experiments", GR + "marketers_send_variants"),
         data={"consent": True}, context={**GROWTH, "audience_size": 60_000}, obligations=("approval_required",)),
]


@pytest.fixture(scope="module")
def rules_dir():
    return data_path("rules")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_example_decisions(rules_dir, case):
    ledger = InMemoryLedger()
    for scope, unit, amount in case.charges:
        ledger.charge(scope, unit, amount, NOW)
    decision = load_policy(rules_dir, ledger=ledger).evaluate(case.request(), now=NOW)
    got = (decision.effect, sorted(r.rule for r in decision.reasons), decision.route)
    assert got == (case.effect, sorted(case.rules), case.route), decision.reasons
    assert tuple(o.kind for o in decision.obligations) == case.obligations
    assert decision.errors == ()


def test_every_example_rule_is_covered(rules_dir):
    ps = load_policy(rules_dir).policy_set
    declared = {s.id for group in (ps.rules, ps.residencies, ps.escalations, ps.budgets, ps.routes) for s in group}
    covered = {rule for case in CASES for rule in (*case.rules, *case.covers)}
    assert declared - covered == set(), "add a case for each of these"
