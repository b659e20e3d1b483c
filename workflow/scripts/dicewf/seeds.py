"""Seeds derived from config: one stable hash for every stochastic step that needs its own."""

from __future__ import annotations

import hashlib
from typing import Any


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (independent of Python's hash randomisation)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**31 - 1)


def with_seed(block: dict[str, Any], seed: int, after: str | None = None) -> dict[str, Any]:
    """``block`` with ``seed`` set: placed after key ``after`` (first for ``""``, last for None).

    The config has one ``seed``; the stages whose settings carry one (sampling, alpha, mix, the
    toy world, ...) get it here. The key keeps the place it had when each block had its own
    seed, so a job's params (compared by their repr) are unchanged for the same value.
    """
    items = [(k, v) for k, v in block.items() if k != "seed"]
    at = (
        0
        if after == ""
        else len(items)
        if after is None or after not in block
        else [k for k, _ in items].index(after) + 1
    )
    return dict(items[:at] + [("seed", seed)] + items[at:])
