"""JUnit XML for CI systems (GitHub, GitLab, Jenkins, Azure all read this shape).

One ``<testsuite>`` per test file, one ``<testcase>`` per case (request and
monitor cases alike); a failed case
carries a ``<failure>`` with the mismatches and the decision's explanation, and a
test file that could not be run is one ``<testcase>`` with an ``<error>``. The
counts are those of the text summary: ``tests - failures - errors`` is the
number passed.
"""

from __future__ import annotations

import datetime as _dt
import re
import socket
import xml.etree.ElementTree as ET
from collections import defaultdict

from .monitors import MonitorCaseResult, sample_text
from .runner import CaseResult, FileError, RunReport, request_text


def _classname(path: str) -> str:
    stem = path[:-5] if path.endswith(".yaml") else path.removesuffix(".yml")
    return stem.replace("\\", "/").strip("./").replace("/", ".")


def _failure_text(result: CaseResult | MonitorCaseResult) -> str:
    if isinstance(result, MonitorCaseResult):
        return "\n".join([*result.mismatches, "sample:", sample_text(result.case), "explanation:", result.explanation])
    return "\n".join(
        [
            *result.mismatches,
            "request:",
            request_text(result.case),
            "explanation:",
            result.explanation,
        ]
    )


def to_junit(report: RunReport, *, name: str = "policyengine") -> ET.Element:
    """The report as a ``<testsuites>`` element."""
    by_file: dict[str, list[CaseResult | MonitorCaseResult]] = defaultdict(list)
    for result in report.results:
        by_file[result.file].append(result)
    errors_by_file: dict[str, list[FileError]] = defaultdict(list)
    for error in report.errors:
        errors_by_file[error.file].append(error)
    order = list(dict.fromkeys([*report.files, *by_file, *errors_by_file]))
    stamp = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    host = socket.gethostname() or "localhost"
    root = ET.Element("testsuites", name=name)
    total_time = 0.0
    for index, file in enumerate(order):
        results, errors = by_file.get(file, []), errors_by_file.get(file, [])
        if not results and not errors:
            continue
        seconds = sum(r.seconds for r in results)
        total_time += seconds
        suite = ET.SubElement(
            root,
            "testsuite",
            name=file,
            tests=str(len(results) + len(errors)),
            failures=str(sum(1 for r in results if not r.passed)),
            errors=str(len(errors)),
            skipped="0",
            time=f"{seconds:.6f}",
            timestamp=stamp,
            hostname=host,
            id=str(index),
            package=_classname(file),
        )
        ET.SubElement(suite, "properties")
        for r in results:
            case = ET.SubElement(
                suite, "testcase", name=r.case.name, classname=_classname(file), time=f"{r.seconds:.6f}",
                file=file, line=str(r.case.span.line),
            )
            if not r.passed:
                failure = ET.SubElement(case, "failure", message="; ".join(r.mismatches), type="PolicyTestFailure")
                failure.text = _failure_text(r)
        for e in errors:
            case = ET.SubElement(suite, "testcase", name="<test file>", classname=_classname(file), time="0",
                                 file=file, line=str(e.line))
            element = ET.SubElement(case, "error", message=str(e), type="PolicyTestError")
            element.text = e.details or str(e)
        ET.SubElement(suite, "system-out")
        ET.SubElement(suite, "system-err")
    root.set("tests", str(len(report.results) + len(report.errors)))
    root.set("failures", str(report.failed))
    root.set("errors", str(len(report.errors)))
    root.set("time", f"{total_time:.6f}")
    return root


# Characters XML 1.0 cannot hold, even escaped: written as ``\x1b`` instead, so the report stays a report.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def junit_xml(report: RunReport) -> str:
    """The report as JUnit XML text; a control character in a case name, a request or a message (which XML
    cannot hold: CI would reject the whole file) is written as its escape."""
    root = to_junit(report)
    for element in root.iter():
        if element.text:
            element.text = _NOT_XML.sub(_escape, element.text)
        for key, value in list(element.attrib.items()):
            element.set(key, _NOT_XML.sub(_escape, value))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
