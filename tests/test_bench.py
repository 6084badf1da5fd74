"""The benchmark harness in its tiny mode: it runs end to end and writes well-formed results.

No timing is asserted: this checks the harness, not the service's speed.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert result["ratios"]["service /ws"]["c100_msgs_per_s"] == pytest.approx(1.0)
    assert not math.isnan(result["ratios"]["picows"]["lat1_p50_us"])
    if result["nginx"]:
        assert "nginx_c100_msgs_per_s" in result["rounds"]["service /ws"][0]


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
            assert cell["ours_us"] == result["summary"][ours][metric]["median"]
            assert cell["ours_over_peer"] == pytest.approx(cell["ours_us"] / cell["peer_us"])
            assert cell["ours_over_peer"] > 0, (peer, metric)
            assert set(cell["per_round"]) == {"median", "min", "max", "n"}
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
