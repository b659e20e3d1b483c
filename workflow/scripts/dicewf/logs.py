"""Logging set-up for rule scripts: everything a job prints goes to its ``log:`` file."""

from __future__ import annotations

import logging
import os
import sys


def to_file(path: str | os.PathLike) -> None:
    """Send stdout, stderr (progress bars included) and ``logging`` to ``path``, line-buffered."""
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    stream = open(path, "w", buffering=1)  # noqa: SIM115 - lives as long as the job
    sys.stdout = sys.stderr = stream
    logging.basicConfig(
        stream=stream,
        level=logging.INFO,
        force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
