"""The three outputs, as the checks have them (smoke.report): a table, ``--json``, ``--junit``.

JUnit: a ``fail`` verdict is a ``<failure>``, ``informational`` a ``<skipped>`` (nothing was
required), ``pass`` and ``non-strict`` pass, with the detail in ``system-out``.
"""

from __future__ import annotations

import shutil
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import msgspec

from smoke.conformance.model import ConformanceReport

_MARK = {"pass": "PASS", "non-strict": "NON-STRICT", "fail": "FAIL", "informational": "INFO"}


def rfc_ref(rfc: str) -> str:
    """``5.2`` -> ``RFC 6455 section 5.2``; references to other RFCs are kept as written."""
    return rfc if rfc.startswith("RFC") else f"RFC 6455 section {rfc}"


def render_text(report: ConformanceReport, width: int | None = None) -> str:
    width = width or max(shutil.get_terminal_size((120, 24)).columns, 80)
    id_w = max([len("CASE"), *(len(r.id) for r in report.results)])
    mark_w = max(len(m) for m in _MARK.values())
    head = f"{'CASE':<{id_w}}  {'VERDICT':<{mark_w}}  {'CLOSE':>5}  {'TIME':>7}  DETAIL"
    detail_w = max(width - len(head) + len("DETAIL"), 40)
    indent = " " * (len(head) - len("DETAIL"))
    echo = f"echo {report.echo}" + (" (detected)" if report.echo_detected else "")
    server = f", server {report.server_header}" if report.server_header else ""
    lines = [f"ws-smoke conformance {report.target}  ({echo}{server})", "", head,
             "-" * min(width, len(head) + detail_w - len("DETAIL"))]
    for r in report.results:
        code = r.observed.close_code
        shown = "-" if code is None else str(code)
        text = f"{r.title}: {r.detail}"
        wrapped = textwrap.wrap(text, detail_w) or [""]
        lines.append(f"{r.id:<{id_w}}  {_MARK[r.verdict]:<{mark_w}}  {shown:>5}  "
                     f"{r.duration_s:>6.2f}s  {wrapped[0]}")
        lines.extend(indent + more for more in wrapped[1:])
    c = report.counts
    lines += ["", f"{c['pass']} passed, {c['non-strict']} non-strict, {c['fail']} failed, "
              f"{c['informational']} informational in {report.duration_s:.1f}s "
              f"(exit {report.exit_code})"]
    for warning in report.warnings:
        lines += textwrap.wrap(f"WARNING: {warning}", width, subsequent_indent="         ")
    return "\n".join(lines)


def write_json(report: ConformanceReport, path: Path) -> None:
    path.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n")


def junit_xml(report: ConformanceReport) -> ET.ElementTree[ET.Element]:
    c = report.counts
    totals = {"tests": str(len(report.results)), "failures": str(c["fail"]),
              "skipped": str(c["informational"]), "errors": "0",
              "time": f"{report.duration_s:.3f}"}
    suites = ET.Element("testsuites", {"name": "ws-smoke conformance", **totals})
    suite = ET.SubElement(suites, "testsuite",
                          {"name": f"ws-smoke conformance {report.target}", **totals})
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="target", value=report.target)
    ET.SubElement(props, "property", name="echo", value=report.echo)
    if report.server_header:
        ET.SubElement(props, "property", name="server", value=report.server_header)
    for warning in report.warnings:
        ET.SubElement(props, "property", name="warning", value=warning)
    for r in report.results:
        case = ET.SubElement(suite, "testcase",
                             classname=f"ws_smoke.conformance.{r.category.replace(' ', '_')}",
                             name=f"{r.id} {r.title}", time=f"{r.duration_s:.3f}")
        if r.verdict == "informational":
            ET.SubElement(case, "skipped", message=r.detail)
        elif r.verdict == "fail":
            failure = ET.SubElement(case, "failure", message=r.detail,
                                    type="ConformanceFailed")
            failure.text = "\n".join([
                f"expected ({rfc_ref(r.rfc)}): {r.expected}", f"actual: {r.detail}",
                f"observed: {msgspec.json.encode(r.observed).decode()}"])
        out = ET.SubElement(case, "system-out")
        out.text = f"[{r.verdict}] expected: {r.expected}; actual: {r.detail}"
    ET.indent(suites)
    return ET.ElementTree(suites)


def write_junit(report: ConformanceReport, path: Path) -> None:
    junit_xml(report).write(path, encoding="utf-8", xml_declaration=True)
