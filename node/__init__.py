"""One simulated server: its catalog of units and stores, certificates, database, and agent.

``catalog``, ``certs`` and ``ops`` are the pure core; ``store`` (aiosqlite) and ``agent``
(asyncio, the bus) are the I/O adapters.
"""
