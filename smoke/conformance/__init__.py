"""``ws-smoke conformance URL``: RFC 6455 behaviour of any WebSocket server, case by case.

Numbered cases in the Autobahn test suite's categories (framing, pings, reserved bits, opcodes,
masking, fragmentation, UTF-8, close handling, limits, compression), each sent byte by byte
from a raw socket, because a real client library refuses to send the broken frames that show
how a server fails. Every case states the RFC's expected outcome, what the server did (frames,
close code and reason, FIN or reset, time to close) and a verdict.
"""
