"""The benchmark harness: its report's arithmetic on known inputs, and its tiny mode end to end.

No timing is asserted: this checks the harness, not the service's speed. The report is fed
rounds whose medians and ratios are known and must print those figures; a tiny run's ratios
must come from the two targets' own rounds, measured on two different servers.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.servers import BASELINE
from bench.stats import ratio, summarize

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--out", str(out),
         "--only", "service /ws", "--only", "picows", "--only", "litestar-min",
         "--only", "asgi-reply", "--only", "service-uvicorn /ws", "--only", "asgi-reply-uvicorn",
         "--only", "kit-no-session"],
        cwd=ROOT, check=True, timeout=150, capture_output=True,
    )
    return out


def test_tiny_run_writes_json_markdown_and_plot(tiny_run: Path) -> None:
    assert (tiny_run / "results.md").read_text().startswith("Commit `")
    assert (tiny_run / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((tiny_run / "results.json").read_text())
    for key in ("mode", "machine", "rounds", "summary", "ratios", "scaling", "server_core",
                "loadgen_core", "nofile_limit", "nginx"):
        assert key in result
    assert result["mode"]["name"] == "tiny"
    assert set(result["machine"]["packages"]) >= {"granian", "litestar", "picows"}


def test_tiny_run_measures_every_target_and_ratio(tiny_run: Path) -> None:
    result = json.loads((tiny_run / "results.json").read_text())
    assert set(result["rounds"]) == {"service /ws", "picows", "litestar-min", "asgi-reply",
                                     "service-uvicorn /ws", "asgi-reply-uvicorn",
                                     "kit-no-session"}
    for key, rounds in result["rounds"].items():
        assert len(rounds) == result["mode"]["rounds"], key
        for metric in ("lat1_p50_us", "lat1_p99_us", "c100_msgs_per_s", "c100_p99_us",
                       "c100_client_cpu_pct", "hs_per_s", "c100_server_cpu_us_per_msg",
                       "hs_server_cpu_us"):
            assert metric in rounds[0], (key, metric)
        summary = result["summary"][key]["c100_msgs_per_s"]
        assert set(summary) == {"median", "min", "max", "n"}
        assert summary["min"] <= summary["median"] <= summary["max"]
    for peer in set(result["rounds"]) - {BASELINE}:
        _assert_ratio_of_two_measurements(tiny_run, result, peer, BASELINE, "c100_msgs_per_s")
        _assert_ratio_of_two_measurements(tiny_run, result, peer, BASELINE, "lat1_p50_us")
    if result["nginx"]:
        assert "nginx_c100_msgs_per_s" in result["rounds"]["service /ws"][0]


def _median(result: dict[str, Any], key: str, metric: str) -> float:
    """The median of ``key``'s own rounds of ``metric``, computed here, not by bench.stats."""
    return float(statistics.median(r[metric] for r in result["rounds"][key]))


def _assert_ratio_of_two_measurements(tiny_run: Path, result: dict[str, Any], peer: str,
                                      ours: str, metric: str) -> None:
    """``ratios[peer][metric]`` is the peer's median over ours, each from its own rounds, and
    those rounds are two measurements: of two server processes (each its own log), with
    samples of their own (not one target's figures read twice)."""
    targets = result["targets"]
    assert targets[peer]["server"] != targets[ours]["server"], peer
    for key in (peer, ours):
        assert (tiny_run / "logs" / f"{targets[key]['server']}.log").exists(), key
    theirs = [r[metric] for r in result["rounds"][peer]]
    mine = [r[metric] for r in result["rounds"][ours]]
    assert theirs != mine, (peer, metric, theirs)
    expected = _median(result, peer, metric) / _median(result, ours, metric)
    assert result["ratios"][peer][metric] == pytest.approx(expected), (peer, metric)
    assert result["ratios"][peer][metric] != pytest.approx(1.0, rel=1e-9), (peer, metric)


# -- the report's arithmetic on known inputs ----------------------------------------------------


def _known_result() -> dict[str, Any]:
    """Three rounds of the service and of its floor peer asgi-reply, with round numbers."""
    def rounds(*figures: tuple[float, float, float]) -> list[dict[str, float]]:
        return [{"c100_msgs_per_s": msgs, "lat1_p50_us": p50,
                 "c100_server_cpu_us_per_msg": cpu, "c100_errors": 0.0}
                for msgs, p50, cpu in figures]

    ours = rounds((100.0, 40.0, 10.0), (300.0, 60.0, 12.0), (200.0, 50.0, 11.0))
    peer = rounds((400.0, 20.0, 5.0), (600.0, 30.0, 4.0), (500.0, 25.0, 6.0))
    return {
        "mode": {"name": "known", "rounds": 3, "latency_messages": 10,
                 "throughput_connections": 100, "throughput_seconds": 1.0,
                 "hold_interval": 1.0},
        "machine": {"commit": "0000000", "nproc": 2}, "server_core": 0, "loadgen_core": 1,
        "nginx": False, "scaling": {},
        "targets": {BASELINE: {"server": "service", "path": "/ws", "label": "ours"},
                    "asgi-reply": {"server": "asgi-reply", "path": "/ws", "label": "floor"}},
        "rounds": {BASELINE: ours, "asgi-reply": peer},
    }


def test_the_report_prints_the_ratios_of_known_rounds(tmp_path: Path) -> None:
    """Medians 200 (ours) and 500 (peer) messages/s: the peer's ÷ ours is 2.50, printed in
    Figure 1b's row; latency 50 and 25 µs: 0.50; server CPU per message 11 and 5 µs: the
    floor's ours ÷ peer 2.20, per round 2.00 (1.83-3.00)."""
    result = _known_result()
    paths = report.write(result, tmp_path)
    assert "png" not in paths  # no scaling phase: no plot
    written = json.loads(paths["json"].read_text())
    assert written["summary"]["asgi-reply"]["c100_msgs_per_s"] == {
        "median": 500.0, "min": 400.0, "max": 600.0, "n": 3}
    assert written["ratios"]["asgi-reply"]["c100_msgs_per_s"] == pytest.approx(2.5)
    assert written["ratios"]["asgi-reply"]["lat1_p50_us"] == pytest.approx(0.5)
    assert written["ratios"][BASELINE]["c100_msgs_per_s"] == pytest.approx(1.0)
    cell = written["floor"]["asgi-reply"]["c100_server_cpu_us_per_msg"]
    assert (cell["ours_us"], cell["peer_us"]) == (11.0, 5.0)
    assert cell["ours_over_peer"] == pytest.approx(2.2)
    assert cell["per_round"]["median"] == pytest.approx(2.0)
    assert cell["per_round"]["min"] == pytest.approx(11 / 6)
    assert cell["per_round"]["max"] == pytest.approx(3.0)

    markdown = paths["markdown"].read_text()
    fig1b = markdown[markdown.index("### Figure 1b"):markdown.index("### Figure 3")]
    assert "| asgi-reply | 500 (400-600) | 2.50 |" in fig1b, fig1b
    assert "| service /ws **(ours)** | 200 (100-300) | 1.00 |" in fig1b, fig1b
    fig1a = markdown[markdown.index("### Figure 1a"):markdown.index("### Figure 1b")]
    assert "| asgi-reply | 25.0 (20.0-30.0) | 0.50 |" in fig1a, fig1a
    fig5 = markdown[markdown.index("### Figure 5"):]
    assert "| asgi-reply | service /ws | 2.20 | 2.00 (1.83-3.00) | 11.0 / 5.00 |" in fig5, fig5


def test_a_ratio_with_a_missing_side_is_not_a_number() -> None:
    assert ratio(500.0, 200.0) == 2.5
    assert math.isnan(ratio(500.0, 0.0))
    assert math.isnan(ratio(float("nan"), 200.0))
    assert summarize([3.0, float("nan"), 1.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 2}


FLOORS = {"litestar-min": "service /ws", "asgi-reply": "service /ws",
          "kit-no-session": "service /ws", "asgi-reply-uvicorn": "service-uvicorn /ws"}


def test_tiny_run_reads_the_service_against_the_floor_peers(tiny_run: Path) -> None:
    """The floor peers serve /ws without errors, and the service's server CPU per message and
    per handshake on each server is given as a multiple of the floors on that server."""
    result = json.loads((tiny_run / "results.json").read_text())
    for peer, ours in FLOORS.items():
        summary = result["summary"][peer]
        assert summary["c100_errors"]["max"] == 0, peer
        assert summary["hs_errors"]["max"] == 0, peer
        assert summary["c100_msgs_per_s"]["median"] > 0, peer
        for metric in ("c100_server_cpu_us_per_msg", "hs_server_cpu_us"):
            cell = result["floor"][peer][metric]
            assert cell["ours"] == ours, (peer, metric)
            ours_us = _median(result, ours, metric)
            peer_us = _median(result, peer, metric)
            assert (cell["ours_us"], cell["peer_us"]) == (ours_us, peer_us), (peer, metric)
            assert cell["ours_over_peer"] == pytest.approx(ours_us / peer_us), (peer, metric)
            by_round = [a[metric] / b[metric] for a, b in zip(
                result["rounds"][ours], result["rounds"][peer], strict=True)]
            assert cell["per_round"]["median"] == pytest.approx(statistics.median(by_round))
            assert cell["per_round"]["n"] == len(by_round)
    markdown = (tiny_run / "results.md").read_text()
    floor = markdown[markdown.index("### Figure 5"):]
    assert "| litestar-min | service /ws |" in floor
    assert "| asgi-reply | service /ws |" in floor
    assert "| asgi-reply-uvicorn | service-uvicorn /ws |" in floor
    assert "| kit-no-session | service /ws |" in floor


def test_tiny_run_holds_connections_without_drops(tiny_run: Path) -> None:
    result = json.loads((tiny_run / "results.json").read_text())
    assert set(result["scaling"]) == {"service", "picows", "asgi-reply", "service-uvicorn",
                                      "asgi-reply-uvicorn", "service-uvicorn +deflate"}
    for name, rows in result["scaling"].items():
        assert rows, name
        for row in rows:
            assert row["opened"] == row["connections"], name
            assert row["drops"] == 0, name
            assert row["heartbeats"] > 0, name
            assert {"rss_per_conn_kib", "server_cpu_pct", "lateness_p50_ms",
                    "lateness_p99_ms", "client_cpu_pct"} <= set(row)


def test_tiny_run_offers_permessage_deflate_only_where_it_says(tiny_run: Path) -> None:
    """The clients offer no extension, so no server compresses, except in the "+deflate" hold,
    where uvicorn takes the offer on every connection."""
    result = json.loads((tiny_run / "results.json").read_text())
    assert result["client"]["deflate_offered"] is False
    assert result["client"]["deflate_offered_in"] == ["service-uvicorn +deflate"]
    for name, rows in result["scaling"].items():
        for row in rows:
            offered = name.endswith(" +deflate")
            assert row["deflate_offered"] == float(offered), name
            assert row["deflate_negotiated"] == (row["opened"] if offered else 0), name
