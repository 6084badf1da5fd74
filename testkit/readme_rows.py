"""The README's troubleshooting table as patterns: what ws-smoke says for each diagnosis code.

Each row's "ws-smoke says" cell quotes ws-smoke's diagnoses in backticks (``[code] cause``).
Read as a pattern, addresses, ports, decimals and the placeholders ``HOST``, ``PORT`` and ``N``
stand for any value and ``...`` for any text; everything else (statuses, close codes, words)
must be what ws-smoke printed.
``testkit.smoke_cli.SmokeRun.diagnosis`` holds every diagnosis a test asks for to its row, so
the table cannot drift from the tool (tests/test_smoke_docs.py checks every row is asked for).
"""

from __future__ import annotations

import functools
import re

from testkit.paths import REPO

# In re.escape()d text: a dotted quad, a :port, a decimal. Other integers (HTTP statuses, close
# codes, the configured seconds the row names) are literal.
_VARIABLE = re.compile(r"\d+(?:\\\.\d+){3}|(?<=:)\d+|\d+\\\.\d+")
_PLACEHOLDERS = {"HOST": r"[\w.\-]+", "PORT": r"\d+", "N": r"\d+"}


def _pattern(quote: str) -> re.Pattern[str]:
    escaped = re.escape(quote)
    escaped = _VARIABLE.sub(lambda _: r"\d+(?:\.\d+)*", escaped)
    for name, value in _PLACEHOLDERS.items():
        escaped = re.sub(rf"\b{name}\b", value.replace("\\", "\\\\"), escaped)
    escaped = escaped.replace(r"\.\.\.", ".*?").replace(r"\ ", r"\s+")
    return re.compile(escaped, re.DOTALL)


@functools.cache
def rows() -> dict[str, list[tuple[str, re.Pattern[str]]]]:
    """Code -> the README's quotes of it (and their patterns), from every row that has one."""
    text = (REPO / "README.md").read_text()
    start = text.index("## Troubleshooting")
    end = text.find("\n## ", start + 1)
    found: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
    for line in text[start:end if end != -1 else None].splitlines():
        cells = line.split(" | ")
        if not line.startswith("| ") or len(cells) < 3 or line.startswith(("| Symptom", "|---")):
            continue
        for quote in re.findall(r"`(\[[a-z_0-9]+\][^`]*)`", cells[1]):
            code = quote[1:quote.index("]")]
            found.setdefault(code, []).append((quote, _pattern(quote)))
    # A bare mention (``[connection_refused]`` in another row) says nothing of the text: it
    # counts only for a code no row quotes in full.
    return {code: [q for q in quotes if q[0] != f"[{code}]"] or quotes
            for code, quotes in found.items()}


def check(code: str, says: str) -> None:
    """``says`` (``[code] cause``, as ws-smoke reported it) is what a README row quotes."""
    quotes = rows().get(code)
    if not quotes:
        return  # no row quotes this code: docs/smoke.md's list covers it
    if not any(pattern.search(says) for _, pattern in quotes):
        shown = "\n".join(f"  README: {quote}" for quote, _ in quotes)
        raise AssertionError(f"the README's troubleshooting table says otherwise\n{shown}\n"
                             f"  ws-smoke: {says}")
