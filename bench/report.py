"""Results as JSON, Markdown tables (ours and each peer as a ratio) and the scaling plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.servers import BASELINE, FLOORS
from bench.stats import Summary, ratio, summarize

# (metric key, column title, unit, higher is better)
FIG1_LATENCY = [("lat1_p50_us", "p50", "µs", False), ("lat1_p99_us", "p99", "µs", False)]
FIG1_THROUGHPUT = [("c100_msgs_per_s", "messages/s", "", True), ("c100_p99_us", "p99", "µs", False),
                   ("c100_client_cpu_pct", "load-gen CPU", "%", False)]
FIG3 = [("hs_per_s", "handshakes/s", "", True), ("hs_server_cpu_us", "server CPU/handshake", "µs",
                                                  False),
        ("hs_client_cpu_pct", "load-gen CPU", "%", False)]
FIG4 = [("c100_server_cpu_us_per_msg", "server CPU/message", "µs", False),
        ("c100_server_cpu_pct", "server CPU busy", "%", False)]
# Server CPU costs read against the floor peers (ours ÷ floor, lower is better).
FLOOR_METRICS = [("c100_server_cpu_us_per_msg", "server CPU/message, 100 connections"),
                 ("nginx_c100_server_cpu_us_per_msg", "server CPU/message via nginx"),
                 ("hs_server_cpu_us", "server CPU/handshake")]


def summaries(result: dict[str, Any]) -> dict[str, dict[str, Summary]]:
    out: dict[str, dict[str, Summary]] = {}
    for key, rounds in result["rounds"].items():
        metrics = sorted({m for r in rounds for m in r})
        out[key] = {m: summarize([r.get(m, float("nan")) for r in rounds]) for m in metrics}
    for key, per in out.items():  # nginx overhead, per round medians
        direct, proxied = per.get("c100_msgs_per_s"), per.get("nginx_c100_msgs_per_s")
        if direct and proxied:
            rounds = result["rounds"][key]
            per["nginx_throughput_ratio"] = summarize(
                [ratio(r.get("nginx_c100_msgs_per_s", math.nan), r.get("c100_msgs_per_s", math.nan))
                 for r in rounds])
            per["nginx_lat1_p50_ratio"] = summarize(
                [ratio(r.get("nginx_lat1_p50_us", math.nan), r.get("lat1_p50_us", math.nan))
                 for r in rounds])
    return out


def ratios(summ: dict[str, dict[str, Summary]]) -> dict[str, dict[str, float]]:
    """peer median / ours median, for every metric both have."""
    ours = summ.get(BASELINE, {})
    return {key: {m: ratio(s["median"], ours[m]["median"]) for m, s in per.items() if m in ours}
            for key, per in summ.items()}


def floor(result: dict[str, Any], summ: dict[str, dict[str, Summary]]) -> dict[str, Any]:
    """Each floor peer's service target ÷ that peer, for each server CPU cost both have.

    ``ours`` names the service target (the one on the peer's server); ``ours_over_peer`` is
    the ratio of the medians; ``per_round`` summarizes the ratio taken round by round (round i
    of both ran in the same rotation, minutes apart at most, so a machine that gets busier
    between rounds moves both sides of each ratio alike).
    """
    out: dict[str, Any] = {}
    for peer, ours_key in FLOORS.items():
        ours, theirs = summ.get(ours_key), summ.get(peer)
        if ours is None or theirs is None:
            continue
        ours_rounds, peer_rounds = result["rounds"][ours_key], result["rounds"][peer]
        per: dict[str, Any] = {}
        for metric, _ in FLOOR_METRICS:
            if metric not in ours or metric not in theirs:
                continue
            per[metric] = {
                "ours": ours_key,
                "ours_us": ours[metric]["median"], "peer_us": theirs[metric]["median"],
                "ours_over_peer": ratio(ours[metric]["median"], theirs[metric]["median"]),
                "per_round": summarize([
                    ratio(a.get(metric, math.nan), b.get(metric, math.nan))
                    for a, b in zip(ours_rounds, peer_rounds, strict=False)
                ]),
            }
        out[peer] = per
    return out


def _fmt(value: float) -> str:
    if value != value:  # noqa: PLR0124 - NaN
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _cell(s: Summary | None) -> str:
    if not s or not s.get("n"):
        return "n/a"
    return f"{_fmt(s['median'])} ({_fmt(s['min'])}-{_fmt(s['max'])})"


def _table(title: str, cols: list[tuple[str, str, str, bool]], summ: dict[str, dict[str, Summary]],
           rat: dict[str, dict[str, float]], labels: dict[str, str]) -> list[str]:
    head = ["target"]
    for _, name, unit, better in cols:
        head += [f"{name}{' (' + unit + ')' if unit else ''}",
                 f"÷ ours ({'higher' if better else 'lower'} is better)"]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for key, per in summ.items():
        row = [f"{key}" + (" **(ours)**" if key == BASELINE else "")]
        for metric, *_ in cols:
            row += [_cell(per.get(metric)), _fmt(rat.get(key, {}).get(metric, math.nan))]
        lines.append("| " + " | ".join(row) + " |")
    _ = labels
    return [*lines, ""]


def _nginx_table(summ: dict[str, dict[str, Summary]]) -> list[str]:
    head = ["target", "messages/s direct", "messages/s via nginx", "nginx ÷ direct",
            "p50 1-conn direct (µs)", "p50 1-conn via nginx (µs)", "nginx ÷ direct (latency)",
            "p99 100-conn via nginx (µs)"]
    lines = ["### Figure 1c: through nginx (same run, nginx pinned to the servers' core)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, per in summ.items():
        if "nginx_c100_msgs_per_s" not in per:
            continue
        lines.append("| " + " | ".join([
            key, _cell(per.get("c100_msgs_per_s")), _cell(per.get("nginx_c100_msgs_per_s")),
            _cell(per.get("nginx_throughput_ratio")), _cell(per.get("lat1_p50_us")),
            _cell(per.get("nginx_lat1_p50_us")), _cell(per.get("nginx_lat1_p50_ratio")),
            _cell(per.get("nginx_c100_p99_us")),
        ]) + " |")
    return [*lines, ""]


def _floor_table(result: dict[str, Any]) -> list[str]:
    fl = result.get("floor") or {}
    metrics = [(m, title) for m, title in FLOOR_METRICS if any(m in per for per in fl.values())]
    if not metrics:
        return []
    head = ["floor peer", "ours (same server)"]
    for _, title in metrics:
        head += [f"{title}: ours ÷ peer", "per round", "ours / peer (µs)"]
    lines = ["### Figure 5: the floor: the service's server CPU as a multiple of peers on the "
             "same server that send the same reply bytes with nothing around them "
             "(lower is better)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for peer, per in fl.items():
        row = [peer, FLOORS[peer]]
        for metric, _ in metrics:
            cell = per.get(metric)
            if cell is None:
                row += ["n/a", "n/a", "n/a"]
                continue
            row += [_fmt(cell["ours_over_peer"]), _cell(cell["per_round"]),
                    f"{_fmt(cell['ours_us'])} / {_fmt(cell['peer_us'])}"]
        lines.append("| " + " | ".join(row) + " |")
    return [*lines, ""]


def _deflate(row: dict[str, float]) -> str:
    """Whether the clients offered permessage-deflate, and on how many connections it was on."""
    if not row.get("deflate_offered"):
        return "not offered"
    return f"offered, on {row.get('deflate_negotiated', 0):.0f}/{row['opened']:.0f}"


def _scaling_table(scaling: dict[str, list[dict[str, float]]]) -> list[str]:
    head = ["server", "connections", "opened", "drops", "connect failures", "RSS (MiB)",
            "RSS growth/conn (KiB)", "server CPU (%)", "heartbeat lateness p50 / p99 (ms)",
            "heartbeats", "load-gen CPU (%)", "permessage-deflate"]
    lines = ["### Figure 2: connections held with heartbeats on (`/ws/health`)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rows in scaling.items():
        for r in rows:
            lines.append("| " + " | ".join([
                name, f"{r['connections']:.0f}", f"{r['opened']:.0f}", f"{r['drops']:.0f}",
                f"{r['connect_failures']:.0f}", _fmt(r["rss_mib"]), _fmt(r["rss_per_conn_kib"]),
                _fmt(r["server_cpu_pct"]),
                f"{_fmt(r['lateness_p50_ms'])} / {_fmt(r['lateness_p99_ms'])}",
                f"{r['heartbeats']:.0f}", _fmt(r["client_cpu_pct"]), _deflate(r),
            ]) + " |")
    return [*lines, ""]


def markdown(result: dict[str, Any]) -> str:
    summ = result["summary"]
    rat = result["ratios"]
    labels = {k: v["label"] for k, v in result["targets"].items()}
    mode = result["mode"]
    lines = [
        f"Commit `{result['machine'].get('commit', 'unknown')}`. "
        f"Mode `{mode['name']}`: {mode['rounds']} interleaved round(s); each cell is the median "
        "(min-max) over rounds; `÷ ours` is the peer's median divided by this service's "
        f"(`{BASELINE}`). Servers on core {result['server_core']}, load generator on core "
        f"{result['loadgen_core']}. The clients offer no permessage-deflate (no server "
        "compresses), except in Figure 2's `+deflate` rows.",
        "",
    ]
    lines += _table(f"Figure 1a: round trip at 1 connection ({mode['latency_messages']} messages)",
                    FIG1_LATENCY, summ, rat, labels)
    lines += _table(f"Figure 1b: {mode['throughput_connections']} connections, closed loop, "
                    f"{mode['throughput_seconds']:g} s", FIG1_THROUGHPUT, summ, rat, labels)
    if result.get("nginx"):
        lines += _nginx_table(summ)
    if result.get("scaling"):
        lines += _scaling_table(result["scaling"])
    lines += _table("Figure 3: handshakes (connect, one message and its answer, close; "
                    "8 at a time)", FIG3, summ, rat, labels)
    lines += _table("Figure 4: server CPU per message (server process's own CPU time, "
                    "100 connections)", FIG4, summ, rat, labels)
    lines += _floor_table(result)
    errors = {k: per["c100_errors"]["max"] + per.get("hs_errors", {"max": 0})["max"]
              for k, per in summ.items() if "c100_errors" in per}
    lines += ["Errors (max per round, echo + handshakes): "
              + ", ".join(f"{k}: {v:.0f}" for k, v in errors.items()), ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> bool:
    scaling = result.get("scaling") or {}
    if not scaling:
        return False
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for name, rows in scaling.items():
        xs = [r["opened"] for r in rows]
        axes[0].plot(xs, [r["rss_per_conn_kib"] for r in rows], marker="o", label=name)
        axes[1].plot(xs, [r["server_cpu_pct"] for r in rows], marker="o", label=name)
        axes[2].plot(xs, [r["lateness_p99_ms"] for r in rows], marker="o", label=name)
    titles = ["server RSS per connection (KiB)", "server CPU at steady state (% of a core)",
              "heartbeat lateness p99 (ms)"]
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel("connections held")
        ax.grid(alpha=0.3)
        ax.legend()
    interval = result["mode"]["hold_interval"]
    fig.suptitle(f"Connections held with a heartbeat every {interval:g} s "
                 f"({result['machine']['nproc']} cores; servers pinned to one)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write(result: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    result["summary"] = summaries(result)
    result["ratios"] = ratios(result["summary"])
    result["floor"] = floor(result, result["summary"])
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "results.md"}
    paths["json"].write_text(json.dumps(result, indent=1, allow_nan=True) + "\n")
    paths["markdown"].write_text(markdown(result) + "\n")
    png = out_dir / "scaling.png"
    if plot(result, png):
        paths["png"] = png
    return paths
