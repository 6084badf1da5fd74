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

from smoke.diagnose import NGINX_UPGRADE, RULES
from smoke.model import TITLES, CheckName, DiagnosisCode
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
