"""Shared fixtures: a tiny toy model and the tiny paper backbones built once per test session
(no downloads), and a way to undo what a rule script does to logging."""

from __future__ import annotations

import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(items):
    """The modules marked e2e first, longest first, each module's tests in their order: `make
    test`'s xdist workers take whole modules in this order (--dist loadfile
    --no-loadscope-reorder), so the whole-workflow runs start at once and the short modules fill
    in around them instead of one long run finishing last."""

    def seconds(item) -> float:
        mark = item.get_closest_marker("e2e")
        return mark.kwargs["seconds"] if mark else 0

    items.sort(key=lambda item: -seconds(item))


@pytest.fixture(scope="session")
def world():
    from dicewf import toyworld

    spec = toyworld.WorldSpec(seed=3, n_train_prompts=60, n_eval_prompts=20, n_agreement_pairs=30)
    return spec, toyworld.build_world(spec)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, world):
    """A randomly initialised 2-layer Llama with the toy tokenizer, saved like a hub model."""
    from dicewf import toymodel, toyworld

    _spec, data = world
    root = tmp_path_factory.mktemp("tiny")
    tasks = list(toyworld.tasks_from_frame(data["train_prompts"]).values())
    toymodel.train_tokenizer(toyworld.corpus(tasks, 0), 320, root / "tok")
    toymodel.init_model(
        root / "tok",
        root / "model",
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=1,
        intermediate_size=128,
        max_position_embeddings=128,
        seed=0,
    )
    return root / "model"


class _MiniModels(dict):
    """{(backbone, role): folder}, each model built on first use (a SeRA test needs zephyr's
    alone), under a file lock: the first of pytest-xdist's workers to ask builds it into the
    folder they share, the others wait for it and read it."""

    def __init__(self, root):
        super().__init__()
        self.root = root

    def __missing__(self, key):
        from dicewf import miniworld
        from filelock import FileLock

        backbone, role = key
        path = self.root / f"{backbone}-{role}"
        with FileLock(f"{path}.lock"):
            if not path.is_dir():  # build_model writes the folder atomically
                miniworld.build_model(backbone, path, role=role, seed=0)
        self[key] = path
        return path


@pytest.fixture(scope="session")
def mini_models(tmp_path_factory, worker_id):
    """{(backbone, role): folder}: the tiny zephyr and Llama-3 models with the real tokenizers
    (dicewf.miniworld), both roles, seed 0, each built once per test run when first asked for
    (about 10 s each here). Under pytest-xdist the workers share one folder in this run's base
    temporary directory (pytest-xdist's recipe for a session fixture run once), so that
    test_miniworld, test_paper_mini and test_sera_paper_mini on two workers build each model
    once, not once a worker."""
    if worker_id == "master":  # one process
        return _MiniModels(tmp_path_factory.mktemp("mini"))
    shared = tmp_path_factory.getbasetemp().parent / "mini"
    shared.mkdir(exist_ok=True)
    return _MiniModels(shared)


@pytest.fixture(scope="session", autouse=True)
def no_slurm_controller(tmp_path_factory):
    """A test double for Slurm's `scontrol`, "no Slurm controller here", first on PATH for every
    test: the folder holding it. Whenever Snakemake starts, the Slurm executor plugin runs
    `scontrol show config` (for its options' help); where Slurm is installed but its daemons are
    down (CI, outside tests/test_slurm.py) that call waits 9 s before it fails, in every dry run
    and every workflow a test starts. tests/test_slurm.py, which starts a real controller, takes
    the double off PATH for its module."""
    folder = tmp_path_factory.mktemp("no-slurm")
    double = folder / "scontrol"
    double.write_text("#!/bin/sh\n# test double: no Slurm controller\nexit 1\n")
    double.chmod(0o755)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
        yield folder


@pytest.fixture(autouse=True)
def _undo_deterministic_algorithms():
    """dicewf.jobs.deterministic(), which the training entry points call, sets two process-wide
    flags of torch and an environment variable: all are undone after each test."""
    workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    yield
    torch = sys.modules.get("torch")
    if torch is not None and torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(False)
    if torch is not None:
        torch.utils.deterministic.fill_uninitialized_memory = True  # torch's default
    if workspace is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = workspace


@pytest.fixture
def restore_logging():
    """Rule scripts send stdout, stderr and logging to their log file; undo that afterwards."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stdout, stderr = sys.stdout, sys.stderr
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level
    sys.stdout, sys.stderr = stdout, stderr


def assert_same_run(reference: dict, resumed: dict, a_dir, b_dir, output: str) -> None:
    """A resumed training run logged the same metrics (timings aside) and wrote the same weights
    as an uninterrupted one; ``a_dir``/``b_dir`` hold ``output``/model.safetensors and
    metrics.json, and nothing else (the checkpoints are gone)."""
    import math

    import torch
    from safetensors.torch import load_file

    timing = {"train_runtime", "train_samples_per_second", "train_steps_per_second"}
    assert len(resumed["log_history"]) == len(reference["log_history"])
    for a, b in zip(reference["log_history"], resumed["log_history"], strict=True):
        assert a.keys() == b.keys()
        for k in a.keys() - timing:
            assert math.isclose(a[k], b[k], rel_tol=1e-6, abs_tol=1e-9), (a["step"], k)
    wa = load_file(a_dir / output / "model.safetensors")
    wb = load_file(b_dir / output / "model.safetensors")
    assert all(torch.allclose(wa[n], wb[n], rtol=1e-6, atol=1e-8) for n in wa)
    assert sorted(p.name for p in b_dir.iterdir()) == ["metrics.json", output]
