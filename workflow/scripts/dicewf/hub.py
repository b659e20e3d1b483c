"""Hub models and datasets named in config, each downloaded by its own rule.

Models are named ``hf://ORG/NAME[@REVISION]`` and datasets ``hf://datasets/ORG/NAME[@REVISION]``
(the hub's own ``datasets/`` URL prefix). The workflow never touches the network while it builds
the DAG: a hub repository maps to a local folder under ``resources/hub/`` (models) or
``resources/hub/datasets/`` (datasets) that the ``download_model`` / ``download_dataset`` rules
produce, so ``snakemake -n`` works offline and jobs read the files by path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

SCHEME = "hf://"
HUB_DIR = "resources/hub"
DATASET_PREFIX = "datasets/"
DATASET_DIR = f"{HUB_DIR}/datasets"
_PART = r"[A-Za-z0-9_.-]+"
_URI = re.compile(
    rf"hf://(?P<dataset>datasets/)?(?P<org>{_PART})/(?P<name>{_PART})(?:@(?P<rev>[\w.-]+))?"
)
# Files a causal LM needs to load and generate; no optimizer states or other weight formats.
ALLOW_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.model",
    "*.txt",
    "*.jinja",
    "*.tiktoken",
    "tokenizer*",
]
# Data files of a dataset repository; config may narrow them to the files a rule reads.
DATASET_ALLOW_PATTERNS = ["*.parquet", "*.json", "*.jsonl", "*.md"]


def is_hub(spec: str) -> bool:
    return spec.startswith(SCHEME)


def is_dataset(spec: str) -> bool:
    """True for ``hf://datasets/ORG/NAME[@REV]``."""
    return spec.startswith(SCHEME + DATASET_PREFIX)


def parse(spec: str) -> tuple[str, str | None]:
    """``hf://[datasets/]ORG/NAME[@REV]`` -> (``ORG/NAME``, revision or None)."""
    m = _URI.fullmatch(spec)
    # "datasets" is the hub's namespace for datasets, never a model owner
    if not m or (m["dataset"] is None and m["org"] == "datasets"):
        raise ValueError(
            "not a hub repository of the form hf://ORG/NAME[@REVISION] (model) or "
            f"hf://datasets/ORG/NAME[@REVISION] (dataset): {spec!r}"
        )
    return f"{m['org']}/{m['name']}", m["rev"]


def local_dir(spec: str) -> str:
    """Where the download rule puts a hub model or dataset; a plain path is returned unchanged."""
    if not is_hub(spec):
        return spec
    repo_id, rev = parse(spec)
    org, name = repo_id.split("/")
    root = DATASET_DIR if is_dataset(spec) else HUB_DIR
    return f"{root}/{org}--{name}" + (f"--{rev}" if rev else "")


def spec_of(folder: str, *, dataset: bool | None = None) -> str:
    """Inverse of :func:`local_dir`.

    ``folder`` is a folder name ``ORG--NAME[--REV]`` (a model unless ``dataset=True``) or a path
    ending in it; a path whose parent folder is ``datasets`` names a dataset.
    """
    path = PurePosixPath(folder)
    if dataset is None:
        dataset = path.parent.name == "datasets"
    parts = path.name.split("--")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"not a hub folder name ORG--NAME[--REV]: {folder!r}")
    prefix = SCHEME + (DATASET_PREFIX if dataset else "")
    return f"{prefix}{parts[0]}/{parts[1]}" + (f"@{parts[2]}" if len(parts) == 3 else "")


def download(
    spec: str,
    out_dir: str | os.PathLike,
    snapshot_download: Callable[..., str] | None = None,
    *,
    allow_patterns: Sequence[str] | None = None,
) -> Path:
    """Download the files of ``spec`` (a model or a dataset) into ``out_dir`` atomically.

    A model gets its weights, config and tokenizer files; a dataset gets its data files
    (:data:`DATASET_ALLOW_PATTERNS`), or only those matching ``allow_patterns`` when given
    (e.g. ``["data/train_prefs-*"]``). ``snapshot_download`` defaults to
    ``huggingface_hub.snapshot_download`` (tests pass a fake).
    """
    from .io import atomic_path  # here: the Snakefile imports this module without pandas

    if snapshot_download is None:
        from huggingface_hub import snapshot_download
    repo_id, revision = parse(spec)
    dataset = is_dataset(spec)
    if allow_patterns is None:
        allow_patterns = DATASET_ALLOW_PATTERNS if dataset else ALLOW_PATTERNS
    allow_patterns = list(allow_patterns)
    if not allow_patterns:
        raise ValueError(f"{spec}: allow_patterns is empty; nothing would be downloaded")
    with atomic_path(out_dir, is_dir=True) as tmp:
        snapshot_download(
            repo_id=repo_id,
            revision=revision,
            local_dir=str(tmp),
            repo_type="dataset" if dataset else "model",
            allow_patterns=allow_patterns,
        )
        if dataset:
            if not any(
                p.is_file() and not p.name.startswith(".") and ".cache" not in p.parts
                for p in tmp.rglob("*")
            ):
                raise FileNotFoundError(
                    f"{spec}: the download has no file matching {allow_patterns}"
                )
        elif not (tmp / "config.json").is_file():
            raise FileNotFoundError(f"{spec}: the download has no config.json; not a model repo?")
    return Path(out_dir)
