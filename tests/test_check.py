"""Specification of the static checker: one small policy per finding.

Each case states the finding's code, severity, message, position and the text
under the caret; golden files pin the rendered output of files with several
findings; every example in ``rules/`` must check clean.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policyengine import ast
from policyengine.check import MAX_FINDINGS, check_policy, contradiction, pattern_covers, show
from policyengine.diagnostics import Finding, Severity, Span, render_findings
from policyengine.syntax import parse_policy

GOLDEN = Path(__file__).parent / "golden" / "check"
RULES = Path(__file__).resolve().parent.parent / "rules"

COMMON = """
package common.regions
const EU = ["DE", "FR", "IE"]
const US = ["US"]
"""

BODY = """role analyst
role senior_analyst extends analyst
agent bot roles analyst
model small hosting internal
"""
BASE = "\npackage t\n" + BODY
VERSIONED = ('\npackage t\nrole analyst\nmodel small hosting internal\n version "2.3.1", "2.4.0"\n'
             'agent scorer roles analyst\n version "1.0", "1.1"\n')
WITH_REGIONS = "\npackage t\nimport common.regions\n" + BODY


def parse(text: str, path: str) -> ast.PolicyFile:
    return parse_policy(textwrap.dedent(text), path)


def check(*texts: str):
    files = [parse(text, f"f{i}.policy") for i, text in enumerate(texts)]
    return check_policy(files)


def underlined(texts: tuple[str, ...], finding: Finding) -> str:
    """The source text the caret of ``finding`` sits under."""
    index = int(finding.span.file.removeprefix("f").removesuffix(".policy"))
    lines = textwrap.dedent(texts[index]).splitlines()
    line = lines[finding.span.line - 1]
    if finding.span.end_line != finding.span.line:
        return line[finding.span.col - 1 :]
    return line[finding.span.col - 1 : finding.span.end_col - 1]


@dataclass(frozen=True)
class Case:
    id: str
    texts: tuple[str, ...]
    code: str
    message: str
    at: str  # "file-index:line:col"
    text: str  # what the caret underlines
    help: str | None = None
    severity: Severity = Severity.ERROR
    others: tuple[str, ...] = ()  # codes of the other findings the same text rightly has


W = Severity.WARNING

CASES = [
    # --- unknown names --------------------------------------------------------------
    Case("role in rule", (BASE + 'rule r allow role analyts to read dataset "x"\n',),
         "unknown-role", "unknown role 'analyts'", "0:7:19", "analyts", "did you mean 'analyst'?"),
    Case("role in extends", ("package t\nrole lead extends analyst\n",),
         "unknown-role", "unknown role 'analyst'", "0:2:19", "analyst", "declare it with 'role analyst'"),
    Case("role of an agent", ("package t\nrole ap\nagent bot\n  roles ap, apx\n",),
         "unknown-role", "unknown role 'apx'", "0:4:13", "apx", "did you mean 'ap'?"),
    Case("deny glob narrowed to one segment", (BASE + 'rule r deny any to read dataset "crm/*/x*"\n',),
         "glob-segment", "'*' in \"crm/*/x*\" matches within one '/' segment only, so this deny no longer covers "
         "ids below it", "0:7:33", '"crm/*/x*"', 'write "crm/**/x**" to deny across segments', W),
    Case("an action group in 'applies to action'",
         (BASE + 'const SENSITIVE = ["delete", "export"]\nrule r deny any to any dataset "x"\n applies to action SENSITIVE\n',),
         "action-group", "'SENSITIVE' is an action group (a const), but 'applies to action' names single actions: as "
         "written it would apply to no request", "0:9:20", "SENSITIVE", "write the actions (delete, export)"),
    Case("an action group in a file's scope",
         ("\npackage t\nscope action SENSITIVE\n" + BODY + 'const SENSITIVE = ["delete"]\n',),
         "action-group", "'SENSITIVE' is an action group (a const), but 'scope action' names single actions: as "
         "written it would apply to no request", "0:3:14", "SENSITIVE", "write the actions (delete)"),
    Case("an action group in a schema's 'for action'",
         (BASE + 'const PAYS = ["pay"]\nschema s for action PAYS attribute data.x number required\n',),
         "action-group", "'PAYS' is an action group (a const), but a schema's 'for action' names single actions: as "
         "written it would apply to no request", "0:8:21", "PAYS", "write the actions (pay)"),
    Case("actions that differ only in case",
         (BASE + 'rule a allow any to delete dataset "x"\nrule d deny any to Delete dataset "x"\n',),
         "name-case", "action 'Delete' differs only in case from 'delete'", "0:8:20", "Delete",
         "names are exact and requests that differ only in case are refused; rename one (first at f0.policy:7:21)"),
    Case("an action test that differs only in case from a rule head's",
         (BASE + 'rule d deny any to delete dataset "x" when action == "Delete"\n',),
         "name-case", "action 'delete' differs only in case from 'Delete', which an 'action ==' or 'action in' test "
         "names", "0:7:20", "delete", "names are exact and requests that differ only in case are refused; rename one"),
    Case("a principal type no request has",
         (BASE + 'rule d deny any to read dataset "x" when principal.type == "Agent"\n',),
         "type-mismatch", "\"Agent\" is not a value of principal.type (a request's is one of user, agent)", "0:7:60",
         '"Agent"', "did you mean 'agent'?"),
    Case("a resource kind no request has",
         (BASE + 'rule d deny any to read dataset "x" when resource.kind in ["dataset", "datasets"]\n',),
         "type-mismatch", "\"datasets\" is not a value of resource.kind (a request's is one of model, dataset, tool, "
         "agent, workflow)", "0:7:71", '"datasets"', "did you mean 'dataset'?"),
    Case("an action test with a string no action is",
         (BASE + 'rule d deny any to any dataset "x" when action in ["delete", "s3:Delete"]\n',),
         "type-mismatch", "\"s3:Delete\" is not an action name (letters, digits and '_'), so no request's action is "
         "it", "0:7:62", '"s3:Delete"', "actions have no wildcards or separators; name each action, or use an action "
         "group"),
    Case("a role in a condition that no request holds",
         (BASE + 'rule d deny any to read dataset "x" when principal.roles contains any ["senior_analyst", "Analyst"]\n',),
         "unknown-role", "unknown role 'Analyst'", "0:7:90", '"Analyst"', "did you mean 'analyst'?"),
    Case("a deny's id prefix that differs only in case from an allow's",
         (BASE + 'rule a allow any to read dataset "prod/**"\nrule d deny any to read dataset "Prod/db/**"\n',),
         "name-case", "'Prod' in \"Prod/db/**\" differs only in case from 'prod' in \"prod/**\"", "0:8:33",
         '"Prod/db/**"', "ids are exact: a request for one spelling is not about the other, so a deny about one does "
         "not reach the other; write one spelling (first at f0.policy:7:1)"),
    Case("undeclared model with a quoted id", (BASE + 'rule r allow any to invoke model "gpt-4o"\n',),
         "undeclared-model", 'model "gpt-4o" is not declared, so this rule never applies', "0:7:34", '"gpt-4o"',
         "declare it with 'model \"gpt-4o\"'", W),
    Case("names that differ only in case", ("package t\nrole analyst\nrole Analyst\n",),
         "name-case", "role 'Analyst' differs only in case from 'analyst'", "0:3:6", "Analyst",
         "names are exact and requests that differ only in case are refused; rename one (first at f0.policy:2:6)"),
    Case("contains with a list", (BASE + 'rule r allow any to read dataset "x" when data.t contains ["a"]\n',),
         "type-mismatch", "'contains' looks for one value, but [\"a\"] is a list", "0:7:59", '["a"]',
         "use 'contains any' or 'contains all' with a list"),
    Case("contains any with a string", (BASE + 'rule r allow any to read dataset "x" when data.t contains any "a"\n',),
         "type-mismatch", "'contains any' needs a list on its right, but \"a\" is a string", "0:7:63", '"a"',
         "write [\"a\"] or use 'contains'"),
    Case("starts with a number", (BASE + 'rule r allow any to read dataset "x" when data.t starts with 5\n',),
         "type-mismatch", "'starts with' tests strings, but 5 is a number", "0:7:62", "5"),
    Case("not a CIDR block", (BASE + 'rule r allow any to read dataset "x" when context.ip in cidr "10.0.0.300/8"\n',),
         "type-mismatch", '"10.0.0.300/8" is not a CIDR block or a list of them', "0:7:62", '"10.0.0.300/8"',
         'write "10.0.0.0/8" or ["10.0.0.0/8", "2001:db8::/32"]'),
    Case("age against a bare number", (BASE + 'rule r allow any to read dataset "x" when age of context.at < 90\n',),
         "type-mismatch", "comparing a duration with a number: 90 has no unit", "0:7:63", "90",
         "write a duration such as '90d' or '90h'"),
    Case("not a weekday", (BASE + 'rule r allow any to read dataset "x" when weekday of context.at == "sunday"\n',),
         "type-mismatch", '"sunday" is not a weekday', "0:7:68", '"sunday"',
         'weekdays are "mon", "tue", "wed", "thu", "fri", "sat", "sun"'),
    Case("not a time zone", (BASE + 'rule r allow any to read dataset "x" when hour of context.at at "Mars/Base" > 9\n',),
         "type-mismatch", "'Mars/Base' is not a time zone", "0:7:43", 'hour of context.at at "Mars/Base"',
         'use an IANA name such as "Europe/Paris", or "UTC"'),
    Case("the host's zone", (BASE + 'rule r allow any to read dataset "x" when hour of context.at at "localtime" > 9\n',),
         "type-mismatch", "'localtime' is not a time zone", "0:7:43", 'hour of context.at at "localtime"',
         'use an IANA name such as "Europe/Paris", or "UTC"'),
    Case("action group naming no known action",
         (BASE + 'const EU = ["DE", "FR"]\nrule r allow any to EU dataset "x"\n',),
         "unknown-action", "action group 'EU' names no known action (DE, FR)", "0:8:21", "EU",
         "no rule head, schema 'for action' or 'action ==' condition names one of them; "
         "check the const is a list of actions", W),
    Case("action group that is not a list of actions",
         (BASE + 'const LIMIT = 5\nrule r allow any to read, LIMIT dataset "x"\n',),
         "type-mismatch", "'LIMIT' is used as a group of actions, but its value 5 is not a list of action names",
         "0:8:27", "LIMIT", 'declare it as const NAME = ["read", "list"]'),
    Case("record without the key", (BASE + 'const LIMITS = {"eu": 1}\n'
                                    'rule r allow any to read dataset "x" when context.n > LIMITS["us"]\n',),
         "type-mismatch", "'LIMITS' has no entry \"us\"", "0:8:62", '"us"', 'its keys are "eu"'),
    Case("lookup in a list", (BASE + 'const EU = ["DE"]\nrule r allow any to read dataset "x" when context.n > EU["a"]\n',),
         "type-mismatch", "'EU' is not a record, so it has no entries to look up", "0:8:55", "EU",
         'declare it as const NAME = {"key": value, ...}'),
    Case("record in a condition", (BASE + 'rule r allow any to read dataset "x" when context.n == {"a": 1}\n',),
         "type-mismatch", "a record is a const value: declare it with 'const NAME = {...}' and look it up as NAME[key]",
         "0:7:56", '{"a": 1}'),
    Case("lookup compared with a string", (BASE + 'const LIMITS = {"eu": 1, "us": 2}\n'
                                           'rule r allow any to read dataset "x" when LIMITS[context.r] == "1"\n',),
         "type-mismatch", 'comparing a number with a string: LIMITS[context.r] == "1" is never true', "0:8:64", '"1"',
         "remove the quotes"),
    Case("escalation to role", (BASE + "escalate big when context.amount > 10 to role senoir_analyst\n",),
         "unknown-role", "unknown role 'senoir_analyst'", "0:7:47", "senoir_analyst",
         "did you mean 'senior_analyst'?"),
    Case("budget for role", (BASE + "budget b for role analysts limit 5 USD per day\n",),
         "unknown-role", "unknown role 'analysts'", "0:7:14", 'role analysts', "did you mean 'analyst'?"),
    Case("budget escalates to role", (BASE + "budget b for workflow \"w\" limit 5 USD per day "
                                      "on exceed escalate to role boss\n",),
         "unknown-role", "unknown role 'boss'", "0:7:74", "boss", "declare it with 'role boss'"),
    Case("bias escalates to role", (BASE + 'bias f for model small metric disparate_impact of outcome == "ok" '
                                    "by subject.region threshold >= 0.8 on breach escalate to role risk\n",),
         "unknown-role", "unknown role 'risk'", "0:7:129", "risk", "declare it with 'role risk'"),
    Case("route prefers model", (BASE + "route r prefer small, lage\n",),
         "unknown-model", "unknown model 'lage'", "0:7:23", "lage", "declare it with 'model lage'"),
    Case("budget for model", (BASE + 'budget b for model "smal" limit 5 USD per day\n',),
         "unknown-model", "unknown model 'smal'", "0:7:14", 'model "smal"', "did you mean 'small'?"),
    Case("budget routes to model", (BASE + 'budget b for workflow "w" limit 5 USD per day '
                                    "on exceed route to model big\n",),
         "unknown-model", "unknown model 'big'", "0:7:72", "big", "declare it with 'model big'"),
    Case("bias for model", (BASE + 'bias f for model tiny metric disparate_impact of outcome == "ok" '
                            "by subject.region threshold >= 0.8\n",),
         "unknown-model", "unknown model 'tiny'", "0:7:18", "tiny", "declare it with 'model tiny'"),
    Case("drift for model", (BASE + "drift d for model smll metric psi of output.confidence "
                             "baseline previous 30 days threshold < 0.2\n",),
         "unknown-model", "unknown model 'smll'", "0:7:19", "smll", "did you mean 'small'?"),
    Case("rule names an undeclared model", (BASE + 'rule r allow any to invoke model "smal"\n',),
         "undeclared-model", 'model "smal" is not declared, so this rule never applies', "0:7:34", '"smal"',
         "did you mean 'small'?", W),
    Case("rule names an undeclared agent", (BASE + 'rule r allow any to call agent "bto"\n',),
         "undeclared-agent", 'agent "bto" is not declared, so this rule never applies', "0:7:32", '"bto"',
         "did you mean 'bot'?", W),
    Case("rule for unknown agent", (BASE + 'rule r allow agent bto to read dataset "x"\n',),
         "unknown-agent", "unknown agent 'bto'", "0:7:20", "bto", "did you mean 'bot'?"),
    Case("budget for unknown agent", (BASE + "budget b for agent robot limit 5 USD per day\n",),
         "unknown-agent", "unknown agent 'robot'", "0:7:14", "agent robot", "did you mean 'bot'?"),
    Case("unknown resource kind", (BASE + 'rule r allow any to read datset "x"\n',),
         "unknown-resource-kind", "unknown resource kind 'datset'", "0:7:26", "datset", "did you mean 'dataset'?"),
    # --- consts and imports ----------------------------------------------------------
    Case("unknown const", (BASE + 'const RESTRICTED = ["secret"]\n'
                           'rule r allow any to read dataset "x" when data.c in RESTRICTD\n',),
         "unknown-const", "unknown const 'RESTRICTD'", "0:8:53", "RESTRICTD", "did you mean 'RESTRICTED'?"),
    Case("misspelt bare attribute", (BASE + 'rule r allow any to read dataset "x" when actoin == "read"\n',),
         "unknown-const", "unknown const 'actoin'", "0:7:43", "actoin", "did you mean 'action'?"),
    Case("const of a package not imported", (COMMON, BASE + 'rule r allow any to read dataset "x" when data.o in EU\n'),
         "unknown-const", "unknown const 'EU'", "1:7:53", "EU", "'EU' is declared in package common.regions; "
         "add 'import common.regions'"),
    Case("const of a package that was not found", ('package t\nimport common.regions\n'
                                                   'rule r allow any to read dataset "x" when data.o in EU\n',),
         "unknown-const", "unknown const 'EU'", "0:3:53", "EU", "it may be declared in package common.regions, which is "
         "imported but was not found; check it together with the file that declares that package",
         others=("unresolved-import",)),
    Case("import that no file declares", ("package t\nimport common.region\n", COMMON),
         "unresolved-import", "no file declares package 'common.region'", "0:2:8", "common.region",
         "did you mean 'common.regions'?"),
    Case("consts in a cycle", ("package t\nconst A = [B]\nconst B = [A]\n",),
         "const-cycle", "consts refer to each other in a cycle: A -> B -> A", "0:2:7", "A"),
    Case("const in two imports", ("package a\nconst X = [1]\n", "package b\nconst X = [2]\n",
                                  'package t\nimport a\nimport b\nrule r allow any to read dataset "x" when data.n in X\n'),
         "ambiguous-const", "'X' is declared in several imported packages: a, b", "2:4:53", "X",
         "declare 'X' in package t to choose one"),
    # --- declarations ------------------------------------------------------------------
    Case("extends cycle", ("package t\nrole a extends c\nrole b extends a\nrole c extends b\n",),
         "extends-cycle", "roles extend each other in a cycle: a -> c -> b -> a", "0:3:16", "a",
         "remove one of the 'extends' links so inheritance runs one way"),
    Case("role declared in two files of one package", (BASE, "package t\nrole analyst\n"),
         "duplicate-name", "role 'analyst' is declared twice in the policy set", "1:2:6", "analyst",
         "first declared as role at f0.policy:3:6; rename one of them"),
    Case("name reused in a package across files",
         ('package t\nrule r allow any to read dataset "x"\n', "package t\nbudget r for workflow \"w\" limit 1 USD per day\n"),
         "duplicate-name", "budget 'r' is declared twice in package t", "1:2:8", "r",
         "first declared as rule at f0.policy:2:6; rename one of them"),
    Case("const declared twice", ("package t\nconst A = [1]\nconst A = [2]\n",),
         "duplicate-name", "const 'A' is declared twice in package t", "0:3:7", "A",
         "first declared as const at f0.policy:2:7; rename one of them"),
    Case("warn at over 100%", ('package t\nbudget b for workflow "w" limit 5 USD per day warn at 120%\n',),
         "percentage-range", "warn at 120% is outside 0..100%", "0:2:55", "120%",
         "warn at is a share of the limit, such as 'warn at 80%'"),
    Case("warn at on its own line, below 0%", (('package t\nbudget b\n    for workflow "w"\n    limit 5 USD per day\n'
                                                "    warn at -5 %\n"),),
         "percentage-range", "warn at -5% is outside 0..100%", "0:5:13", "-5 %",
         "warn at is a share of the limit, such as 'warn at 80%'"),
    Case("unknown hosting", ("package t\nmodel m provider \"p\" hosting onprem\n",),
         "unknown-hosting", "model 'm' has unknown hosting 'onprem'", "0:2:30", "onprem",
         "hosting is internal or external"),
    Case("misspelt hosting", ("package t\nmodel m\n    hosting internl\n",),
         "unknown-hosting", "model 'm' has unknown hosting 'internl'", "0:3:13", "internl", "did you mean 'internal'?"),
    Case("limit of zero", ('package t\nbudget b for workflow "w" limit 0 USD per day\n',),
         "limit-range", "limit 0 USD per day is not positive", "0:2:27", "limit 0 USD per day",
         "a limit of zero or less denies every request; use a deny rule for that"),
    Case("limit repeated", ('package t\nbudget b for workflow "w"\n limit 5 USD per day\n limit 9 USD per day\n',),
         "duplicate-limit", "budget 'b' limits USD per day twice", "0:4:2", "limit 9 USD per day",
         "the lower limit alone decides; remove the other", W),
    Case("route prefers a model twice", (BASE + "route r prefer small, small\n",),
         "duplicate-candidate", "model 'small' is preferred twice", "0:7:23", "small", None, W),
    Case("unknown bias metric", (BASE + 'bias f for model small metric parity of outcome == "ok" '
                                 "by subject.region threshold >= 0.8\n",),
         "unknown-metric", "unknown bias metric 'parity'", "0:7:31", "parity",
         "bias metrics are disparate_impact, demographic_parity, equalized_odds"),
    Case("unknown drift metric", (BASE + "drift d for model small metric kl of output.confidence "
                                  "baseline previous 30 days threshold < 0.2\n",),
         "unknown-metric", "unknown drift metric 'kl'", "0:7:32", "kl", "drift metrics are psi, ks, chi2"),
    Case("ratio threshold above 1", (BASE + 'bias f for model small metric disparate_impact of outcome == "ok" '
                                     "by subject.region threshold >= 80\n",),
         "threshold-range", "disparate_impact lies in 0..1, so threshold >= 80 is always or never met", "0:7:95",
         ">= 80", None, W),
    Case("threshold the wrong way round", (BASE + "drift d for model small metric psi of output.confidence "
                                           "baseline previous 30 days threshold > 0.2\n",),
         "threshold-direction", "psi is better when lower, but the threshold asks for > 0.2", "0:7:93", "> 0.2",
         "the threshold states the healthy range, e.g. 'threshold >= 0.8' or 'threshold < 0.2'", W),
    # --- expressions -------------------------------------------------------------------
    Case("unknown attribute root", (BASE + 'rule r allow any to read dataset "x" when contxt.tokens < 5\n',),
         "unknown-attribute", "unknown attribute 'contxt.tokens'", "0:7:43", "contxt.tokens", "did you mean 'context'?"),
    Case("attribute of the action name", (BASE + 'rule r allow any to read dataset "x" when action.name == "a"\n',),
         "unknown-attribute", "'action' is a single name and has no attribute 'name'", "0:7:43", "action.name",
         'compare \'action\' itself, e.g. action == "..."'),
    Case("audit attribute in a request rule", (BASE + 'rule r allow any to read dataset "x" when subject.age > 18\n',),
         "misplaced-attribute", "'subject' is only known in the audit trail, never in a request, so this comparison "
         "is always false", "0:7:43", "subject.age",
         "use it in bias and drift monitors; requests carry principal, action, resource, data, context", W),
    Case("region that is a number", (BASE + 'residency r require region in ["eu-west-1", 5]\n',),
         "type-mismatch", "a region is a name in quotes, not 5", "0:7:45", "5", 'write it as "eu-west-1"'),
    Case("min samples zero", (BASE + 'bias f for model small metric disparate_impact of outcome == "ok" '
                              "by subject.region threshold >= 0.8 min samples 0\n",),
         "threshold-range", "min samples 0 makes every window count", "0:7:6", "f", "use at least 1", W),
    Case("string ordered", (BASE + 'rule r allow any to read dataset "x" when context.region < "eu"\n',),
         "type-mismatch", "'<' orders numbers, but \"eu\" is a string", "0:7:60", '"eu"',
         "use == or != for strings, 'in' for lists"),
    Case("list const ordered", (BASE + 'const L = [1, 2]\nrule r allow any to read dataset "x" when context.n >= L\n',),
         "type-mismatch", "'>=' orders numbers, but L is a list", "0:8:56", "L", "use == or != for strings, 'in' for lists"),
    Case("in a string", (BASE + 'rule r allow any to read dataset "x" when data.c in "pii"\n',),
         "type-mismatch", "'in' needs a list on its right, but \"pii\" is a string", "0:7:53", '"pii"',
         'write ["pii"] or use =='),
    Case("string equals number", (BASE + 'const LIMIT = "10"\nrule r allow any to read dataset "x" when 10 == LIMIT\n',),
         "type-mismatch", "comparing a number with a string: 10 == LIMIT is never true", "0:8:49", "LIMIT",
         "remove the quotes"),
    Case("number differs from string", (BASE + 'rule r allow any to read dataset "x" when context.n != 1 and 1 != "1"\n',),
         "type-mismatch", "comparing a number with a string: 1 != \"1\" is always true", "0:7:67", '"1"',
         "remove the quotes"),
    Case("equals a list", (BASE + 'rule r allow any to read dataset "x" when data.c == ["a", "b"]\n',),
         "type-mismatch", "'==' compares single values, but [\"a\", \"b\"] is a list", "0:7:53", '["a", "b"]',
         "use 'in' to test membership"),
    Case("literal as condition", (BASE + 'rule r allow any to read dataset "x" when "yes"\n',),
         "type-mismatch", 'expected a condition, found a string "yes"', "0:7:43", '"yes"',
         "compare it with ==, <, in ... to make a condition"),
    Case("residency region not a list", (BASE + 'const HOME = "eu-west-1"\nresidency r require region in HOME\n',),
         "type-mismatch", "'require region in' needs a list of regions, not HOME", "0:8:31", 'HOME',
         'write a list such as ["eu-west-1"] or a const that holds one'),
    # --- rules that never match or never take effect -----------------------------------------
    Case("equal to two strings", (BASE + 'rule r allow any to read dataset "x"\n when data.c == "a" and data.c == "b"\n',),
         "never-matches", "rule 'r' can never match: data.c == \"b\" contradicts data.c == \"a\"", "0:8:25",
         'data.c == "b"', "remove the contradiction or the whole rule", W),
    Case("empty number range", (BASE + 'rule r allow any to read dataset "x"\n when context.n < 5 and context.n > 10\n',),
         "never-matches", "rule 'r' can never match: context.n > 10 contradicts context.n < 5", "0:8:25",
         "context.n > 10", "remove the contradiction or the whole rule", W),
    Case("literal false", (BASE + 'escalate e when false to role analyst\n',),
         "never-matches", "escalate 'e' can never match: the condition is false", "0:7:17", "false",
         "remove the contradiction or the whole rule", W),
    Case("value outside a const list", (COMMON, WITH_REGIONS + 'rule r allow any to read dataset "x"\n'
                                        ' when data.o in EU and data.o == "US"\n'),
         "never-matches", "rule 'r' can never match: data.o == \"US\" contradicts data.o in EU",
         "1:9:24", 'data.o == "US"', "remove the contradiction or the whole rule", W),
    Case("unless repeats when", (BASE + 'rule r allow any to read dataset "x"\n when data.c == "a"\n unless data.c == "a"\n',),
         "never-matches", "rule 'r' can never match: 'unless' repeats 'when'", "0:9:9", 'data.c == "a"', None, W),
    Case("unless implied by when", (BASE + 'rule r allow any to read dataset "x"\n when data.c == "a" and context.n > 1'
                                    '\n unless context.n > 1\n',),
         "never-matches", "rule 'r' can never match: whenever 'when' holds, 'unless' holds too", "0:9:9",
         "context.n > 1", None, W),
    Case("route prefers a model that is always denied",
         (BASE + 'model big hosting external\nrule no_big deny any to invoke model "big"\nroute r prefer big, small\n',),
         "denied-candidate", "route 'r' prefers model 'big', but rule 't.no_big' always denies invoking it", "0:9:16",
         "big", "the deny is at f0.policy:8:6; remove the candidate or narrow the deny", W),
    Case("allow under an unconditional deny",
         (BASE + 'rule no deny role analyst to read dataset "erp/**"\n'
                 'rule yes allow role senior_analyst to read dataset "erp/invoices/*"\n',),
         "shadowed-allow", "allow 'yes' never takes effect: rule 't.no' always denies what it allows", "0:8:6", "yes",
         "the deny is at f0.policy:7:6; give it a 'when' or narrow one of the two", W),
    Case("agent allow under a role deny",
         (BASE + 'rule no deny role analyst to any tool "*"\nrule yes allow agent bot to call tool "search"\n',),
         "shadowed-allow", "allow 'yes' never takes effect: rule 't.no' always denies what it allows", "0:8:6", "yes",
         "the deny is at f0.policy:7:6; give it a 'when' or narrow one of the two", W),
    # --- versions: a condition naming a version nothing declares ------------------------------
    Case("a model version the targeted model does not declare",
         (VERSIONED + 'rule r allow any to invoke model "small"\n when resource.version == "2.4.1"\n',),
         "unknown-version", "rule 'r': resource.version is compared with \"2.4.1\", which is not a declared version "
         "of model 'small' (declared: 2.3.1, 2.4.0)", "0:9:27", '"2.4.1"', "did you mean '2.4.0'?"),
    Case("a version in a list const, pointed at where the const is used",
         (VERSIONED + 'const OK = ["2.3.1", "9"]\nrule r allow any to invoke model "sm*"\n'
                      ' when resource.attrs.version in OK\n',),
         "unknown-version", "rule 'r': resource.attrs.version is compared with \"9\", which is not a declared version "
         "of any model matching 'sm*' (declared: 2.3.1, 2.4.0)", "0:10:33", "OK",
         'declare it: version "2.3.1", "2.4.0", "9"'),
    Case("a version of a model that declares none",
         (VERSIONED + 'model big hosting external\nrule r deny any to invoke model "big"\n'
                      ' when resource.version != "1.0"\n',),
         "unknown-version", "rule 'r': resource.version is compared with \"1.0\", which is not a declared version "
         "of model 'big' (declared: none)", "0:10:27", '"1.0"', 'declare its versions: version "1.0"'),
    Case("an agent version the rule's agent does not declare",
         (VERSIONED + 'rule r allow agent scorer to read dataset "*"\n when principal.version == "1.2"\n',),
         "unknown-version", "rule 'r': principal.version is compared with \"1.2\", which is not a declared version "
         "of agent 'scorer' (declared: 1.0, 1.1)", "0:9:28", '"1.2"', "did you mean '1.1'?"),
    Case("an escalation about any versioned model",
         (VERSIONED + 'escalate review\n when action == "promote" and resource.version in ["2.4.0", "3.0"]\n'
                      ' to role analyst\n',),
         "unknown-version", "escalate 'review': resource.version is compared with \"3.0\", which is not a declared "
         "version of any model or agent (declared: 1.0, 1.1, 2.3.1, 2.4.0)", "0:9:61", '"3.0"',
         "did you mean '1.0'?"),
    # --- masks: a field no schema or rule reads is fine; these are not --------------------------
    Case("mask of a bare word", ("package t\nmask email hash\n",),
         "mask-path", "'email' is not a request field a mask can name", "0:2:6", "email",
         "write the field under context, data, principal, resource, as in: mask data.customer.email hash"),
    Case("mask of a scalar root", ("package t\nmask action.x drop\n",),
         "mask-path", "'action.x' is not a request field a mask can name", "0:2:6", "action.x",
         "write the field under context, data, principal, resource, as in: mask data.customer.email hash"),
    Case("mask of an unknown root", ("package t\nmask customer.email drop\n",),
         "mask-path", "'customer.email' is not a request field a mask can name", "0:2:6", "customer.email",
         "write the field under context, data, principal, resource, as in: mask data.customer.email hash"),
    Case("mask with an unknown action", ("package t\nmask data.customer.email hsh\n",),
         "mask-action", "a mask hashes or drops its field, not 'hsh'", "0:2:26", "hsh", "did you mean 'hash'?"),
    Case("mask with no action it could mean", ("package t\nmask data.ssn redact\n",),
         "mask-action", "a mask hashes or drops its field, not 'redact'", "0:2:15", "redact", "write hash or drop"),
    Case("the same field masked twice",
         ("package t\nmask principal.email hash\n", "package u\nmask principal.attrs.email drop\n"),
         "duplicate-mask", "'principal.attrs.email' is masked twice in the policy set (/request/principal/attrs/email)",
         "1:2:6", "principal.attrs.email", "first masked at f0.policy:2:6; keep one mask per field"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_finding(case: Case) -> None:
    result = check(*case.texts)
    matching = [f for f in result.findings if f.code == case.code]
    assert matching, f"no {case.code} in {[f.headline() for f in result.findings]}"
    finding = matching[0]
    index, line, col = (int(part) for part in case.at.split(":"))
    assert (finding.message, finding.severity, finding.help) == (case.message, case.severity, case.help)
    assert underlined(case.texts, finding) == case.text
    assert (finding.span.file, finding.span.line, finding.span.col) == (f"f{index}.policy", line, col)
    others = [f.code for f in result.findings if f is not finding]
    assert others == list(case.others), [f.headline() for f in result.findings]
    assert (result.policy is None) == (case.severity is Severity.ERROR)


def test_action_groups_expand_in_the_checked_policy() -> None:
    """A const named in a rule head stands for its actions: the checked rule lists them, once each."""
    result = check(BASE + 'const READ_ACTIONS = ["read", "list"]\n'
                   'rule r allow any to READ_ACTIONS, read, export dataset "x"\n'
                   'rule w deny any to write dataset "x" when action in READ_ACTIONS\n')
    assert [f.headline() for f in result.findings] == []
    (rule, _) = result.policy.rules
    assert [a.value for a in rule.decl.actions] == ["read", "list", "export"]


def test_checks_the_parser_already_enforces_hold_for_built_trees() -> None:
    """The parser rejects these in text; trees built in code still go through the checker."""
    file = parse('package t\nmodel m hosting internal\nbudget b for workflow "w" limit 5 USD per day\n', "f0.policy")
    model, budget = file.decls
    built = replace(file, decls=(replace(model, hosting="onprem"), replace(budget, limits=())))
    findings = [(f.code, f.message, f.help, str(f.span)) for f in check_policy([built]).findings]
    assert findings == [
        ("unknown-hosting", "model 'm' has unknown hosting 'onprem'", "hosting is internal or external", "f0.policy:2:17"),
        ("budget-no-limit", "budget 'b' has no limit", "add a line such as 'limit 500 USD per day'", "f0.policy:3:8"),
    ]


def test_a_clean_set_has_no_findings_and_a_policy() -> None:
    result = check(COMMON, WITH_REGIONS + textwrap.dedent('''
        role model_risk
        model big hosting external
        const LOCAL = [EU, "CH"]
        rule read allow role senior_analyst to read dataset "erp/*" when data.o in LOCAL
        residency eu when data.o in EU require region in ["eu-west-1"]
        budget b for model "small" limit 5 USD per day warn at 80% on exceed route to model big
        escalate big_pay when context.amount > 10_000 to role senior_analyst within 4h else deny
        route r when context.task == "classify" prefer small, big
        bias f for model small metric disparate_impact of outcome == "ok" by subject.region
            threshold >= 0.8 on breach escalate to role model_risk
        drift d for model small metric psi of output.confidence baseline previous 30 days threshold < 0.2
        '''))
    assert [f.headline() for f in result.findings] == []
    assert result.policy is not None and result.ok


def test_policy_set_resolves_names_roles_consts_and_cites() -> None:
    result = check(
        'package common.regions\ncite "GDPR"\nconst EU = ["DE", "FR"]\n',
        'package fin\ncite "SOX 404", "GDPR"\nimport common.regions\nrole a\nrole b extends a\nrole c extends b\n'
        'agent bot roles c\nconst HOME = [EU, "CH"]\nrule r allow role a to read dataset "x"\n',
        'package fin\ncite "SOX 404", "EU AI Act"\nmodel m hosting internal\nroute r2 prefer m\n',
    )
    policy = result.policy
    assert policy is not None
    assert policy.role_closure == {"a": {"a"}, "b": {"a", "b"}, "c": {"a", "b", "c"}}
    assert policy.roles_of(["c", "nobody"]) == {"a", "b", "c"}
    assert (policy.agents["bot"].package, policy.models["m"].package) == ("fin", "fin")
    assert [s.id for s in policy.rules] == ["fin.r"] and [s.id for s in policy.routes] == ["fin.r2"]
    values = {name: [i.value for i in value.items] for name, value in policy.consts["fin"].items()}
    assert values == {"HOME": ["DE", "FR", "CH"], "EU": ["DE", "FR"]}
    assert set(policy.consts["common.regions"]) == {"EU"}
    assert policy.package_cites == {"common.regions": ("GDPR",), "fin": ("SOX 404", "GDPR", "EU AI Act")}
    when = parse('package fin\nrule q allow any to read dataset "x" when data.o in [HOME, "US"]\n', "q").decls[0].when
    substituted = policy.substitute("fin", when)
    assert [i.value for i in substituted.right.items] == ["DE", "FR", "CH", "US"]


def test_own_const_wins_over_imported_one() -> None:
    policy = check('package a\nconst X = ["a"]\n', 'package t\nimport a\nconst X = ["t"]\n').policy
    assert policy is not None and policy.consts["t"]["X"].items[0].value == "t"


def test_findings_are_sorted_and_capped() -> None:
    body = "".join(f'rule r{i} allow role nobody{i} to read dataset "x"\n' for i in range(MAX_FINDINGS + 20))
    result = check("package t\n" + body)
    assert len(result.findings) == MAX_FINDINGS + 1
    assert result.findings[-1].code == "too-many-findings"
    assert result.findings[-1].message == "20 more finding(s) not shown; fix the ones above first"
    lines = [f.span.line for f in result.findings[:-1]]
    assert lines == sorted(lines) and lines[0] == 2


def test_a_warning_keeps_the_policy_set() -> None:
    result = check(BASE + 'rule r allow any to read dataset "x" when false\n')
    assert [f.code for f in result.findings] == ["never-matches"]
    assert result.policy is not None and result.warnings and not result.errors


def test_every_problem_is_reported_not_just_the_first() -> None:
    result = check("package t\nimport nope\nrole a extends zz\nrule r allow role yy to read datset \"x\" when q.x\n")
    assert [f.code for f in result.findings] == [
        "unresolved-import", "unknown-role", "unknown-role", "unknown-resource-kind", "unknown-attribute"
    ]
    assert result.policy is None


# --- the pieces the warnings are built on ------------------------------------------------

PATTERNS = [
    # deny, allow, covered
    ("*", "anything/at/all", True),
    ("erp/*", "erp/invoices/*", False),  # '*' stays within one segment
    ("erp/**", "erp/invoices/*", True),
    ("erp/*", "erp/invoices", True),
    ("erp/*", "erp/invoices/2026", False),
    ("erp/*", "erp", False),
    ("erp/invoices/*", "erp/*", False),
    ("erp/*/2026", "erp/x/2026", True),
    ("erp/*/2026", "erp/*/2026", True),
    ("erp/*/2026", "erp/x*/2026", False),
    ("a?", "ab", True),
    ("hr/*", "erp/*", False),
]


@pytest.mark.parametrize(("deny", "allow", "covered"), PATTERNS)
def test_pattern_covers(deny: str, allow: str, covered: bool) -> None:
    assert pattern_covers(deny, allow) is covered


CONDITIONS = [
    # condition, consts, contradiction found
    ('data.c == "a" and data.c == "b"', {}, True),
    ('data.c == "a" and data.c == "a"', {}, False),
    ('data.c == "a" and data.c != "a"', {}, True),
    ('data.c == "a" and not (data.c == "a")', {}, True),
    ('data.c != "a" and data.c != "b"', {}, False),
    ("context.n < 5 and context.n > 10", {}, True),
    ("context.n < 5 and context.n >= 5", {}, True),
    ("context.n <= 5 and context.n >= 5", {}, False),
    ("5 < context.n and context.n < 5", {}, True),
    ("context.n == 3 and context.n > 3", {}, True),
    ("context.n == 1 and context.n == 1.0", {}, False),
    ("context.n == 1 and context.n == true", {}, True),  # the evaluator never finds 1 equal to true
    ('context.n == 1 and context.n == "1"', {}, True),
    ('context.n in [1, 2] and context.n == true', {}, True),
    ('not (data.c == "a") and not (data.c != "a")', {}, False),  # both hold when data.c is missing
    ('not (context.n < 5) and context.n == "x"', {}, False),  # not (x < 5) holds for a string x
    ('context.n != "a" and not (context.n not in ["a"])', {}, False),  # a list value satisfies both
    ('not (data.c in ["a", "b"]) and data.c in ["b"]', {}, True),
    ('data.o in ["DE", "FR"] and data.o in ["US"]', {}, True),
    ('data.o in ["DE", "FR"] and data.o in ["FR"]', {}, False),
    ('data.o in ["DE"] and data.o not in ["DE"]', {}, True),
    ('data.o in ["DE"] and data.o != "DE"', {}, True),
    ("data.o in []", {}, True),
    ('data.o in EU and data.o == "US"', {"EU": '["DE"]'}, True),
    ('data.o in EU and data.o == "DE"', {"EU": '["DE"]'}, False),
    ('data.a == "x" and data.b == "y"', {}, False),
    ("false", {}, True),
    ("not true", {}, True),
    ("context.n > 1 and false", {}, True),
    ('data.c == "a" and data.c == "b" or context.n > 1', {}, False),
    ('data.c == "a" and data.c == "b" or context.n > 5 and context.n < 1', {}, True),
    ('context.n > 1 and (data.c == "a" and data.c == "b")', {}, True),
    ("context.n > 2 and context.n < 3", {}, False),
    ('data.o in [EU, "CH"] and data.o == "US"', {"EU": '["DE"]'}, True),
    ('data.o in [EU, "CH"] and data.o == "CH"', {"EU": '["DE"]'}, False),
    ('data.o in [EU] and data.o in ["US"]', {"EU": "[]"}, True),
    ("data.o in [EMPTY]", {"EMPTY": "[]"}, True),
    ('not (data.c != "a") and data.c == "b"', {}, True),
]


@pytest.mark.parametrize(("condition", "consts", "found"), CONDITIONS)
def test_contradiction(condition: str, consts: dict[str, str], found: bool) -> None:
    decls = "".join(f"const {name} = {value}\n" for name, value in consts.items())
    file = parse(f'package t\n{decls}rule r allow any to read dataset "x" when {condition}\n', "c.policy")
    values = {d.name.value: d.value for d in file.decls if isinstance(d, ast.ConstDecl)}
    when = file.decls[-1].when
    assert (contradiction(when, lambda ref: values.get(ref.name)) is not None) is found


# --- robustness: any well-typed tree checks without raising ---------------------------------

_SPAN = Span("gen.policy", 1, 1, 1, 2)
_names = st.sampled_from(["a", "b", "c", "analyst", "m", "EU", "X"]).map(lambda v: ast.Name(v, span=_SPAN))
_literals = st.one_of(st.text(max_size=3), st.integers(-5, 5), st.floats(-2, 2), st.booleans()).map(
    lambda v: ast.Literal(v, span=_SPAN))
_paths = st.builds(lambda r, p: ast.Path(r, p, span=_SPAN), st.sampled_from(["context", "data", "ctx"]),
                   st.tuples(st.sampled_from(["n", "c"])))
_refs = st.sampled_from(["EU", "X", "Y"]).map(lambda n: ast.ConstRef(n, span=_SPAN))
_values = st.recursive(st.one_of(_literals, _paths, _refs),
                       lambda inner: st.lists(inner, max_size=3).map(lambda i: ast.ListExpr(tuple(i), span=_SPAN)),
                       max_leaves=4)
_ops = st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in"])
_compares = st.builds(lambda o, left, right: ast.Compare(o, left, right, span=_SPAN), _ops, _values, _values)
_exprs = st.recursive(
    st.one_of(_compares, _literals, _paths),
    lambda inner: st.one_of(
        st.lists(inner, min_size=2, max_size=3).map(lambda i: ast.And(tuple(i), span=_SPAN)),
        st.lists(inner, min_size=2, max_size=3).map(lambda i: ast.Or(tuple(i), span=_SPAN)),
        inner.map(lambda e: ast.Not(e, span=_SPAN)),
    ),
    max_leaves=6,
)
_principals = st.one_of(
    st.just(ast.PrincipalMatch("any", span=_SPAN)),
    st.builds(lambda k, n: ast.PrincipalMatch(k, n, span=_SPAN), st.sampled_from(["role", "agent"]), _names),
)
_decls = st.one_of(
    st.builds(lambda n, e: ast.RoleDecl(n, tuple(e), span=_SPAN), _names, st.lists(_names, max_size=2)),
    st.builds(lambda p, a: ast.MaskDecl(p, ast.Name(a, span=_SPAN), span=_SPAN),
              _paths | st.builds(lambda r, p: ast.Path(r, tuple(p), span=_SPAN),
                                 st.sampled_from(["principal", "resource", "action"]),
                                 st.lists(st.sampled_from(["id", "attrs", "email"]), max_size=2))
              | st.just(ast.ConstRef("email", span=_SPAN)),
              st.sampled_from(["hash", "drop", "hsh"])),
    st.builds(lambda n, r: ast.AgentDecl(n, None, tuple(r), span=_SPAN), _names, st.lists(_names, max_size=2)),
    st.builds(lambda n, h: ast.ModelDecl(n, hosting=h, span=_SPAN), _names, st.sampled_from([None, "internal", "x"])),
    st.builds(lambda n, v: ast.ConstDecl(n, v, span=_SPAN), _names, _values),
    st.builds(lambda n, eff, p, k, pat, w, u: ast.RuleDecl(n, eff, p, (ast.Name("read", span=_SPAN),), k, pat,
                                                       when=w, unless=u, span=_SPAN),
              _names, st.sampled_from(["allow", "deny"]), _principals,
              st.sampled_from(["model", "dataset", "bogus"]).map(lambda v: ast.Name(v, span=_SPAN)),
              st.sampled_from(["*", "m", "x/*", "a?"]), st.none() | _exprs, st.none() | _exprs),
    st.builds(lambda n, w, r: ast.ResidencyDecl(n, w, r, span=_SPAN), _names, st.none() | _exprs, _values),
    st.builds(lambda n, p: ast.RouteDecl(n, None, tuple(p), span=_SPAN), _names, st.lists(_names, max_size=3)),
    st.builds(lambda n, k, v, amounts, warn, exceed: ast.BudgetDecl(
        n, ast.BudgetScope(k, v, span=_SPAN),
        tuple(ast.BudgetLimit(a, "USD", "day", span=_SPAN) for a in amounts), warn, exceed, span=_SPAN),
        _names, st.sampled_from(["workflow", "model", "agent", "role"]), st.sampled_from(["a", "m", "w"]),
        st.lists(st.floats(-1, 10), max_size=2), st.none() | st.floats(-50, 150),
        st.none() | _names.map(lambda n: ast.EscalateAction(n, span=_SPAN))
        | _names.map(lambda n: ast.RouteAction(n, span=_SPAN))),
    st.builds(lambda n, w, r: ast.EscalateDecl(n, w, r, span=_SPAN), _names, st.none() | _exprs, _names),
    st.builds(lambda n, m, metric, positive, op, v: ast.BiasDecl(
        n, m, ast.Name(metric, span=_SPAN), positive, ast.Path("subject", ("g",), span=_SPAN),
        ast.Threshold(op, v, span=_SPAN), min_samples=0, span=_SPAN),
        _names, _names, st.sampled_from(["disparate_impact", "psi", "x"]), _exprs,
        st.sampled_from(["<", ">="]), st.floats(-1, 100)),
    st.builds(lambda n, m, metric, op, v: ast.DriftDecl(
        n, m, ast.Name(metric, span=_SPAN), ast.Path("output", ("c",), span=_SPAN),
        ast.Duration(86400, span=_SPAN), ast.Threshold(op, v, span=_SPAN),
        on_breach=ast.EscalateAction(n, span=_SPAN), span=_SPAN),
        _names, _names, st.sampled_from(["psi", "ks", "kl"]), st.sampled_from(["<", ">"]), st.floats(-1, 5)),
)
_files = st.builds(
    lambda pkg, imports, decls: ast.PolicyFile(
        ast.Name(pkg, span=_SPAN), imports=tuple(ast.Import(ast.Name(i, span=_SPAN), span=_SPAN) for i in imports),
        decls=tuple(decls), span=_SPAN),
    st.sampled_from(["p", "q"]), st.lists(st.sampled_from(["p", "q", "r"]), max_size=2), st.lists(_decls, max_size=6),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_files, min_size=1, max_size=3))
def test_checking_any_tree_never_raises_and_errors_withhold_the_policy(files: list[ast.PolicyFile]) -> None:
    result = check_policy(files)
    assert "internal-error" not in {f.code for f in result.findings}
    assert (result.policy is None) == any(f.is_error for f in result.findings)
    assert len(result.findings) <= MAX_FINDINGS + 1


# --- golden files: the rendered output of files with several findings ----------------------

GOLDEN_CASES = sorted(GOLDEN.glob("*.policy"))


@pytest.mark.parametrize("source", GOLDEN_CASES, ids=[p.stem for p in GOLDEN_CASES])
def test_golden_rendering(source: Path) -> None:
    """Rendered as ``check`` prints it; set UPDATE_GOLDEN=1 to rewrite after a reviewed change."""
    relative = source.relative_to(GOLDEN.parent.parent.parent).as_posix()
    file = parse_policy(source.read_text(encoding="utf-8"), str(source))
    rendered = render_findings(check_policy([file]).findings).replace(str(source), relative) + "\n"
    expected = source.with_suffix(".expected")
    if os.environ.get("UPDATE_GOLDEN"):
        expected.write_text(rendered, encoding="utf-8")
    assert rendered == expected.read_text(encoding="utf-8")


def test_there_are_golden_files() -> None:
    assert len(GOLDEN_CASES) >= 3
    assert all(p.with_suffix(".expected").is_file() for p in GOLDEN_CASES)


# --- the shipped examples --------------------------------------------------------------------


def test_every_example_in_rules_checks_clean() -> None:
    from policyengine.loader import load_files

    paths = sorted(RULES.rglob("*.policy"))
    assert paths, "rules/ holds the example policies; it must not be empty"
    loaded = load_files([str(p) for p in paths])
    assert [f.headline() for f in loaded.findings] == []
    result = check_policy(loaded.files)
    assert [f.headline() for f in result.findings] == []
    assert result.policy is not None


def test_capping_keeps_errors_ahead_of_warnings() -> None:
    noisy = "".join(f'rule w{i} allow any to read dataset "x" when false\n' for i in range(MAX_FINDINGS + 5))
    result = check("package t\n" + noisy + "rule last allow role nobody to read dataset \"x\"\n")
    assert [f.code for f in result.findings if f.is_error] == ["unknown-role"]
    assert len(result.findings) == MAX_FINDINGS + 1 and result.findings[-1].code == "too-many-findings"


# --- end to end: the real command over files on disk ----------------------------------------

CLI_CASES = [
    # files, args, exit code, text the output must contain
    ({"a.policy": "package a\nrole analyst\n", "b.policy": 'package b\nrule r allow role analyst to read dataset "x"\n'},
     [], 0, "0 errors, 0 warnings"),
    ({"a.policy": 'package a\nrule r allow role analyts to read dataset "x"\nrole analyst\n'},
     [], 1, "a.policy:2:19: error[unknown-role]: unknown role 'analyts'"),
    ({"a.policy": 'package a\nrule r allow any to read dataset "x" when false\n'},
     [], 0, "a.policy:2:43: warning[never-matches]: rule 'r' can never match: the condition is false"),
    ({"a.policy": 'package a\nrule r allow any to read dataset "x" when false\n'}, ["--strict"], 1, "1 warning"),
    ({"a.policy": "package a\nmask data.customer.email hash\nmask principal.email drop\n"}, [], 0,
     "a.policy:3:1: mask principal.email drop -> /request/principal/attrs/email"),
    ({"a.policy": "package a\nmask data.customer.email hash\nmask data.customer.email drop\n"}, [], 1,
     "a.policy:3:6: error[duplicate-mask]: 'data.customer.email' is masked twice"),
]


@pytest.mark.parametrize(("files", "args", "code", "expected"), CLI_CASES)
def test_policyengine_check_command(tmp_path: Path, files: dict[str, str], args: list[str], code: int,
                                    expected: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "policyengine", "check", *args, "."], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == code, run.stdout + run.stderr
    assert expected in run.stdout + run.stderr
    assert "Traceback" not in run.stderr


def test_carets_point_at_the_value_also_when_the_parse_comes_from_the_cache(tmp_path: Path) -> None:
    (tmp_path / "a.policy").write_text(
        'package a\nmodel m hosting onprem\nrule r allow any to invoke model "n"\n'
        'budget b for workflow "w" limit 5 USD per day warn at 150%\n', encoding="utf-8")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("POLICYENGINE_NO_CACHE", None)
    outputs = []
    for _ in range(2):  # the first run parses and writes the cache, the second reads it
        run = subprocess.run([sys.executable, "-m", "policyengine", "check", "a.policy"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode == 1 and "Traceback" not in run.stderr, run.stdout + run.stderr
        outputs.append(run.stdout)
    assert outputs[0] == outputs[1]
    assert any((tmp_path / "cache").rglob("*.pickle"))
    headlines = [line for line in outputs[0].splitlines() if line.startswith("a.policy:")]
    assert [h.split(": ")[0] for h in headlines] == ["a.policy:2:17", "a.policy:3:34", "a.policy:4:55"]
    assert "error[unknown-hosting]" in headlines[0] and "warning[undeclared-model]" in headlines[1]
    assert "error[percentage-range]" in headlines[2]
    lines = outputs[0].splitlines()
    source = next(i for i, line in enumerate(lines) if line.endswith("warn at 150%"))
    assert lines[source + 1] == " " * lines[source].index("150%") + "^^^^"  # the caret sits under 150%


def test_policyengine_check_json_lists_the_checker_findings(tmp_path: Path) -> None:
    (tmp_path / "a.policy").write_text('package a\nrole a extends b\nrole b extends a\n', encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "policyengine", "check", "--error-format", "json", "a.policy"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    findings = json.loads(run.stdout)
    assert [(f["code"], f["line"], f["col"], f["message"]) for f in findings] == [
        ("extends-cycle", 3, 16, "roles extend each other in a cycle: a -> b -> a")
    ]
    assert run.returncode == 1


# --- soundness against the real evaluator ------------------------------------------------------

_POOL = ["a", "b", 1, 2, 1.0, 5, True, False]
_CANDIDATES = [None, "a", "b", "zz", 0, 1, 2, 3, 5, 7, 1.5, True, False, [1], {"k": 1}]
_atoms_x = st.builds(
    lambda op, value, negated: (lambda c: ast.Not(c, span=_SPAN) if negated else c)(ast.Compare(
        op, ast.Path("context", ("x",), span=_SPAN),
        ast.ListExpr(tuple(ast.Literal(v, span=_SPAN) for v in value), span=_SPAN) if op in ("in", "not in")
        else ast.Literal(value[0], span=_SPAN), span=_SPAN)),
    st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in"]),
    st.lists(st.sampled_from(_POOL), min_size=1, max_size=3), st.booleans())


@settings(max_examples=300, deadline=None)
@given(st.lists(_atoms_x, min_size=1, max_size=3))
def test_a_reported_contradiction_holds_for_no_request(atoms: list[ast.Expr]) -> None:
    from policyengine.conditions import Ctx, compile_expr, holds

    expr = atoms[0] if len(atoms) == 1 else ast.And(tuple(atoms), span=_SPAN)
    if contradiction(expr, lambda ref: None) is None:
        return
    predicate = compile_expr(expr, {})
    for value in _CANDIDATES:
        context = {} if value is None else {"x": value}
        ctx = Ctx("u", "user", frozenset(), {}, "read", "dataset", "x", {}, None, {}, context, ())
        assert not holds(predicate, ctx), f"context.x = {value!r} satisfies {show(expr)}"


_segments = st.sampled_from(["erp", "hr", "x", "invoices", "a", "ab", "*", "?", "2026"])
_patterns = st.lists(_segments, min_size=1, max_size=3).map("/".join)
_ids = st.lists(st.sampled_from(["erp", "hr", "x", "invoices", "a", "ab", "b", "2026", ""]), min_size=1,
                max_size=4).map("/".join)


@settings(max_examples=300, deadline=None)
@given(_patterns, _patterns, st.lists(_ids, min_size=1, max_size=20))
def test_a_covering_deny_pattern_matches_every_id_the_allow_matches(deny: str, allow: str, ids: list[str]) -> None:
    from policyengine.compile import compile_pattern

    if not pattern_covers(deny, allow):
        return
    deny_matches, allow_matches = compile_pattern(deny), compile_pattern(allow)
    for rid in [*ids, allow]:
        if allow_matches is None or allow_matches(rid):
            assert deny_matches is None or deny_matches(rid), f"{rid!r} matches {allow!r} but not {deny!r}"


def test_an_empty_set_checks_clean() -> None:
    result = check_policy([])
    assert result.findings == [] and result.policy is not None and result.policy.rules == ()


# Rule patterns no request can reach: every id they match is refused as malformed, so a deny written with
# one protects nothing. A translation from a system whose ids start with '/' (Casbin's keyMatch examples,
# "/dataset1/*") is the usual way to write one.
DEAD_PATTERNS = [
    ("/dataset1/*", "has an empty segment (leading, trailing or double '/')"),
    ("erp/", "has an empty segment (leading, trailing or double '/')"),
    ("erp//x", "has an empty segment (leading, trailing or double '/')"),
    ("erp/**/", "has an empty segment (leading, trailing or double '/')"),
    ("erp/../payroll/*", "has a '.' or '..' segment; send the canonical id"),
    ("erp/%2e%2e/*", "holds a percent-encoded '/', backslash, dot segment or control character (or one encoded "
                     "twice, %252F); send the decoded, canonical id"),
    ("erp\\\\x*", "contains a backslash; segments are separated by '/': send the canonical id"),
    (" erp/**", "has leading or trailing whitespace"),
    ("\uff50rod/**", "is not in NFKC form (U+FF50 FULLWIDTH LATIN SMALL LETTER P stands for 'p'); send the canonical id"),
    ("pr\u043ed/**", "mixes letters of the scripts CYRILLIC, LATIN in one word; a look-alike letter could make it pass "
                     "for another name"),
    ("a[]b", "'[]' is not a set of characters; write [abc], [a-z] or [!abc]"),
    ("a[z-a]", "'[z-a]' is not a set of characters; write [abc], [a-z] or [!abc]"),
]


@pytest.mark.parametrize("pattern,fault", DEAD_PATTERNS, ids=[p for p, _ in DEAD_PATTERNS])
def test_a_rule_whose_pattern_no_request_can_reach_is_an_error(pattern: str, fault: str) -> None:
    text = BASE + f'rule r deny any to read dataset "{pattern}"\n'
    result = check(text)
    assert [(f.code, f.severity, f.message) for f in result.findings] == [
        ("dead-pattern", Severity.ERROR, f'no request can name an id "{json.loads(chr(34) + pattern + chr(34))}" '
                                         f"matches: the pattern {fault}")]
    assert result.policy is None


@pytest.mark.parametrize("pattern", ["*", "**", "erp/**", "erp/*/x", "erp/[ab]*", "erp/[!/]", "a[b", ".hidden/*",
                                     "erp/x.y/**", "promos/10%off", "donn\u00e9es/**", "files/\u043e\u0442\u0447\u0451*"])
def test_a_pattern_some_request_can_reach_checks_clean(pattern: str) -> None:
    assert [f.headline() for f in check(BASE + f'rule r deny any to read dataset "{pattern}"\n').findings
            if f.code == "dead-pattern"] == []


_pattern_chars = st.text(alphabet="a./*?[]!-% 2e", min_size=1, max_size=7)
# every id of up to four characters 'a', '.', '/' that a request may send (no empty, '.' or '..' segment)
_canonical_ids = [rid for rid in ("".join(p) for n in range(1, 5) for p in itertools.product("a./", repeat=n))
                  if all(s not in ("", ".", "..") for s in rid.split("/"))]


@settings(max_examples=400, deadline=None)
@given(_pattern_chars)
def test_a_refused_pattern_matches_no_canonical_id(pattern: str) -> None:
    from policyengine.globs import glob_match, pattern_problem

    if pattern_problem(pattern) is None or "[" in pattern:  # (a refused set has no regex to ask)
        return
    assert not [rid for rid in _canonical_ids if glob_match(pattern, rid)]
