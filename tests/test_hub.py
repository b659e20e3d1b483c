"""Hub models and datasets in config: the URI scheme, the local folder, and the download rules'
function."""

import os
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest
from dicewf import config as cfg
from dicewf import hub


def test_uri_round_trips_through_the_local_folder_name():
    for spec in (
        "hf://HuggingFaceH4/zephyr-7b-beta",
        "hf://princeton-nlp/Llama-3-Base-8B-SFT",
        "hf://org/name@v1.0",
    ):
        folder = hub.local_dir(spec)
        assert folder.startswith("resources/hub/")
        assert hub.spec_of(Path(folder).name) == spec
    assert hub.parse("hf://org/name@abc") == ("org/name", "abc")
    assert hub.local_dir("results/toy/models/sft") == "results/toy/models/sft"
    for bad in ("hf://only-org", "hf://a/b/c", "hf://org/na me"):
        with pytest.raises(ValueError, match="hf://ORG/NAME"):
            hub.parse(bad)


def test_policy_paths_map_hub_models_to_their_download_folder():
    config = {
        "base": {
            "policy": "hf://HuggingFaceH4/zephyr-7b-beta",
            "reference": "hf://HuggingFaceH4/mistral-7b-sft-beta",
        },
        "defaults": {"iterations": 1, "reference": "previous"},
        "experiments": {"dice": {}},
    }
    assert cfg.policy_path(config, "dice", 0) == "resources/hub/HuggingFaceH4--zephyr-7b-beta"
    assert (
        cfg.reference_path(config, "dice", 0) == "resources/hub/HuggingFaceH4--mistral-7b-sft-beta"
    )
    assert cfg.reference_path(config, "dice", 1) == "resources/hub/HuggingFaceH4--zephyr-7b-beta"
    assert cfg.model_policy(config, "base") == "resources/hub/HuggingFaceH4--zephyr-7b-beta"


class FakeSnapshotDownload:
    """Test double for huggingface_hub.snapshot_download: writes the repository's files that
    match allow_patterns (fnmatch on the path, as the hub client filters), records the call."""

    def __init__(self, files):
        self.files, self.calls = files, []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        for name in self.files:
            if any(fnmatch(name, pattern) for pattern in kwargs["allow_patterns"]):
                path = Path(kwargs["local_dir"]) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("{}")
        return kwargs["local_dir"]


def test_download_is_atomic_and_asks_only_for_model_files(tmp_path):
    fake = FakeSnapshotDownload(["config.json", "model.safetensors", "tokenizer.json"])
    out = tmp_path / "HuggingFaceH4--zephyr-7b-beta"
    hub.download("hf://HuggingFaceH4/zephyr-7b-beta@main", out, snapshot_download=fake)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    (call,) = fake.calls
    assert call["repo_id"] == "HuggingFaceH4/zephyr-7b-beta" and call["revision"] == "main"
    assert "*.safetensors" in call["allow_patterns"] and "*.bin" not in call["allow_patterns"]
    broken = FakeSnapshotDownload(["README.md"])
    with pytest.raises(FileNotFoundError, match="config.json"):
        hub.download("hf://org/dataset-not-model", tmp_path / "org--x", snapshot_download=broken)
    assert not (tmp_path / "org--x").exists()
    assert not list(tmp_path.glob(".*tmp-*"))


DATASETS = (
    "hf://datasets/HuggingFaceH4/ultrafeedback_binarized",
    "hf://datasets/tatsu-lab/alpaca_eval",
    "hf://datasets/lmarena-ai/arena-hard-auto@v1.0",
)


def test_dataset_uris_land_under_resources_hub_datasets_and_round_trip():
    assert hub.is_dataset(DATASETS[0]) and not hub.is_dataset("hf://HuggingFaceH4/zephyr-7b-beta")
    assert (
        hub.local_dir(DATASETS[0])
        == "resources/hub/datasets/HuggingFaceH4--ultrafeedback_binarized"
    )
    assert hub.local_dir(DATASETS[2]) == "resources/hub/datasets/lmarena-ai--arena-hard-auto--v1.0"
    assert hub.parse(DATASETS[2]) == ("lmarena-ai/arena-hard-auto", "v1.0")
    for spec in DATASETS:
        folder = hub.local_dir(spec)
        assert hub.spec_of(folder) == spec  # the path names the kind
        assert hub.spec_of(Path(folder).name, dataset=True) == spec  # a download rule's wildcard
        assert hub.spec_of(Path(folder).name) == spec.replace("datasets/", "")  # a model's name
    # a model and a dataset of the same name do not share a folder
    assert hub.local_dir("hf://org/name") != hub.local_dir("hf://datasets/org/name")
    for bad in ("hf://datasets/only-org", "hf://datasets/a/b/c", "hf://dataset/a/b/c"):
        with pytest.raises(ValueError, match="hf://datasets/ORG/NAME"):
            hub.parse(bad)
    with pytest.raises(ValueError, match="ORG--NAME"):
        hub.spec_of("resources/hub/datasets/no-separator")


def test_dataset_download_asks_for_a_dataset_repo_and_its_data_files(tmp_path):
    repo = [
        "README.md",
        "alpaca_eval.py",
        "alpaca_eval_gpt4_baseline.json",
        "data/train_prefs-00000-of-00001.parquet",
        "data/arena-hard-v0.1/question.jsonl",
    ]
    fake = FakeSnapshotDownload(repo)
    out = tmp_path / "datasets" / "tatsu-lab--alpaca_eval"
    hub.download("hf://datasets/tatsu-lab/alpaca_eval", out, snapshot_download=fake)
    (call,) = fake.calls
    assert call["repo_type"] == "dataset" and call["repo_id"] == "tatsu-lab/alpaca_eval"
    assert call["revision"] is None
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert got == [
        "README.md",
        "alpaca_eval_gpt4_baseline.json",
        "data/arena-hard-v0.1/question.jsonl",
        "data/train_prefs-00000-of-00001.parquet",
    ]  # no loading script
    # config narrows the files, e.g. to one split of UltraFeedback
    narrow = FakeSnapshotDownload(repo)
    out2 = tmp_path / "datasets" / "HuggingFaceH4--ultrafeedback_binarized"
    hub.download(
        "hf://datasets/HuggingFaceH4/ultrafeedback_binarized",
        out2,
        snapshot_download=narrow,
        allow_patterns=["data/train_prefs-*"],
    )
    assert narrow.calls[0]["allow_patterns"] == ["data/train_prefs-*"]
    assert [p.name for p in out2.rglob("*") if p.is_file()] == [
        "train_prefs-00000-of-00001.parquet"
    ]
    # a model download still asks for a model repo
    model = FakeSnapshotDownload(["config.json"])
    hub.download("hf://org/model", tmp_path / "org--model", snapshot_download=model)
    assert model.calls[0]["repo_type"] == "model"


def test_dataset_download_with_no_matching_file_fails_and_leaves_nothing(tmp_path):
    fake = FakeSnapshotDownload(["README.md", "loader.py"])
    with pytest.raises(FileNotFoundError, match=r"data/test-\*"):
        hub.download(
            "hf://datasets/org/name",
            tmp_path / "org--name",
            snapshot_download=fake,
            allow_patterns=["data/test-*"],
        )
    assert not (tmp_path / "org--name").exists()
    assert not list(tmp_path.glob(".*tmp-*"))
    with pytest.raises(ValueError, match="allow_patterns is empty"):
        hub.download(
            "hf://datasets/org/name", tmp_path / "x", snapshot_download=fake, allow_patterns=[]
        )


def test_download_through_huggingface_hub_from_a_local_hub(tmp_path):
    """hub.download with huggingface_hub's own snapshot_download, against FakeHub (a test double
    of the hub's HTTP API serving local folders): a model's weights, config and tokenizer but not
    its other files, a dataset's allow_patterns only, every file as served."""
    from fake_hub import FakeHub  # tests/, a test double

    model, data = tmp_path / "src" / "model", tmp_path / "src" / "data"
    files = {
        model: {
            "config.json": "{}",
            "model.safetensors": "weights",
            "tokenizer_config.json": "{}",
            "chat_template.jinja": "t",
            "README.md": "card",
            "pytorch_model.bin": "old weights",
            "optimizer.pt": "state",
        },
        data: {
            "data/train_prefs-00000-of-00001.parquet": "a",
            "data/test_prefs-00000-of-00001.parquet": "b",
            "README.md": "card",
        },
    }
    for root, contents in files.items():
        for name, text in contents.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
    out = tmp_path / "out"
    script = (
        "from dicewf import hub\n"
        f"hub.download('hf://org/model', {str(out / 'model')!r})\n"
        f"hub.download('hf://datasets/org/data', {str(out / 'data')!r},"
        " allow_patterns=['data/train_prefs-*'])\n"
    )
    with FakeHub({"org/model": model, "datasets/org/data": data}) as fake:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "0",
            "HF_ENDPOINT": fake.endpoint,
            "HF_HOME": str(tmp_path / "hf_home"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1",
            "no_proxy": "127.0.0.1",
            "PYTHONPATH": str(Path(hub.__file__).parents[1]),
        }
        proc = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
        )
    assert proc.returncode == 0, proc.stderr

    def got(folder):
        return {
            p.relative_to(folder).as_posix(): p.read_text()
            for p in folder.rglob("*")
            if p.is_file() and ".cache" not in p.relative_to(folder).parts
        }

    assert got(out / "model") == {
        name: text
        for name, text in files[model].items()
        if name not in ("README.md", "pytorch_model.bin", "optimizer.pt")
    }
    assert got(out / "data") == {"data/train_prefs-00000-of-00001.parquet": "a"}
    assert {r["method"] for r in fake.requests} >= {"GET", "HEAD"}
