"""Start-up checks (dicewf.checks, issue 12 faults 7, 12 and 13): what can be known wrong when the
DAG is built is refused then, naming the key path; clear messages for the unclear cases."""

from __future__ import annotations

import errno
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from dicewf import checks
from dicewf.io import atomic_path

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / ".test" / "config.yaml"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def resolved(path: Path) -> dict:
    """A config file as the workflow sees it: validated, the schema's defaults filled in."""
    from snakemake.utils import validate

    config = yaml.safe_load(path.read_text())
    validate(config, str(SCHEMA))
    return config


@pytest.fixture
def config() -> dict:
    return resolved(TEST_CONFIG)


def refused(fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as e:
        fn(*args, **kwargs)
    return str(e.value)


# --- fault 7: max_steps ------------------------------------------------------------------------


def schema_errors(instance: dict) -> list[str]:
    schema = yaml.safe_load(SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [".".join(map(str, e.absolute_path)) for e in validator.iter_errors(instance)]


@pytest.mark.parametrize("steps", [-5, 0])
def test_a_max_steps_that_trl_would_ignore_is_refused_naming_its_path(config, steps):
    config["defaults"]["train"]["max_steps"] = steps
    config["experiments"]["dice"]["train"] = {"max_steps": steps}
    config["agreement"]["reward_model"]["max_steps"] = steps
    assert sorted(schema_errors(config)) == [
        "agreement.reward_model.max_steps",
        "defaults.train.max_steps",
        "experiments.dice.train.max_steps",
    ]
    for block in (
        config["defaults"]["train"],
        config["experiments"]["dice"]["train"],
        config["agreement"]["reward_model"],
    ):
        block["max_steps"] = -1  # TRL's "unset" (config/paper.yaml's IntlRM): epochs decide
    assert schema_errors(config) == []


# --- fault 12: alpha bounds, n, greedy decoding ------------------------------------------------


def test_shipped_configs_pass_every_check_but_trls():
    for path in (REPO / "config.yaml", TEST_CONFIG, REPO / "config" / "paper.yaml"):
        checks.check_config(resolved(path), trl=False)


def test_reversed_alpha_bounds_are_named_where_they_are_set(config):
    config["defaults"]["alpha"]["bounds"] = [0.25, 0.0]
    message = refused(checks.experiment_blocks, config)
    assert message.startswith("defaults.alpha.bounds: [0.25, 0.0] is reversed")
    assert "experiment dice" in message
    config["defaults"]["alpha"]["bounds"] = [0.0, 0.25]
    config["experiments"]["judge"]["alpha"]["bounds"] = [0.3, 0.1]
    assert refused(checks.experiment_blocks, config).startswith("experiments.judge.alpha.bounds")


def test_one_response_per_prompt_is_refused_where_pairs_come_from_the_samples(config):
    config["experiments"]["dice"]["sampling"] = {"n": 1}
    message = refused(checks.experiment_blocks, config)
    assert message.startswith("experiments.dice.sampling.n: 1 response per prompt")
    assert "implicit rewards" in message and "n >= 2" in message


def test_one_response_is_fine_where_nothing_is_sampled(config):
    config["experiments"]["offline_dpo"]["sampling"] = {"n": 1}  # mix.gamma 1: offline pairs
    checks.experiment_blocks(config)


def test_a_mix_gamma_set_nowhere_is_named_not_taken_as_zero(config):
    del config["defaults"]["mix"]["gamma"]  # set in .test's defaults and a few experiments
    message = refused(checks.experiment_blocks, config)
    assert message.startswith("experiment dice: mix.gamma") and "is not set" in message


def test_greedy_decoding_with_several_responses_is_refused(config):
    config["defaults"]["sampling"]["temperature"] = 0
    message = refused(checks.experiment_blocks, config)
    assert message.startswith("defaults.sampling.temperature: 0 (greedy decoding)")
    assert "equal" in message
    config["defaults"]["sampling"]["temperature"] = 1.0
    config["defaults"]["score"]["judge"]["sampling"]["temperature"] = 0.0
    assert refused(checks.experiment_blocks, config).startswith(
        "defaults.score.judge.sampling.temperature: 0"
    )
    config["defaults"]["score"]["judge"]["sampling"]["n"] = 1  # one greedy rating: fine
    checks.experiment_blocks(config)


def test_a_settings_defaults_are_named_as_the_origin():
    paper = resolved(REPO / "config" / "paper.yaml")
    paper["settings"]["zephyr"].setdefault("defaults", {})["alpha"] = {"bounds": [1.0, 0.0]}
    assert refused(checks.experiment_blocks, paper).startswith(
        "settings.zephyr.defaults.alpha.bounds: [1.0, 0.0] is reversed"
    )


# --- fault 12: TRL's own config classes ---------------------------------------------------------


@pytest.mark.parametrize(
    "change, named",
    [
        (
            {"save_steps": 7, "logging_steps": 5},
            "defaults.train.save_steps: save_steps (7) must be a multiple of logging_steps (5)",
        ),
        ({"loss_type": "sigmod"}, "defaults.train.loss_type: unknown DPO loss type(s) ['sigmod']"),
        (
            {"learning_rat": 1e-4},
            "defaults.train.learning_rat: DPOConfig.__init__() got an "
            "unexpected keyword argument 'learning_rat'",
        ),
        ({"lr_scheduler_type": "cosin"}, "defaults.train.lr_scheduler_type: cosin is not a valid"),
    ],
)
def test_trl_refuses_a_bad_train_block_at_start_up_naming_the_key(config, change, named):
    # DICE's blocks only: a SeRA block looks up its beta by loss type first (test_sera_workflow)
    config["experiments"] = {
        name: block
        for name, block in config["experiments"].items()
        if block.get("method", "dice") == "dice"
    }
    config["defaults"]["train"].update(change)
    message = refused(checks.train_blocks, config, cache=False)
    assert message.startswith(named), message
    assert "(experiment dice)" in message


def test_a_kto_block_is_built_as_a_kto_config(config):
    config["experiments"]["dice_kto"]["train"] = {"loss_type": "sigmoid"}
    message = refused(checks.train_blocks, config, cache=False)
    assert message.startswith(
        "experiments.dice_kto.train.loss_type: trainer='kto' takes a KTOConfig loss_type"
    ), message


def test_the_toy_and_reward_model_blocks_are_checked_too(config):
    config["agreement"]["reward_model"]["warmup_step"] = 5
    assert refused(checks.train_blocks, config, cache=False).startswith(
        "agreement.reward_model.warmup_step: RewardConfig"
    )
    del config["agreement"]["reward_model"]["warmup_step"]
    config["sft"]["learning_rat"] = 1.0
    assert refused(checks.train_blocks, config, cache=False).startswith(
        "sft.learning_rat: SFTConfig"
    )


def test_each_distinct_block_is_built_once_and_a_passed_one_is_remembered(
    config, monkeypatch, tmp_path
):
    built = []
    monkeypatch.setattr(checks, "trl_config", lambda kind, args, **kw: built.append(kind))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    checks.train_blocks(config)
    # ten experiments with six distinct (trainer, train, length_penalty) blocks (DPO, KTO,
    # R-DPO, rDPO's robust loss, SeRA-DPO with its own beta, SeRA-SimPO's CPO), plus
    # start_policy (DPO), sft and the reward model
    assert sorted(built) == ["cpo", *["dpo"] * 5, "kto", "reward", "sft"]
    assert len(list((tmp_path / "dicewf" / "trl-checked").iterdir())) == 9
    built.clear()
    checks.train_blocks(config)
    assert built == []  # remembered: TRL is not imported again
    config["defaults"]["train"]["beta"] = 0.2
    checks.train_blocks(config)
    # the DICE experiments' blocks changed (SeRA's beta is sera.beta's, not train.beta); DICE's
    # DPO block at beta 0.2 is now SeRA-DPO's (sera.beta.sigmoid 0.2), which already passed
    assert sorted(built) == ["dpo", "dpo", "kto"]  # R-DPO's and rDPO's, KTO's


# --- fault 12: report targets ------------------------------------------------------------------


def test_a_report_experiment_that_is_not_configured_is_refused(config):
    config["report"]["experiment"] = "dcie"
    message = refused(checks.report_targets, config)
    assert message.startswith("report.experiment: no experiment 'dcie'") and "dice" in message
    config["report"]["experiment"] = "judge"
    checks.report_targets(config)
    config["agreement"]["experiment"] = "dcie"
    assert refused(checks.report_targets, config).startswith(
        "agreement.experiment: no experiment 'dcie'"
    )


def test_a_report_experiment_of_the_paper_may_be_logical_or_full():
    paper = resolved(REPO / "config" / "paper.yaml")
    for name in ("dice", "zephyr_dice"):
        paper["report"]["experiment"] = name
        checks.report_targets(paper)
    paper["report"]["experiment"] = "llama3_dice"  # another setting than report.setting
    assert "no experiment 'llama3_dice'" in refused(checks.report_targets, paper)


# --- fault 13: clear messages -----------------------------------------------------------------


def test_a_missing_world_block_is_named_with_what_needs_it(config):
    del config["world"]
    message = refused(checks.world_block, config)
    assert message.startswith("world: the toy world's block is missing")
    assert "eval.suite: toy" in message and "base.policy" in message


def write_safetensors(path: Path, n_floats: int = 4) -> None:
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, 4 * n_floats]}}
    ).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * (4 * n_floats))


def model_folder(path: Path) -> Path:
    path.mkdir()
    (path / "config.json").write_text("{}")
    (path / "tokenizer.json").write_text("{}")
    write_safetensors(path / "model.safetensors")
    return path


def test_a_model_folder_is_checked_for_config_weights_and_tokenizer(tmp_path):
    checks.model_dir(model_folder(tmp_path / "ok"), "base.policy")
    (tmp_path / "empty").mkdir()
    message = refused(checks.model_dir, tmp_path / "empty", "base.policy")
    assert message.startswith(f"no model weights/tokenizer in {tmp_path / 'empty'} (base.policy)")
    assert "config.json" in message and "*.safetensors" in message and "tokenizer" in message
    checks.model_dir("HuggingFaceH4/zephyr-7b-beta", "base.policy")  # a hub ID: not local


@pytest.mark.parametrize("cut", [4, 20, 12])  # in the length, in the header, in the tensors
def test_truncated_safetensors_are_named_with_path_and_role(tmp_path, cut):
    folder = model_folder(tmp_path / "m")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:cut] if cut < 20 else data[:-cut])
    message = refused(checks.model_dir, folder, "input policy of rule sample")
    assert message.startswith(f"{weights} (input policy of rule sample): truncated or corrupt")


def test_an_empty_local_base_model_is_refused_at_start_up(config, tmp_path):
    (tmp_path / "empty").mkdir()
    config["base"]["reference"] = str(tmp_path / "empty")
    assert refused(checks.base_models, config).startswith(
        f"no model weights/tokenizer in {tmp_path / 'empty'} (base.reference)"
    )


def test_a_failed_write_names_the_destination(tmp_path):
    out = tmp_path / "results" / "scores.parquet"
    with pytest.raises(OSError) as e, atomic_path(out):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert e.value.errno == errno.ENOSPC and str(out) in str(e.value)
    assert list(out.parent.iterdir()) == []  # the temporary is gone


def test_a_duplicate_yaml_key_is_refused_with_file_and_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("defaults:\n  train:\n    beta: 0.1\n    lr: 1\n    beta: 0.2\n")
    assert refused(checks.load_yaml, path) == (
        f"{path}, line 5: duplicate key 'beta' (first at line 3); YAML keeps only the last "
        "value of a key given twice, so give it once"
    )
    path.write_text("a: &x {b: 1}\nc:\n  <<: *x\n  d: 2\n")  # merge keys are not duplicates
    assert checks.load_yaml(path) == {"a": {"b": 1}, "c": {"b": 1, "d": 2}}


def test_a_yaml_syntax_error_shows_line_and_column(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 0\nsharding:\n  shards: [1\nsampler: {}\n")
    message = refused(checks.load_yaml, path)
    assert message.startswith(f"{path}, line 4, column 8: not valid YAML"), message


# --- at start-up, through Snakemake -------------------------------------------------------------


def test_snakemake_started_by_a_test_finds_the_scontrol_double_first(no_slurm_controller):
    """conftest's double answers Snakemake's Slurm plugin at once (no controller), instead of
    an installed scontrol waiting for a controller that is down."""
    found = subprocess.run(
        ["sh", "-c", "command -v scontrol"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert Path(found) == no_slurm_controller / "scontrol"
    assert subprocess.run([found, "show", "config"], capture_output=True).returncode == 1


def dry_run(workdir: Path, *configfiles: Path) -> subprocess.CompletedProcess:
    args = ["--configfile", *map(str, configfiles)] if configfiles else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "-q",
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(workdir),
            *args,
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, named",
    [
        ({"defaults": {"train": {"max_steps": -5}}}, "['defaults']['train']['max_steps']"),
        (
            {"defaults": {"alpha": {"bounds": [0.25, 0.0]}}},
            "defaults.alpha.bounds: [0.25, 0.0] is reversed",
        ),
        (
            {"experiments": {"dice": {"train": {"learning_rat": 1.0}}}},
            "experiments.dice.train.learning_rat: DPOConfig.__init__() got an unexpected keyword",
        ),
    ],
)
def test_the_dry_run_refuses_a_bad_config_naming_the_key_path(tmp_path, override, named):
    (tmp_path / "override.yaml").write_text(yaml.safe_dump(override))
    proc = dry_run(tmp_path, TEST_CONFIG, tmp_path / "override.yaml")
    assert proc.returncode != 0
    assert named in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]


@pytest.mark.slow
def test_the_dry_run_names_a_missing_world_block(tmp_path):
    cfg = resolved(TEST_CONFIG)
    del cfg["world"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = dry_run(tmp_path)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "world: the toy world's block is missing" in out, out[-3000:]
    assert "KeyError" not in out


@pytest.mark.slow
def test_the_dry_run_refuses_a_duplicate_key_and_shows_a_syntax_errors_line(tmp_path):
    text = TEST_CONFIG.read_text()
    (tmp_path / "dup.yaml").write_text("seed: 0\nseed: 1\n")
    proc = dry_run(tmp_path, TEST_CONFIG, tmp_path / "dup.yaml")
    assert proc.returncode != 0
    assert "dup.yaml, line 2: duplicate key 'seed' (first at line 1)" in proc.stdout + proc.stderr
    # the default config.yaml (read by the Snakefile's configfile:) with a syntax error
    (tmp_path / "config.yaml").write_text(text.replace("  shards: 1\n", "  shards: [1\n"))
    proc = dry_run(tmp_path)
    line = text[: text.index("  shards: 1\n")].count("\n") + 1
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "config.yaml, line " in out and "not valid YAML" in out
    assert f"at line {line}, column 11" in out, out[-3000:]


def test_the_training_entry_point_names_an_empty_model_folder(tmp_path, restore_logging):
    sys.path.insert(0, str(REPO / "workflow" / "scripts"))
    import train_launch

    (tmp_path / "empty").mkdir()
    argv = [
        "--model",
        str(tmp_path / "empty"),
        "--pairs",
        str(tmp_path / "pairs.parquet"),
        "--out",
        str(tmp_path / "policy"),
        "--seed",
        "0",
    ]
    assert refused(train_launch.main, argv).startswith(
        f"no model weights/tokenizer in {tmp_path / 'empty'} (--model of train_launch.py)"
    )
    assert not (tmp_path / "policy").exists()
