"""The diagnosis vocabulary is one table, and the documents say what the code does.

docs/smoke.md lists exactly the ``DiagnosisCode``s; each README troubleshooting row names a
code that a test really produces: against the real service and nginx (tests/test_smoke.py,
tests/test_smoke_tls.py), or, for a row marked *(rule test)*, from recorded evidence
(tests/test_smoke_units.py). What the row quotes is compared with what ws-smoke said there:
``SmokeRun.diagnosis`` holds every diagnosis a test asks for to its row (testkit.readme_rows).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

from smoke.diagnose import IMMEDIATE_S, NGINX_UPGRADE, PLAIN_TO_TLS, RULES, diagnose
from smoke.model import TITLES, CheckName, CheckResult, DiagnosisCode, Evidence
from smoke.target import Options, parse_target
from testkit import readme_rows

ROOT = Path(__file__).resolve().parent.parent
CODES = set(get_args(DiagnosisCode))
REAL_TESTS = ("test_smoke.py", "test_smoke_tls.py")
RULE_TESTS = ("test_smoke_units.py",)


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n#", start + len(heading))
    return text[start:end if end != -1 else None]


def _asserted(code: str, files: tuple[str, ...]) -> bool:
    """A test expects ``code``: ``run.diagnosis("code")``, ``== "code"``, ``== ["code"]`` or a
    ``(case, "code")`` parameter - not merely names it (``"code" not in codes`` does not count)."""
    expects = re.compile(rf'(diagnosis\("{code}"\)|== "{code}"|\["{code}"\]|, "{code}"\))')
    return any(expects.search((ROOT / "tests" / f).read_text()) for f in files)


def test_every_code_comes_from_the_rule_table_or_the_direct_comparison() -> None:
    from_rules = [r.code for r in RULES]
    assert len(from_rules) == len(set(from_rules)), "a code given by two rules"
    assert CODES - set(from_rules) == {"proxy_configuration", "backend_problem"}
    assert RULES[-1].code == "check_failed", "the catch-all must be last"


def test_docs_list_exactly_the_codes() -> None:
    table = _section((ROOT / "docs" / "smoke.md").read_text(), "### Diagnosis codes")
    listed = set(re.findall(r"^\| `([a-z_0-9]+)` \|", table, re.MULTILINE))
    assert listed == CODES, f"missing: {CODES - listed}, not codes: {listed - CODES}"


def _code_table() -> list[tuple[str, str]]:
    """docs/smoke.md's diagnosis codes, in order, with their Meaning cells."""
    table = _section((ROOT / "docs" / "smoke.md").read_text(), "### Diagnosis codes")
    return re.findall(r"^\| `([a-z_0-9]+)` \| (.*) \|$", table, re.MULTILINE)


def test_docs_list_the_codes_in_rule_order() -> None:
    """The list says "first match wins": its order is RULES' order, then the --direct ones."""
    listed = [code for code, _ in _code_table()]
    assert listed == [r.code for r in RULES] + ["proxy_configuration", "backend_problem"]


def _status_code(check: CheckName, status: int) -> DiagnosisCode:
    """What ws-smoke diagnoses for ``check`` refused with HTTP ``status`` (a 405 carrying
    ``Allow: websocket``, as a backend that got a plain GET answers)."""
    ev = Evidence(url="ws://127.0.0.1:9000/ws/echo", http_status=status, allow_header="websocket",
                  error="http_status", error_detail=f"HTTP {status}")
    failed = CheckResult(name=check, title=TITLES[check], status="fail", duration_s=0.0,
                         detail=f"HTTP {status}", evidence=ev)
    [d] = diagnose(parse_target("ws://127.0.0.1:9000"), Options(), [failed])
    return d.code


def test_the_statuses_the_docs_name_are_the_ones_the_rules_match() -> None:
    """Each row naming HTTP statuses (400-599) names exactly those that ws-smoke gives its code
    for: the handshake's, or /health's for a ``health_`` code. ``handshake_rejected`` and
    ``health_http_status`` take "any other" status, so they are checked to take no named one;
    a 1006 row's statuses are /health's after the drop (the dead-backend test below)."""
    named = {code: {int(s) for s in re.findall(r"\b([45]\d\d)\b", meaning)}
             for code, meaning in _code_table() if not meaning.startswith("1006")}
    given: dict[str, set[int]] = {}
    for status in range(400, 600):
        given.setdefault(_status_code("handshake", status), set()).add(status)
        given.setdefault(_status_code("http_health", status), set()).add(status)
    catch_all = {"handshake_rejected", "health_http_status"}
    assert given.keys() <= set(named), "a status gives a code the docs do not list"
    for code, statuses in named.items():
        if code in catch_all:
            assert not statuses & (set().union(*(given.get(c, set()) for c in named
                                                 if c not in catch_all)))
            continue
        assert given.get(code, set()) == statuses, (code, sorted(given.get(code, set())))
    assert given["handshake_rejected"]
    assert given["health_http_status"]


def test_the_immediate_close_bound_is_the_rules() -> None:
    meaning = dict(_code_table())["abnormal_close_immediate"]
    assert re.search(rf"within {IMMEDIATE_S:g} s\b", meaning), meaning


def _cause(check: CheckName, ev: Evidence) -> tuple[DiagnosisCode, str]:
    failed = CheckResult(name=check, title=TITLES[check], status="fail", duration_s=0.0,
                         detail="", evidence=ev)
    [d] = diagnose(parse_target("ws://127.0.0.1:9000"), Options(), [failed])
    return d.code, d.cause


def _quoted(pattern: str) -> str:
    text = re.sub(r"\s+", " ", (ROOT / "docs" / "smoke.md").read_text())
    quote = re.search(pattern, text)
    assert quote, f"docs/smoke.md no longer quotes: {pattern}"
    return quote.group(1)


def test_docs_quote_the_cause_ws_smoke_gives_for_a_dead_backend() -> None:
    quote = _quoted(r'gives `backend_gone`, "([^"]+)"')
    gone = Evidence(url="ws://127.0.0.1:9000/ws/health", close_code=1006, closed_by="network",
                    age_at_close_s=3.0, backend_gone=True, after_drop="GET /health was refused")
    code, cause = _cause("sustained", gone)
    assert code == "backend_gone"
    assert quote in cause, (quote, cause)


def test_the_nginx_text_the_docs_quote_gives_plain_to_tls_port() -> None:
    """The docs quote nginx's 400 page: that text, in a 400's body, is what the rule needs."""
    quote = _quoted(r"`plain_to_tls_port` \(ws:// to a TLS port: nginx's 400 \"([^\"]+)\"\)")
    plain = Evidence(url="ws://127.0.0.1:9000/ws/echo", http_status=400, error="http_status",
                     error_detail=f"HTTP 400: {quote}")
    code, cause = _cause("handshake", plain)
    assert code == "plain_to_tls_port"
    assert PLAIN_TO_TLS in cause
    assert PLAIN_TO_TLS in quote


def test_docs_list_every_check() -> None:
    text = (ROOT / "docs" / "smoke.md").read_text()
    assert set(get_args(CheckName)) == set(TITLES)
    missing = [name for name in TITLES if f"`{name}`" not in text]
    assert not missing


def test_every_readme_troubleshooting_row_is_produced_by_a_test() -> None:
    table = _section((ROOT / "README.md").read_text(), "## Troubleshooting")
    rows = [line for line in table.splitlines()
            if line.startswith("| ") and not line.startswith(("| Symptom", "|---"))]
    assert rows
    for row in rows:
        codes = re.findall(r"\[([a-z_0-9]+)\]", row)
        assert codes, f"a row without a [code]: {row[:80]}"
        for code in codes:
            assert code in CODES, f"{code} in the README is not a DiagnosisCode"
            files = RULE_TESTS if "*(rule test)*" in row else REAL_TESTS
            assert _asserted(code, files), (
                f"README row {row[:60]!r}: no test in {files} asserts {code!r}")


def test_the_browser_page_speaks_the_same_vocabulary() -> None:
    """/ws-check's verdict uses ws-smoke's codes (and no others), so a customer's pasted report
    reads like a ws-smoke run."""
    page = (ROOT / "service" / "static" / "ws_check.html").read_text()
    used = set(re.findall(r'diagnose\("([a-z_0-9]+)"', page))
    assert len(used) > 15
    assert used <= CODES, used - CODES
    assert not re.search(r'diagnose\([^"]', page.split("function diagnose", 1)[1]), (
        "a computed code would escape this check")


def test_the_browser_page_gives_the_same_upgrade_advice() -> None:
    page = (ROOT / "service" / "static" / "ws_check.html").read_text()
    assert "default upgrade; '' '';" in NGINX_UPGRADE
    assert "'' close" not in page
    assert "default upgrade; '' '';" in page


def test_every_row_quotes_what_ws_smoke_says_for_its_first_code() -> None:
    table = _section((ROOT / "README.md").read_text(), "## Troubleshooting")
    rows = [line for line in table.splitlines()
            if line.startswith("| ") and not line.startswith(("| Symptom", "|---"))]
    for row in rows:
        code = re.findall(r"\[([a-z_0-9]+)\]", row)[0]
        quotes = [quote for quote, _ in readme_rows.rows().get(code, [])]
        assert any(len(quote) > len(code) + 3 for quote in quotes), (
            f"row {row[:50]!r} quotes no ws-smoke text for {code}")


def test_a_row_that_says_otherwise_than_ws_smoke_fails() -> None:
    """The comparison can fail: addresses, ports and decimals may differ, statuses and words
    may not."""
    readme_rows.check("backend_unreachable", "[backend_unreachable] HTTP 502 on the handshake "
                      "(answered by nginx/1.22.1): the proxy is up but cannot reach the backend")
    with pytest.raises(AssertionError, match="says otherwise"):
        readme_rows.check("backend_unreachable", "[backend_unreachable] HTTP 503 on the "
                          "handshake (answered by nginx/1.22.1): the proxy is up but cannot "
                          "reach the backend")
    with pytest.raises(AssertionError, match="says otherwise"):
        readme_rows.check("connection_refused", "[connection_refused] Connection refused by "
                          "127.0.0.1:9: something else")
