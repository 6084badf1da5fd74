"""``ws-smoke [URL] [options]`` runs the checks; ``ws-smoke watch [URL]`` watches /ws/health.

Exit status: 0 all checks passed, 1 a check failed, 2 usage error or target unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

from smoke import __version__
from smoke.report import render_text, write_json, write_junit
from smoke.runner import EXIT_UNREACHABLE, run_checks
from smoke.target import (
    DEFAULT_URL,
    Options,
    UsageError,
    parse_header,
    parse_resolve,
    parse_target,
)


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535, got {text}")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", nargs="?", default=DEFAULT_URL,
                        help="base URL: ws://, wss://, http:// or https:// "
                             f"(default {DEFAULT_URL})")
    parser.add_argument("--origin", help="Origin header to send (default: none)")
    parser.add_argument("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="extra handshake header, repeatable (e.g. Authorization)")
    parser.add_argument("--timeout", type=_positive, default=10.0, metavar="S",
                        help="timeout of each step: handshake, each expected reply (default 10)")
    parser.add_argument("--cacert", metavar="FILE",
                        help="trust only the CA certificate(s) in this PEM file, not the "
                             "system's (a private or test CA), as curl --cacert")
    parser.add_argument("-k", "--insecure", action="store_true",
                        help="do not verify certificates; every report says so")
    parser.add_argument("--resolve", action="append", default=[], metavar="HOST:PORT:ADDRESS",
                        help="connect to ADDRESS for HOST:PORT but keep HOST for SNI, Host and "
                             "the certificate check (as curl --resolve), repeatable: checks "
                             "one server by the public name before DNS points to it")
    parser.add_argument("--use-env-proxy", action="store_true",
                        help="connect through the proxy named by http_proxy/https_proxy/"
                             "all_proxy (default: ignore them and connect directly)")


def check_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ws-smoke",
        description="Smoke-check a WebSocket deployment (/health, /ws/echo, /ws/health, /ws) "
                    "and diagnose failures. Subcommand: 'ws-smoke watch URL'.",
        epilog="exit status: 0 all passed, 1 a check failed, 2 usage error or unreachable",
    )
    _common(p)
    p.add_argument("--sustain", type=_positive, default=75.0, metavar="S",
                   help="stay connected to /ws/health this long (default 75, past nginx's 60)")
    p.add_argument("--quick", action="store_true",
                   help="skip the sustained check (one heartbeat is enough)")
    p.add_argument("--direct", metavar="URL",
                   help="the backend's own URL, bypassing the proxy: failures through the proxy "
                        "that pass direct are reported as a proxy configuration problem")
    p.add_argument("--grace", type=float, default=5.0, metavar="S",
                   help="extra seconds a heartbeat may be late (default 5)")
    p.add_argument("--heartbeat-interval", type=_positive, metavar="S",
                   help="the heartbeat interval you need (default: the server's ping_interval)")
    p.add_argument("--latency-samples", type=_non_negative_int, default=20, metavar="N",
                   help="round trips on /ws/echo for p50/p95/p99 (default 20)")
    p.add_argument("--latency-limit", type=_positive, default=100.0, metavar="MS",
                   help="p95 round trip must be below this (default 100 ms)")
    p.add_argument("--foreign-origin", default="https://smoke-check.invalid", metavar="ORIGIN",
                   help="Origin used to test the origin policy (default https://smoke-check.invalid)")
    p.add_argument("--cert-warn-days", type=_positive, default=14.0, metavar="DAYS",
                   help="warn when the certificate expires within DAYS (default 14)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write the report as JUnit XML")
    p.add_argument("--prometheus", type=Path, metavar="FILE",
                   help="write the results for node_exporter's textfile collector (FILE must "
                        "end in .prom; written to a temporary file, then renamed)")
    p.add_argument("--version", action="version", version=f"ws-smoke {__version__}")
    return p


def watch_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ws-smoke watch",
        description="Stay connected to /ws/health, reconnect with back-off after every drop and "
                    "log it (code, reason, age, heartbeats, gap until back); print a summary "
                    "on Ctrl-C/SIGTERM.",
        epilog="exit status: 0 no drop or error, or only 1001 drops each back within "
               "--max-gap; 1 any other drop, an error or a longer gap; 2 never connected",
    )
    _common(p)
    p.add_argument("--duration", type=_positive, metavar="S",
                   help="stop after this many seconds (default: run until stopped)")
    p.add_argument("--max-backoff", type=_positive, default=30.0, metavar="S",
                   help="longest wait between reconnects (default 30)")
    p.add_argument("--grace", type=float, default=5.0, metavar="S",
                   help="a connection with no message for ping_interval + this many seconds "
                        "is reported as stalled and reconnected (default 5)")
    p.add_argument("--jitter", type=_positive, default=1.0, metavar="S",
                   help="after a 1001 Going Away (backend draining), first retry after "
                        "uniform(0, S) seconds, doubling on failed attempts (default 1)")
    p.add_argument("--max-gap", type=_positive, default=5.0, metavar="S",
                   help="a 1001 followed by a reconnect within S seconds is not a failure "
                        "(default 5)")
    p.add_argument("--json", type=Path, metavar="FILE",
                   help="write a JSON report at exit: drops with close code, age and gap, "
                        "failed attempts with HTTP statuses, errors")
    p.add_argument("--metrics-port", type=_port, metavar="PORT",
                   help="serve Prometheus metrics on http://ADDRESS:PORT/metrics while "
                        "watching: up, drops by close code, reconnect time, heartbeat gaps, "
                        "last diagnosis (0: any free port, logged)")
    p.add_argument("--metrics-address", default="127.0.0.1", metavar="ADDRESS",
                   help="address for --metrics-port (default 127.0.0.1; 0.0.0.0 or :: for "
                        "a scraper on another host)")
    return p


def _options(args: argparse.Namespace) -> Options:
    if args.cacert is not None:
        try:
            ssl.create_default_context(cafile=args.cacert)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"--cacert {args.cacert}: not a readable PEM CA file ({exc})"
                             ) from None
    if args.cacert and args.insecure:
        raise UsageError("--cacert and --insecure contradict each other: choose one")
    if args.resolve and args.use_env_proxy:
        raise UsageError("--resolve cannot be combined with --use-env-proxy: the proxy "
                         "resolves the name")
    return Options(
        origin=args.origin,
        headers=tuple(parse_header(h) for h in args.header),
        timeout=args.timeout,
        sustain=getattr(args, "sustain", 75.0),
        quick=getattr(args, "quick", False),
        grace=getattr(args, "grace", 5.0),
        heartbeat_interval=getattr(args, "heartbeat_interval", None),
        latency_samples=getattr(args, "latency_samples", 20),
        latency_limit_ms=getattr(args, "latency_limit", 100.0),
        foreign_origin=getattr(args, "foreign_origin", "https://smoke-check.invalid"),
        use_env_proxy=args.use_env_proxy,
        cacert=args.cacert,
        insecure=args.insecure,
        resolve=tuple(parse_resolve(r) for r in args.resolve),
        cert_warn_days=getattr(args, "cert_warn_days", 14.0),
    )


def _check(argv: Sequence[str]) -> int:
    parser = check_parser()
    args = parser.parse_args(argv)
    try:
        target = parse_target(args.url)
        direct = parse_target(args.direct) if args.direct else None
        options = _options(args)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"ws-smoke: error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        report = asyncio.run(run_checks(target, options, direct))
    except Exception as exc:  # a bug in this tool: say so, and do not exit 1 (check failed)
        print(f"ws-smoke: internal error: {exc!r}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(render_text(report), flush=True)
    if args.json:
        write_json(report, args.json)
    if args.junit:
        write_junit(report, args.junit)
    if args.prometheus:
        from smoke.exporter import write_textfile  # noqa: PLC0415 - only this output needs it

        try:
            write_textfile(report, args.prometheus)
        except OSError as exc:
            print(f"ws-smoke: cannot write {args.prometheus}: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
    return report.exit_code


def _watch(argv: Sequence[str]) -> int:
    from smoke.watch import watch  # noqa: PLC0415 - only watch mode needs it

    parser = watch_parser()
    args = parser.parse_args(argv)
    try:
        target = parse_target(args.url)
        options = _options(args)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"ws-smoke watch: error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return asyncio.run(watch(target, options, duration=args.duration,
                             max_backoff=args.max_backoff, jitter=args.jitter,
                             max_gap=args.max_gap, json_path=args.json,
                             metrics_port=args.metrics_port,
                             metrics_address=args.metrics_address))


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    code = _watch(args[1:]) if args[:1] == ["watch"] else _check(args)
    sys.exit(code)


if __name__ == "__main__":
    main()
