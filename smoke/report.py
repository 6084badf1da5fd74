"""The three outputs: a terminal table with diagnoses, ``--json`` and ``--junit``."""

from __future__ import annotations

import shutil
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import msgspec

from smoke.model import Report
from smoke.suite import TOOL_ERROR

_MARK = {"pass": "PASS", "fail": "FAIL", "skip": "skip"}


def render_text(report: Report, width: int | None = None) -> str:
    width = width or max(shutil.get_terminal_size((120, 24)).columns, 80)
    names = [r.label for r in report.results]
    name_w = max([len("CHECK"), *map(len, names)])
    head = f"{'CHECK':<{name_w}}  RESULT  {'TIME':>7}  DETAIL"
    detail_w = max(width - len(head) + len("DETAIL"), 40)
    indent = " " * (name_w + 2 + 6 + 2 + 7 + 2)
    lines = [f"ws-smoke {report.target}" + (f"  (direct: {report.direct})"
                                            if report.direct else ""), "", head,
             "-" * min(width, len(head) + detail_w - len("DETAIL"))]
    for name, r in zip(names, report.results, strict=True):
        wrapped = textwrap.wrap(r.detail, detail_w) or [""]
        lines.append(f"{name:<{name_w}}  {_MARK[r.status]:<6}  {r.duration_s:>6.2f}s  "
                     f"{wrapped[0]}")
        lines.extend(indent + more for more in wrapped[1:])
    c = report.counts
    lines += ["", f"{c['pass']} passed, {c['fail']} failed, {c['skip']} skipped in "
              f"{report.duration_s:.1f}s (exit {report.exit_code})"]
    for warning in report.warnings:
        lines += textwrap.wrap(f"WARNING: {warning}", width, subsequent_indent="         ")
    if report.diagnoses:
        lines += ["", "Diagnoses:"]
        for i, d in enumerate(report.diagnoses, 1):
            lines += textwrap.wrap(f"{i}. [{d.code}] {d.cause}", width,
                                   subsequent_indent="   ")
            lines += textwrap.wrap(f"-> {d.next_step}", width, initial_indent="   ",
                                   subsequent_indent="      ")
            lines += textwrap.wrap(f"(checks: {', '.join(d.checks)})", width,
                                   initial_indent="   ", subsequent_indent="   ")
    return "\n".join(lines)


def write_json(report: Report, path: Path) -> None:
    path.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n")


def junit_xml(report: Report) -> ET.ElementTree[ET.Element]:
    c = report.counts
    errors = sum(r.name == TOOL_ERROR for r in report.results)
    totals = {"tests": str(len(report.results)), "failures": str(c["fail"] - errors),
              "skipped": str(c["skip"]), "errors": str(errors),
              "time": f"{report.duration_s:.3f}"}
    suites = ET.Element("testsuites", {"name": "ws-smoke", **totals})
    suite = ET.SubElement(suites, "testsuite", {"name": f"ws-smoke {report.target}", **totals})
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="target", value=report.target)
    for warning in report.warnings:
        ET.SubElement(props, "property", name="warning", value=warning)
    if report.direct:
        ET.SubElement(props, "property", name="direct", value=report.direct)
    for r in report.results:
        case = ET.SubElement(suite, "testcase", classname=f"ws_smoke.{r.via}", name=r.name,
                             time=f"{r.duration_s:.3f}")
        if r.status == "skip":
            ET.SubElement(case, "skipped", message=r.detail)
        elif r.name == TOOL_ERROR:  # the tool failed, not the target: a JUnit error
            ET.SubElement(case, "error", message=r.detail, type="ToolError").text = r.detail
        elif r.status == "fail":
            failure = ET.SubElement(case, "failure", message=r.detail, type="SmokeCheckFailed")
            label = r.label
            causes = [f"[{d.code}] {d.cause}\n-> {d.next_step}" for d in report.diagnoses
                      if label in d.checks]
            evidence = (msgspec.json.encode(r.evidence).decode()
                        if r.evidence is not None else "")
            failure.text = "\n".join([r.detail, *causes, f"evidence: {evidence}"])
        out = ET.SubElement(case, "system-out")
        out.text = r.detail
    ET.indent(suites)
    return ET.ElementTree(suites)


def write_junit(report: Report, path: Path) -> None:
    junit_xml(report).write(path, encoding="utf-8", xml_declaration=True)
