"""``ws-smoke``: checks a WebSocket deployment and says what is wrong when a check fails.

The checks are the seed's "Expected Results Summary"; the diagnoses are its "Failure
Scenarios" table, each derived from evidence (handshake HTTP status, close code and reason,
connection age and idle time at the drop, the configuration the server exposes).
"""

__version__ = "0.1.0"
