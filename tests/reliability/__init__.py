"""Reliability harness: process metrics, nginx from the deployment's template, load clients.

Used by ``tests/test_reliability*.py`` (short, CI-sized runs) and by the soak mode
(``python -m tests.reliability soak``, wrapped by ``scripts/soak.sh``). All traffic goes to
127.0.0.1; every loop here is bounded in count and in time.
"""
