"""Machinery shared by the tests, the benchmarks and the soak run (not shipped in the wheel).

Real processes on free 127.0.0.1 ports (``ports``, ``processes``, ``service``), nginx from a
project folder (``nginx``) with the deployment's site rendered by Ansible itself (``site``),
/proc readings (``procfs``), load clients (``load``), a raw WebSocket client (``rawws``),
percentiles (``stats``). It lives at the top of the tree, beside ``tests/`` and ``bench/``,
so neither imports the other: ``tests/conftest.py`` holds fixtures only. The editable install
puts the repository root on ``sys.path``, so ``import testkit`` works from anywhere in the venv.
"""
