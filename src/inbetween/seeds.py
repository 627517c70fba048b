"""Every derived seed in one place: a stable 63-bit digest of the parts that identify a random stream.

``hash()`` is salted per process, so it would give each process other numbers; a SHA-256 digest of the parts
gives every process, machine and run the same seed for the same (run seed, pair, step, ...).
"""

from __future__ import annotations

import hashlib


def derive_seed(*parts: int | str) -> int:
    """A seed in ``[0, 2**63)`` from ``parts`` (the run's seed first, then what names the stream)."""
    key = "/".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1
