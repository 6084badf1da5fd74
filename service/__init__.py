"""A Litestar WebSocket service whose connections survive idle-timeout proxies."""

__version__ = "0.1.0"
