"""Shared fixtures: a tiny toy model built once per test session (no downloads), and a way
to undo what a rule script does to logging."""

from __future__ import annotations

import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def world():
    from dicewf import toyworld

    spec = toyworld.WorldSpec(seed=3, n_train_prompts=60, n_eval_prompts=20, n_agreement_pairs=30)
    return spec, toyworld.build_world(spec)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, world):
    """A randomly initialised 2-layer Llama with the toy tokenizer, saved like a hub model."""
    from dicewf import toymodel, toyworld

    spec, data = world
    root = tmp_path_factory.mktemp("tiny")
    tasks = list(toyworld.tasks_from_frame(data["train_prompts"]).values())
    toymodel.train_tokenizer(toyworld.corpus(tasks, 0), 320, root / "tok")
    toymodel.init_model(root / "tok", root / "model", hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=1, intermediate_size=128,
                        max_position_embeddings=128, seed=0)
    return root / "model"


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
