"""Benchmark harness: this service beside its peers, side by side in one run, as ratios.

Run ``python -m bench --quick`` (about two minutes) or ``python -m bench`` (the full run);
see docs/benchmarks.md. Every load targets 127.0.0.1 and is bounded in count and time.
"""
