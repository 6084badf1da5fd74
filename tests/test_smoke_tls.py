"""ws-smoke over TLS, against the nginx role's own site with TLS on, as production is checked.

A CA made by the test signs the certificates production meets: valid for the public name,
expired, issued for another name, and signed by another CA. Each case is checked with the
CLI a user runs (``--resolve`` keeps the public name ``ws-kit.test`` while connecting to
127.0.0.1) and must give its own diagnosis on every check that meets it.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from testkit.certs import Authority
from testkit.nginx import Nginx
from testkit.paths import VENV_BIN
from testkit.ports import free_port
from testkit.service import SHORT_INTERVALS, ServiceProcess, start_service
from testkit.site import Site, render_sites
from testkit.smoke_cli import latency_args

NAME = "ws-kit.test"
CASES = ("valid", "expired", "wrong_name", "other_ca")
HANDSHAKES = {"tls", "http_health", "handshake", "ws_ping_pong", "health_status"}


@dataclass
class Stack:
    ca: Path
    plain_port: int
    ports: dict[str, int]
    """The TLS port of the nginx serving each case's certificate."""
    service: ServiceProcess

    def resolve(self) -> list[str]:
        out: list[str] = []
        for port in [self.plain_port, *self.ports.values()]:
            out += ["--resolve", f"{NAME}:{port}:127.0.0.1"]
        return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("tls")
    ca, other = Authority.create("ws-kit test CA"), Authority.create("another CA")
    ca.issue(root / "valid", [NAME])
    ca.issue(root / "expired", [NAME], expired=True)
    ca.issue(root / "wrong_name", ["other-name.invalid"])
    other.issue(root / "other_ca", [NAME])
    service = start_service({**SHORT_INTERVALS})
    plain = {case: free_port() for case in CASES}
    tls = {case: free_port() for case in CASES}
    sites = render_sites(
        Site(plain[case], (service.port,), interval=0.4, timeout=0.2, tls_port=tls[case],
             tls_dir=str(root / case)) for case in CASES)
    proxies = [Nginx(root / f"nginx-{case}", text, plain[case]).start()
               for case, text in zip(CASES, sites, strict=True)]
    try:
        yield Stack(ca.write(root / "ca.pem"), plain["valid"], tls, service)
    finally:
        for proxy in proxies:
            proxy.stop()
        service.stop()


def smoke(stack: Stack, url: str, *args: str) -> tuple[int, dict[str, Any], str]:
    """``ws-smoke URL --quick ... --json F``: exit status, the JSON report, the text."""
    out = Path(stack.ca.parent / "report.json")
    out.unlink(missing_ok=True)
    done = subprocess.run(
        [str(VENV_BIN / "ws-smoke"), url, "--quick", "--timeout", "5", *stack.resolve(),
         "--json", str(out), *args, *latency_args(args)],
        capture_output=True, text=True, timeout=60, check=False)
    return done.returncode, json.loads(out.read_text()), done.stdout


def failed(report: dict[str, Any]) -> set[str]:
    return {r["name"] for r in report["results"] if r["status"] == "fail"}


def only_diagnosis(report: dict[str, Any]) -> dict[str, Any]:
    assert len(report["diagnoses"]) == 1, report["diagnoses"]
    diagnosis: dict[str, Any] = report["diagnoses"][0]
    return diagnosis


def test_valid_certificate_passes_every_check_with_cacert(stack: Stack, tmp_path: Path) -> None:
    prom = tmp_path / "smoke.prom"
    code, report, text = smoke(stack, f"wss://{NAME}:{stack.ports['valid']}",
                               "--cacert", str(stack.ca), "--prometheus", str(prom))
    assert code == 0, text
    assert report["counts"] == {"pass": 14, "fail": 0, "skip": 0}, text
    tls = report["tls"]
    assert tls["subject"] == f"CN={NAME}"
    assert tls["issuer"] == "CN=ws-kit test CA"
    assert tls["names"] == [NAME]
    assert tls["verified"] is True
    assert tls["version"] in ("TLSv1.2", "TLSv1.3")
    assert 89 < tls["days_left"] <= 90
    assert report["warnings"] == []
    expiry = [s for family in text_string_to_metric_families(prom.read_text())
              for s in family.samples if s.name == "ws_smoke_tls_cert_expiry_timestamp_seconds"]
    assert len(expiry) == 1
    not_after = dt.datetime.fromisoformat(tls["not_after"]).timestamp()
    assert expiry[0].value == pytest.approx(not_after)
    check = next(r for r in report["results"] if r["name"] == "tls")
    assert "verified" in check["detail"]
    assert f"CN={NAME}" in check["detail"]


def test_resolve_connects_to_the_address_but_checks_the_name(stack: Stack) -> None:
    """The same server by its address fails the certificate (issued for the name only):
    with --resolve the name, not the address, is what SNI and the check use."""
    code, report, text = smoke(stack, f"wss://127.0.0.1:{stack.ports['valid']}",
                               "--cacert", str(stack.ca))
    assert code == 1, text
    assert only_diagnosis(report)["code"] == "tls_name_mismatch"
    code, report, text = smoke(stack, f"wss://{NAME}:{stack.ports['valid']}",
                               "--cacert", str(stack.ca))
    assert code == 0, text
    handshakes = [r for r in report["results"] if r["name"] in HANDSHAKES]
    assert {r["evidence"]["connected_to"] for r in handshakes} == {"127.0.0.1"}


def test_system_trust_store_does_not_know_the_test_ca(stack: Stack) -> None:
    code, report, _ = smoke(stack, f"wss://{NAME}:{stack.ports['valid']}")
    assert code == 1
    diagnosis = only_diagnosis(report)
    assert diagnosis["code"] == "tls_unknown_ca"
    assert set(diagnosis["checks"]) == failed(report) == HANDSHAKES
    assert "--cacert" in diagnosis["next_step"]


@pytest.mark.parametrize(("case", "code"), [
    ("expired", "tls_expired"),
    ("wrong_name", "tls_name_mismatch"),
    ("other_ca", "tls_unknown_ca"),
])
def test_each_bad_certificate_has_its_own_diagnosis(stack: Stack, case: str, code: str) -> None:
    exit_code, report, text = smoke(stack, f"wss://{NAME}:{stack.ports[case]}",
                                    "--cacert", str(stack.ca))
    assert exit_code == 1, text
    diagnosis = only_diagnosis(report)
    assert diagnosis["code"] == code, text
    assert set(diagnosis["checks"]) == failed(report) == HANDSHAKES
    for result in report["results"]:
        if result["name"] in HANDSHAKES:
            assert result["evidence"]["error"] == "tls"
    # The certificate that failed is still described (read without verification).
    tls = report["tls"]
    assert tls is not None
    assert tls["verified"] is False
    if case == "expired":
        assert tls["days_left"] < 0
    if case == "wrong_name":
        assert tls["names"] == ["other-name.invalid"]
    if case == "other_ca":
        assert tls["issuer"] == "CN=another CA"


def test_wss_to_the_plain_port(stack: Stack) -> None:
    code, report, text = smoke(stack, f"wss://{NAME}:{stack.plain_port}")
    assert code == 1, text
    diagnosis = only_diagnosis(report)
    assert diagnosis["code"] == "tls_not_tls_port"
    assert set(diagnosis["checks"]) == HANDSHAKES


def test_ws_to_the_tls_port(stack: Stack) -> None:
    code, report, text = smoke(stack, f"ws://{NAME}:{stack.ports['valid']}")
    assert code == 1, text
    diagnosis = only_diagnosis(report)
    assert diagnosis["code"] == "plain_to_tls_port"
    assert set(diagnosis["checks"]) == HANDSHAKES - {"tls"}
    assert "wss://" in diagnosis["next_step"]


def test_insecure_passes_but_says_so_everywhere(stack: Stack, tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    code, report, text = smoke(stack, f"wss://{NAME}:{stack.ports['other_ca']}", "--insecure",
                               "--junit", str(junit))
    assert code == 0, text
    assert report["tls"]["verified"] is False
    assert report["tls"]["issuer"] == "CN=another CA"
    assert any("NOT verified" in w for w in report["warnings"])
    assert "WARNING: --insecure" in text
    assert "NOT VERIFIED (--insecure)" in text
    assert 'name="warning" value="--insecure' in junit.read_text()


def test_expiry_warning_below_the_threshold(stack: Stack) -> None:
    code, report, text = smoke(stack, f"wss://{NAME}:{stack.ports['valid']}",
                               "--cacert", str(stack.ca), "--cert-warn-days", "120")
    assert code == 0, text
    assert [w for w in report["warnings"] if "expires in" in w], report["warnings"]
    assert "warning below 120 days" in text


@pytest.mark.parametrize(("args", "message"), [
    (["--resolve", "ws-kit.test:443"], "expected HOST:PORT:ADDRESS"),
    (["--resolve", "ws-kit.test:443:not-an-ip"], "is not an IP address"),
    (["--resolve", "ws-kit.test:0:127.0.0.1"], "is not 1-65535"),
    (["--cacert", "/nonexistent/ca.pem"], "--cacert /nonexistent/ca.pem"),
    (["--cacert", __file__], "not a readable PEM CA file"),
    (["--insecure", "--cacert", __file__], "--cacert"),
])
def test_bad_tls_options_are_usage_errors(args: list[str], message: str) -> None:
    done = subprocess.run([str(VENV_BIN / "ws-smoke"), "wss://127.0.0.1:9", *args],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert message in done.stderr
