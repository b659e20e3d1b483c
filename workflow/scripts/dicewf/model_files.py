"""What a local model folder must hold before a job loads it: :func:`model_dir` names the folder
and its role (``base.policy``, ``input policy of rule sample``) rather than letting transformers
fail later with a message about a missing package or a short read. Standard library only, so
every adapter can call it without pulling a model stack into its environment."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def model_dir(path: str | os.PathLike | None, role: str) -> None:
    """A local model folder has config.json, weights (*.safetensors or *.bin) and a tokenizer
    file, and its safetensors files are whole; else a ValueError naming ``path`` and ``role``
    (e.g. ``base.policy``). A path that is no local folder (a hub ID) is left to transformers."""
    if path is None:
        return
    folder = Path(path)
    if not folder.is_dir():
        return
    weights = [
        p
        for pattern in WEIGHT_PATTERNS
        for p in sorted(folder.glob(pattern))
        if p.name != "training_args.bin"
    ]  # the Trainer's pickled arguments
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not weights:
        missing.append("weights (" + " or ".join(WEIGHT_PATTERNS) + ")")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        missing.append("a tokenizer (" + ", ".join(TOKENIZER_FILES) + ")")
    if missing:
        raise ValueError(
            f"no model weights/tokenizer in {folder} ({role}): missing " + "; ".join(missing)
        )
    for file in weights:
        if file.suffix == ".safetensors":
            _safetensors_whole(file, role)


def _safetensors_whole(file: Path, role: str) -> None:
    """The header of a safetensors file parses and its tensors end within the file."""
    size = file.stat().st_size
    bad = None
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            bad = f"{size} bytes, shorter than the 8-byte header length"
        else:
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                bad = f"header of {n} bytes in a file of {size}"
            else:
                try:
                    header = json.loads(f.read(n))
                    end = max(
                        (t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"),
                        default=0,
                    )
                except (ValueError, KeyError, TypeError, IndexError) as e:
                    bad = f"unreadable header ({e})"
                else:
                    if 8 + n + end > size:
                        bad = f"tensors end at byte {8 + n + end}, the file has {size}"
    if bad:
        raise ValueError(f"{file} ({role}): truncated or corrupt safetensors file: {bad}")
