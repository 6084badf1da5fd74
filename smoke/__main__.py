"""``ws-smoke [URL] [options]`` runs the checks; ``ws-smoke watch [URL]`` watches /ws/health;
``ws-smoke conformance URL`` holds any WebSocket endpoint to RFC 6455 (docs/conformance.md).

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
from smoke.runner import EXIT_OK, EXIT_UNREACHABLE, run_checks
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
                    "and diagnose failures. Subcommands: 'ws-smoke watch URL', "
                    "'ws-smoke conformance URL'.",
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


def conformance_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ws-smoke conformance",
        description="Hold any WebSocket endpoint to RFC 6455: numbered cases in the Autobahn "
                    "suite's categories (framing, pings, reserved bits, opcodes, masking, "
                    "fragmentation, UTF-8, close handling, limits, permessage-deflate), each "
                    "with the RFC's expected outcome, what the server did and a verdict "
                    "(pass, non-strict, fail, informational). docs/conformance.md lists them.",
        epilog="exit status: 0 no case failed, 1 a case failed, 2 usage error or unreachable",
    )
    p.add_argument("url", nargs="?",
                   help="the echo endpoint itself (ws://, wss://, http://, https://; "
                        "e.g. ws://127.0.0.1:9000/ws/echo)")
    p.add_argument("--case", action="append", nargs="+", default=[], metavar="ID",
                   help="run only these cases, or groups (7, 7.1); repeatable")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--echo", choices=("auto", "raw", "json"), default="auto",
                   help="how the endpoint echoes: raw (the same bytes back), json (a JSON "
                        "reply containing the JSON object sent, as /ws/echo), or auto: "
                        "decided from a probe message (default)")
    p.add_argument("--oversize", type=_positive_int, default=(1 << 20) + 1, metavar="BYTES",
                   help="size of the oversize messages of cases 9.1 and 9.2 (default 1 MiB "
                        "+ 1: past the websockets library's default limit)")
    p.add_argument("--timeout", type=_positive, default=5.0, metavar="S",
                   help="each wait of a case: handshake, reply, close, end of TCP (default 5)")
    p.add_argument("--origin", help="Origin header to send (default: none)")
    p.add_argument("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="extra handshake header, repeatable (e.g. Authorization)")
    p.add_argument("--cacert", metavar="FILE",
                   help="trust only the CA certificate(s) in this PEM file (wss://)")
    p.add_argument("-k", "--insecure", action="store_true",
                   help="do not verify certificates (wss://); the report says so")
    p.add_argument("--resolve", action="append", default=[], metavar="HOST:PORT:ADDRESS",
                   help="connect to ADDRESS for HOST:PORT, as curl --resolve")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write the report as JUnit XML")
    return p


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _conformance(argv: Sequence[str]) -> int:
    # Only this mode needs them.
    from smoke.conformance import cases as conformance_cases  # noqa: PLC0415
    from smoke.conformance import report as conformance_report  # noqa: PLC0415
    from smoke.conformance.client import ClientSettings, parse_endpoint  # noqa: PLC0415
    from smoke.conformance.run import Unreachable, run_conformance  # noqa: PLC0415
    from smoke.tls import client_context  # noqa: PLC0415

    parser = conformance_parser()
    args = parser.parse_args(argv)
    ids = [i for group in args.case for i in group]
    if args.list:
        for c in conformance_cases.select(ids):
            print(f"{c.id:<6} {c.category:<16} {c.title} -> {c.expected} "
                  f"({conformance_report.rfc_ref(c.rfc)})")
        return EXIT_OK
    try:
        if not args.url:
            raise UsageError("the URL of an echo endpoint is required (e.g. "
                             "ws://127.0.0.1:9000/ws/echo)")
        endpoint = parse_endpoint(args.url)
        if args.cacert and args.insecure:
            raise UsageError("--cacert and --insecure contradict each other: choose one")
        if missing := conformance_cases.unknown(ids):
            raise UsageError(f"no such case: {', '.join(missing)} (--list shows them)")
        resolve = [parse_resolve(r) for r in args.resolve]
        address = next((a for h, p, a in resolve
                        if h == endpoint.host.lower() and p == endpoint.port), None)
        context = None
        if endpoint.secure:
            try:
                context = client_context(Options(cacert=args.cacert, insecure=args.insecure))
            except (OSError, ssl.SSLError) as exc:
                raise UsageError(f"--cacert {args.cacert}: not a readable PEM CA file "
                                 f"({exc})") from None
        settings = ClientSettings(
            origin=args.origin, headers=tuple(parse_header(h) for h in args.header),
            timeout=args.timeout, ssl_context=context, address=address)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"ws-smoke conformance: error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        report = asyncio.run(run_conformance(
            endpoint, settings, conformance_cases.select(ids),
            echo=None if args.echo == "auto" else args.echo, oversize=args.oversize))
    except Unreachable as exc:
        print(f"ws-smoke conformance: {endpoint.url}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except Exception as exc:  # a bug in this tool: say so, and do not exit 1 (a case failed)
        print(f"ws-smoke conformance: internal error: {exc!r}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if args.insecure:
        report.warnings.append("--insecure: certificates are NOT verified")
    print(conformance_report.render_text(report), flush=True)
    if args.json:
        conformance_report.write_json(report, args.json)
    if args.junit:
        conformance_report.write_junit(report, args.junit)
    return report.exit_code


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
    modes = {"watch": _watch, "conformance": _conformance}
    mode = modes.get(args[0]) if args else None
    code = mode(args[1:]) if mode is not None else _check(args)
    sys.exit(code)


if __name__ == "__main__":
    main()
