"""``python -m bench [--quick|--tiny] [--out DIR]``: run every figure, write JSON/Markdown/PNG."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from bench import report
from bench.run import MODES, run
from bench.servers import TARGETS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="about two minutes, 1k connections")
    size.add_argument("--tiny", action="store_true", help="seconds; for the test suite")
    parser.add_argument("--out", type=Path, default=Path("bench/results"),
                        help="folder for results.json, results.md, scaling.png and logs")
    parser.add_argument("--rounds", type=int, help="override the mode's number of rounds")
    parser.add_argument("--no-nginx", action="store_true", help="skip the nginx rows")
    parser.add_argument("--no-scaling", action="store_true", help="skip figure 2")
    parser.add_argument("--only", action="append", choices=[t.key for t in TARGETS],
                        help="measure only these targets (repeatable; keep 'service /ws')")
    args = parser.parse_args(argv)
    mode = MODES["tiny" if args.tiny else "quick" if args.quick else "full"]
    if args.rounds:
        mode = type(mode)(**{**mode.__dict__, "rounds": args.rounds})
    targets = [t for t in TARGETS if not args.only or t.key in args.only]
    t0 = time.monotonic()

    def log(text: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {text}", file=sys.stderr, flush=True)

    result = asyncio.run(run(mode, targets=targets, use_nginx=not args.no_nginx,
                             scaling=not args.no_scaling, out_dir=args.out, log=log))
    paths = report.write(result, args.out)
    print(paths["markdown"].read_text())
    for kind, path in paths.items():
        log(f"wrote {kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
