"""``testkit``'s small pieces: the one percentile, readiness waits that fail fast; and that
the support code stays in ``testkit`` (nothing imports ``tests`` or ``conftest``)."""

from __future__ import annotations

import ast
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.paths import REPO
from testkit.ports import NotListening, free_port, wait_for_port
from testkit.processes import LineLog, stop
from testkit.stats import or_none, percentile


def test_percentile_is_nearest_rank_and_nan_for_no_values() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert (percentile(values, 50), percentile(values, 51), percentile(values, 99),
            percentile(values, 100)) == (50.0, 51.0, 99.0, 100.0)
    assert percentile([3.0], 1) == 3.0
    assert math.isnan(percentile([], 50))
    assert or_none(percentile([], 99)) is None
    assert or_none(0.04321 * 1000) == 43.2


def test_wait_for_port_fails_at_once_when_the_process_exits() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(NotListening, match="exited with 3"):
        wait_for_port(free_port(), proc, timeout=30)


def test_line_log_waits_for_a_line_and_fails_with_the_output() -> None:
    log = LineLog([sys.executable, "-u", "-c", "print('one'); print('ready: two')"])
    try:
        assert log.wait_for_line(r"^ready: ", 10) == "ready: two"
        with pytest.raises(AssertionError, match=r"(?s)no line matching.*one"):
            log.wait_for("never", 10)
    finally:
        assert stop(log.proc) == 0


def test_line_log_gives_the_match_of_the_line() -> None:
    log = LineLog([sys.executable, "-u", "-c", "print('port 1'); print('port 2')"])
    try:
        index, match = log.wait_for_match(r"port (\d)", 10, start=1)
        assert (index, match[1]) == (1, "2")
    finally:
        assert log.finish(10) == 0


# -- nothing imports tests.* or conftest -------------------------------------------------------

FOLDERS = ("tests", "bench", "testkit", "infra/tests")
FORBIDDEN = ("tests", "conftest")


def imported_modules(tree: ast.Module, package: list[str]) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``tree``, a module of ``package``
    (relative imports resolved; ``from X import Y`` yields X and X.Y, Y may be a module;
    ``importlib.import_module("...")`` with a literal name counts too)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            if module:
                yield node.lineno, module
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}" if module else alias.name
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            yield node.lineno, node.args[0].value


def forbidden_imports(source: str, path: Path) -> list[str]:
    """``path:line module`` for each import of ``tests``/``conftest`` (or below them)."""
    package = list(path.parent.parts)
    return [f"{path}:{line} {name}"
            for line, name in imported_modules(ast.parse(source, str(path)), package)
            if name.split(".")[0] in FORBIDDEN]


def test_the_import_check_finds_each_form() -> None:
    """The check below can fail: every way of reaching ``tests`` or ``conftest`` is found."""
    samples = {
        "import tests.helpers": "tests.helpers",
        "from tests import conftest": "tests",
        "from tests.conftest import service": "tests.conftest",
        "import conftest": "conftest",
        "from . import conftest": "tests",
        "from .helpers import x": "tests.helpers",
        "importlib.import_module('tests.x')": "tests.x",
    }
    for source, module in samples.items():
        found = forbidden_imports(source, Path("tests/test_x.py"))
        assert [hit.split()[1] for hit in found][:1] == [module], (source, found)
    assert forbidden_imports("from . import stats\nimport testkit.ports", Path(
        "testkit/x.py")) == []


def test_nothing_imports_tests_or_conftest() -> None:
    """Shared machinery lives in ``testkit``; ``tests/`` holds tests and fixtures only, so no
    module of tests/, bench/, testkit/ or infra/tests/ imports ``tests`` or ``conftest``."""
    files = [path for folder in FOLDERS for path in sorted((REPO / folder).rglob("*.py"))]
    assert len(files) > 20, files
    found = [hit for path in files
             for hit in forbidden_imports(path.read_text(), path.relative_to(REPO))]
    assert found == [], "import shared code from testkit instead:\n" + "\n".join(found)
