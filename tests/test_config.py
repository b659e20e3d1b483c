"""Tests for dicewf.config (experiments and DAG paths) and the config schema."""

from __future__ import annotations

import ast
import copy
import dataclasses
import importlib.util
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from dicewf import config as cfg
from dicewf.batching import GLOBAL_BATCH_KEY
from dicewf.sampling import SamplingSpec

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config.yaml"
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"

BASE = {"policy": "hub/start-policy", "reference": "hub/sft"}


def small_config() -> dict:
    return {
        "base": dict(BASE),
        "defaults": {
            "iterations": 2,
            "reference": "previous",  # the schema's default (validation fills it in)
            "sampling": {"n": 8, "temperature": 1.0},
            "alpha": {"method": "exact", "bounds": [0.0, 0.1]},
            "train": {"beta": 0.1, "learning_rate": 5e-5},
        },
        "experiments": {
            "dice": {},
            "dice_long": {"iterations": 3, "train": {"learning_rate": 1e-6}},
        },
    }


# --- deep_merge --------------------------------------------------------------------------------


def test_deep_merge_merges_nested_mappings():
    base = {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "b": 1}
    override = {"a": {"y": {"q": 3}, "z": 4}}
    assert cfg.deep_merge(base, override) == {"a": {"x": 1, "y": {"p": 1, "q": 3}, "z": 4}, "b": 1}


def test_deep_merge_replaces_scalars_lists_and_mismatched_types():
    base = {"bounds": [0.0, 0.1, 0.2], "method": "exact", "fixed": {"a": 1}, "n": {"k": 1}}
    override = {"bounds": [0.5], "method": "gp", "fixed": None, "n": 3}
    assert cfg.deep_merge(base, override) == {
        "bounds": [0.5],
        "method": "gp",
        "fixed": None,
        "n": 3,
    }


def test_deep_merge_does_not_mutate_or_alias_its_inputs():
    base = {"alpha": {"bounds": [0.0, 0.1]}, "train": {"beta": 0.1}}
    override = {"train": {"beta": 0.2, "extra": [1, 2]}}
    base_before, override_before = copy.deepcopy(base), copy.deepcopy(override)
    out = cfg.deep_merge(base, override)
    assert base == base_before and override == override_before
    out["alpha"]["bounds"].append(9.0)
    out["train"]["extra"].append(3)
    assert base == base_before and override == override_before


# --- experiments -------------------------------------------------------------------------------


def test_experiment_is_merged_over_defaults():
    config = small_config()
    long = cfg.experiment(config, "dice_long")
    assert long["iterations"] == 3
    assert long["train"] == {"beta": 0.1, "learning_rate": 1e-6}
    assert long["alpha"] == {"method": "exact", "bounds": [0.0, 0.1]}
    assert cfg.experiment(config, "dice") == config["defaults"]


def test_unknown_experiment_is_a_key_error_naming_it():
    with pytest.raises(KeyError, match="'dise'"):
        cfg.experiment(small_config(), "dise")


def test_unknown_key_in_an_experiment_is_a_key_error_naming_it():
    config = small_config()
    config["experiments"]["dice"] = {"iteratons": 3}
    with pytest.raises(KeyError) as err:
        cfg.experiment(config, "dice")
    assert "iteratons" in str(err.value) and "experiments.dice" in str(err.value)


def test_iterations_lists_every_experiment_and_iteration_from_one():
    assert cfg.iterations(small_config()) == [
        ("dice", 1),
        ("dice", 2),
        ("dice_long", 1),
        ("dice_long", 2),
        ("dice_long", 3),
    ]


# --- DAG paths (Algorithm 1) -------------------------------------------------------------------


def test_policy_paths():
    config = small_config()
    assert cfg.policy_path(config, "dice", 0) == BASE["policy"]
    assert cfg.policy_path(config, "dice", 1) == "results/dice/iter1/policy"
    assert cfg.policy_path(config, "dice", "2") == "results/dice/iter2/policy"
    with pytest.raises(ValueError, match="-1"):
        cfg.policy_path(config, "dice", -1)


def test_reference_of_t_is_the_policy_of_t_minus_one():
    config = small_config()
    assert cfg.reference_path(config, "dice", 0) == BASE["reference"]
    assert cfg.reference_path(config, "dice", 1) == BASE["policy"]
    assert cfg.reference_path(config, "dice", 2) == "results/dice/iter1/policy"
    for t in (1, 2, 3):
        assert cfg.reference_path(config, "dice", t) == cfg.policy_path(config, "dice", t - 1)


def test_model_names_and_their_policies():
    config = small_config()
    names = cfg.model_names(config)
    assert names == [
        "base",
        "dice-iter1",
        "dice-iter2",
        "dice_long-iter1",
        "dice_long-iter2",
        "dice_long-iter3",
    ]
    assert cfg.model_policy(config, "base") == BASE["policy"]
    assert cfg.model_policy(config, "dice-iter2") == "results/dice/iter2/policy"
    assert cfg.model_policy(config, "dice_long-iter3") == "results/dice_long/iter3/policy"


@pytest.mark.parametrize("bad", ["dice", "dice-iter", "dice-iterX", "Base", ""])
def test_model_policy_rejects_a_bad_name(bad):
    with pytest.raises(ValueError) as err:
        cfg.model_policy(small_config(), bad)
    assert repr(bad) in str(err.value)


def test_alternation_matches_exactly_the_names():
    names = ["dice", "dice2", "dice_long", "a.b"]
    pattern = cfg.alternation(names)
    for name in names:
        assert re.fullmatch(pattern, name), name
    for other in ["dic", "dice22", "dice_", "dice2x", "axb", "dice/iter1", "", "xdice"]:
        assert not re.fullmatch(pattern, other), other


def test_alternation_inside_a_wildcard_group_prefers_the_longer_name():
    # Snakemake embeds the constraint as (?P<exp>...) in the output pattern; an unanchored match
    # must take the whole longer name, not its prefix.
    pattern = f"results/(?P<exp>{cfg.alternation(['dice', 'dice2'])})/iter(?P<t>\\d+)"
    for exp in ("dice", "dice2"):
        m = re.fullmatch(pattern, f"results/{exp}/iter1")
        assert m and m["exp"] == exp
    assert re.search(f"(?P<exp>{cfg.alternation(['dice', 'dice2'])})", "dice2")["exp"] == "dice2"


def test_alternation_of_nothing_matches_nothing():
    pattern = cfg.alternation([])
    for text in ["", "dice", "(?!)"]:
        assert not re.fullmatch(pattern, text)


def test_a_configurations_own_folders_carry_its_name():
    assert cfg.own_dir({}) == "results"
    assert cfg.own_dir({}, "logs") == "logs"
    assert cfg.own_dir({"name": "paper"}) == "results/paper"
    assert cfg.own_dir({"name": "paper"}, "logs") == "logs/paper"
    assert cfg.own_dir({"name": "paper"}, "results/benchmarks") == "results/benchmarks/paper"


def test_the_schema_takes_a_name_that_is_one_folder(schema, config):
    for name in ("paper", "paper-mini", "llama3_8b"):
        assert schema_errors(schema, {**config, "name": name}) == []
    for name in ("", "a/b", "../x", "Paper", "-x"):
        assert schema_errors(schema, {**config, "name": name}) == [
            f"name: {name!r} does not match '^[a-z0-9][a-z0-9_-]*$'"
        ]


# --- the schema --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


@pytest.fixture(scope="module")
def schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


def schema_errors(schema: dict, instance: dict) -> list[str]:
    """Every validation error as 'path: message' (the path is where the bad value sits)."""
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema)
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


def test_schema_is_a_valid_draft_2020_12_schema(schema):
    validator_cls = jsonschema.validators.validator_for(schema)
    assert validator_cls is jsonschema.Draft202012Validator
    validator_cls.check_schema(schema)


def test_shipped_config_is_valid(config, schema):
    assert schema_errors(schema, config) == []


def mutated(config: dict, change) -> dict:
    out = copy.deepcopy(config)
    change(out)
    return out


def rename_top_level(c):
    c["experiment"] = c.pop("experiments")


def rename_alpha_method(c):
    c["defaults"]["alpha"]["methd"] = c["defaults"]["alpha"].pop("method")


def random_alpha_method(c):
    c["defaults"]["alpha"]["method"] = "random"


def gamma_above_one(c):
    c["defaults"]["mix"]["gamma"] = 1.5


def misspelled_eval_temperature(c):
    c["eval"]["sampling"]["temprature"] = c["eval"]["sampling"].pop("temperature")


@pytest.mark.parametrize(
    "change, named",
    [
        (rename_top_level, "'experiment'"),
        (rename_alpha_method, "'methd'"),
        (random_alpha_method, "'random'"),
        (gamma_above_one, "1.5"),
        (misspelled_eval_temperature, "'temprature'"),
    ],
)
def test_schema_rejects_a_bad_config_naming_the_offender(config, schema, change, named):
    errors = schema_errors(schema, mutated(config, change))
    assert errors, "the mutated config should be invalid"
    assert any(named in e for e in errors), errors
    best = jsonschema.exceptions.best_match(
        jsonschema.validators.validator_for(schema)(schema).iter_errors(mutated(config, change))
    )
    assert named in str(best)


def test_schema_errors_point_at_the_bad_value(config, schema):
    assert any(
        e.startswith("defaults.mix.gamma:")
        for e in schema_errors(schema, mutated(config, gamma_above_one))
    )
    assert any(
        e.startswith("defaults.alpha.method:")
        for e in schema_errors(schema, mutated(config, random_alpha_method))
    )


@pytest.mark.parametrize(
    "change, named",
    [(rename_top_level, "'experiment' was unexpected"), (gamma_above_one, "1.5")],
)
def test_snakemake_validate_names_the_offender(config, change, named):
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    bad = mutated(config, change)
    with pytest.raises(WorkflowError) as err:
        validate(bad, str(SCHEMA))
    assert named in str(err.value)
    if change is gamma_above_one:
        assert "['defaults']['mix']['gamma']" in str(err.value)


def test_snakemake_validate_accepts_the_shipped_config(config):
    from snakemake.utils import validate

    validate(copy.deepcopy(config), str(SCHEMA))


# --- config keys are the libraries' own field names --------------------------------------------


def field_names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_training_keys_are_trl_fields(config):
    from trl import DPOConfig, KTOConfig, SFTConfig
    from trl.experimental.cpo import CPOConfig

    dpo, sft = field_names(DPOConfig), field_names(SFTConfig)
    # an experiment's train block holds its trainer's config fields (the default trainer: dpo)
    by_trainer = {"dpo": dpo, "kto": field_names(KTOConfig), "cpo": field_names(CPOConfig)}
    blocks = {
        "defaults.train": (config["defaults"].get("train", {}), dpo),
        "start_policy": (config["start_policy"], dpo),
    }
    for name, block in config["experiments"].items():
        fields = by_trainer[(block or {}).get("trainer", "dpo")]
        blocks[f"experiments.{name}.train"] = ((block or {}).get("train", {}), fields)
    ours = {GLOBAL_BATCH_KEY}  # removed before the TRL config is built (dicewf.batching)
    for where, (block, fields) in blocks.items():
        assert set(block) - ours <= fields, (
            f"{where}: not fields of its trainer's config: {sorted(set(block) - ours - fields)}"
        )
    assert "simpo_gamma" in blocks["experiments.sera_simpo.train"][0]
    assert config["defaults"]["train"] and config["start_policy"]
    assert set(config["sft"]) - ours <= sft, sorted(set(config["sft"]) - ours - sft)
    assert config["sft"]


def vllm_sampling_fields() -> set[str] | None:
    """Field names of vLLM's ``SamplingParams`` (a msgspec Struct), or None without vllm.

    ``import vllm`` pulls in torch and vLLM's engine config (about 8 s here), more than this file
    may take, so the Struct's fields are read from the class body in vllm/sampling_params.py: the
    annotated, non-ClassVar names, which are what ``SamplingParams.__struct_fields__`` lists.
    ``find_spec`` of the top-level package locates it without running its ``__init__``.
    """
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return None
    source = Path(next(iter(spec.submodule_search_locations))) / "sampling_params.py"
    tree = ast.parse(source.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SamplingParams")
    assert any("Struct" in ast.unparse(b) for b in cls.bases), "SamplingParams is not a Struct"
    return {
        node.target.id
        for node in cls.body
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and "ClassVar" not in ast.unparse(node.annotation)
    }


def sampling_blocks(config) -> dict[str, dict]:
    blocks = {
        "defaults.sampling": config["defaults"]["sampling"],
        "eval.sampling": config["eval"]["sampling"],
    }
    for name, block in config["experiments"].items():
        if (block or {}).get("sampling"):
            blocks[f"experiments.{name}.sampling"] = block["sampling"]
    return blocks


def test_sampling_keys_are_sampling_spec_fields(config):
    spec = field_names(SamplingSpec)
    for where, block in sampling_blocks(config).items():
        assert block and set(block) <= spec, f"{where}: {sorted(set(block) - spec)}"
        SamplingSpec.from_dict(block)  # and the values are accepted


def test_sampling_keys_are_vllm_sampling_params_fields(config):
    fields = vllm_sampling_fields()
    if fields is None:
        pytest.skip("vllm is not installed")
    # the reader found the real fields, not an empty or unrelated set
    assert {"n", "temperature", "top_p", "max_tokens", "seed"} <= fields
    assert {"temprature", "max_new_tokens"}.isdisjoint(fields)
    for where, block in sampling_blocks(config).items():
        assert set(block) <= fields, f"{where}: {sorted(set(block) - fields)}"
    assert set(field_names(SamplingSpec)) <= fields


def test_iteration_one_samples_are_shared_between_experiments_with_equal_settings():
    base = {"policy": "pi0", "reference": "ref0"}
    defaults = {
        "iterations": 2,
        "reference": "previous",  # the schema's default (validation fills it in)
        "sampling": {"n": 4},
        "score": {"drop_truncated": True},
        "train": {"beta": 0.1},
        "mix": {"gamma": 0.5},
    }
    config = {
        "base": base,
        "defaults": defaults,
        "experiments": {
            "dice": {},
            "gamma0": {"mix": {"gamma": 0.0}},
            "k8": {"sampling": {"n": 8}},
            "beta1": {"train": {"beta": 1.0}},
            "k8_gamma0": {"sampling": {"n": 8}, "mix": {"gamma": 0.0}},
        },
    }
    owner = {e: cfg.sampling_owner(config, e, 1) for e in config["experiments"]}
    assert owner == {
        "dice": "dice",
        "gamma0": "dice",
        "k8": "k8",
        "beta1": "beta1",
        "k8_gamma0": "k8",
    }
    assert all(cfg.sampling_owner(config, e, 2) == e for e in config["experiments"])


def test_a_fixed_reference_stays_the_base_policy_in_every_iteration():
    config = {
        "base": {"policy": "pi0", "reference": "sft"},
        "defaults": {"iterations": 3, "reference": "previous"},
        "experiments": {"dice": {}, "offline": {"reference": "fixed"}},
    }
    assert [cfg.reference_path(config, "dice", t) for t in range(4)] == [
        "sft",
        "pi0",
        "results/dice/iter1/policy",
        "results/dice/iter2/policy",
    ]
    assert [cfg.reference_path(config, "offline", t) for t in range(4)] == [
        "sft",
        "pi0",
        "pi0",
        "pi0",
    ]


# --- settings (the paper's two backbones) --------------------------------------------------------


def two_settings() -> dict:
    return {
        "base": {"prompts": "x.parquet", "offline": "d.parquet"},
        "settings": {
            "zephyr": {
                "label": "zephyr-7B-beta",
                "base": {
                    "policy": "hf://HuggingFaceH4/zephyr-7b-beta",
                    "reference": "hf://HuggingFaceH4/mistral-7b-sft-beta",
                },
                "defaults": {"sampling": {"temperature": 0.7, "top_p": 0.9}, "mix": {"gamma": 0.5}},
            },
            "llama3": {
                "base": {"policy": "llama-dpo", "reference": "llama-sft"},
                "defaults": {"sampling": {"temperature": 0.9}, "mix": {"gamma": 0.1}},
            },
        },
        "defaults": {
            "iterations": 2,
            "reference": "previous",
            "sampling": {"n": 16, "temperature": 1.0, "top_p": 1.0},
            "score": {"method": "implicit"},
            "train": {"beta": 0.01},
            "mix": {"gamma": 0.0},
        },
        "experiments": {
            "dice": {},
            "judge": {"score": {"method": "judge"}},
            "dice_kto": {"settings": ["zephyr"], "iterations": 1, "trainer": "kto"},
            "dice_gamma050": {"settings": ["llama3"], "mix": {"gamma": 0.5}},
        },
    }


def test_every_experiment_runs_in_each_of_its_settings_under_a_prefixed_name():
    config = two_settings()
    assert cfg.settings(config) == ["zephyr", "llama3"]
    assert cfg.expanded(config) == {
        "zephyr_dice": ("zephyr", "dice"),
        "zephyr_judge": ("zephyr", "judge"),
        "zephyr_dice_kto": ("zephyr", "dice_kto"),
        "llama3_dice": ("llama3", "dice"),
        "llama3_judge": ("llama3", "judge"),
        "llama3_dice_gamma050": ("llama3", "dice_gamma050"),
    }
    assert cfg.setting_label(config, "zephyr") == "zephyr-7B-beta"
    assert cfg.setting_label(config, "llama3") == "llama3"


def test_a_setting_merges_its_defaults_between_defaults_and_the_experiment():
    config = two_settings()
    z, l3 = cfg.experiment(config, "zephyr_dice"), cfg.experiment(config, "llama3_dice")
    assert z["sampling"] == {"n": 16, "temperature": 0.7, "top_p": 0.9}
    assert l3["sampling"] == {"n": 16, "temperature": 0.9, "top_p": 1.0}
    assert (z["mix"]["gamma"], l3["mix"]["gamma"]) == (0.5, 0.1)
    # the experiment's own block wins over the setting's defaults
    assert cfg.experiment(config, "llama3_dice_gamma050")["mix"]["gamma"] == 0.5
    assert "settings" not in cfg.experiment(config, "zephyr_dice_kto")


def test_each_setting_starts_from_its_own_base_models():
    config = two_settings()
    assert (
        cfg.policy_path(config, "zephyr_dice", 0) == "resources/hub/HuggingFaceH4--zephyr-7b-beta"
    )
    assert (
        cfg.reference_path(config, "zephyr_dice", 0)
        == "resources/hub/HuggingFaceH4--mistral-7b-sft-beta"
    )
    assert cfg.policy_path(config, "llama3_dice", 0) == "llama-dpo"
    assert cfg.reference_path(config, "llama3_dice", 1) == "llama-dpo"
    assert cfg.policy_path(config, "llama3_dice", 2) == "results/llama3_dice/iter2/policy"
    names = cfg.model_names(config)
    assert names[:2] == ["zephyr_base", "llama3_base"]
    assert "zephyr_dice_kto-iter1" in names and "llama3_dice_kto-iter1" not in names
    assert cfg.model_policy(config, "llama3_base") == "llama-dpo"


def test_iteration_one_is_shared_within_a_setting_only_and_scores_need_equal_scoring():
    owners = cfg.iteration1_owners(two_settings())
    # samples: shared by every experiment of the setting (same sampling settings)
    assert {e: o[0] for e, o in owners.items()} == {
        "zephyr_dice": "zephyr_dice",
        "zephyr_judge": "zephyr_dice",
        "zephyr_dice_kto": "zephyr_dice",
        "llama3_dice": "llama3_dice",
        "llama3_judge": "llama3_dice",
        "llama3_dice_gamma050": "llama3_dice",
    }
    # scores: the LLM-as-a-Judge scores its samples its own way
    assert owners["zephyr_judge"][1] == "zephyr_judge"
    assert owners["zephyr_dice_kto"][1] == "zephyr_dice"
    assert owners["llama3_dice_gamma050"][1] == "llama3_dice"


def test_an_unknown_setting_of_an_experiment_is_named():
    config = two_settings()
    config["experiments"]["dice_kto"]["settings"] = ["zephir"]
    with pytest.raises(KeyError, match="zephir"):
        cfg.expanded(config)
    config = small_config()
    config["experiments"]["dice"] = {"settings": ["zephyr"]}
    with pytest.raises(KeyError, match="experiments.dice.settings"):
        cfg.expanded(config)


def test_the_paper_config_is_valid_and_names_the_papers_models():
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    jsonschema.validate(paper, yaml.safe_load(SCHEMA.read_text()))
    assert cfg.base(paper, "zephyr")["policy"] == "hf://HuggingFaceH4/zephyr-7b-beta"
    assert cfg.base(paper, "zephyr")["reference"] == "hf://HuggingFaceH4/mistral-7b-sft-beta"
    assert cfg.base(paper, "llama3")["policy"] == "hf://princeton-nlp/Llama-3-Base-8B-SFT-DPO"
    assert cfg.base(paper, "llama3")["reference"] == "hf://princeton-nlp/Llama-3-Base-8B-SFT"
    z, l3 = cfg.experiment(paper, "zephyr_dice"), cfg.experiment(paper, "llama3_dice")
    assert (z["sampling"]["temperature"], z["sampling"]["top_p"]) == (0.7, 0.9)
    assert (l3["sampling"]["temperature"], l3["sampling"]["top_p"]) == (0.9, 1.0)
    assert z["sampling"]["n"] == 16 and z["sampling"]["max_tokens"] == 2048
    assert (z["mix"]["gamma"], l3["mix"]["gamma"]) == (0.5, 0.1)
    train = z["train"]
    assert (train["learning_rate"], train["max_steps"], train["warmup_steps"]) == (5e-7, 300, 50)
    assert train["lr_scheduler_type"] == "constant_with_warmup"
    assert z["mix"]["n_pairs"] == 9600
    # beta: the official scripts' 0.1 in every iteration of both backbones; Appendix F's other
    # value, 0.01, in the first iteration of each tuned method
    for run, (setting, name) in cfg.expanded(paper).items():
        if name in paper["eval"]["sera"]["experiments"]:
            continue  # SeRA's runs and baselines: Table 4 of its paper (tests/test_sera_paper.py)
        xp = cfg.experiment(paper, run)
        want = 0.01 if name.endswith("_beta001") else 0.1
        assert xp["train"]["beta"] == want, run
        if name.endswith("_beta001"):
            assert xp["iterations"] == 1
            twin = cfg.experiment(paper, cfg.full_name(setting, name.removesuffix("_beta001")))
            assert {
                k: v for k, v in xp.items() if k not in ("train", "iterations", "description")
            } == {
                k: v for k, v in twin.items() if k not in ("train", "iterations", "description")
            }, run
    assert (
        paper["data"]["ultrafeedback"]["dataset"]
        == "hf://datasets/HuggingFaceH4/ultrafeedback_binarized"
    )
    gammas = {
        s: sorted(
            cfg.experiment(paper, e)["mix"]["gamma"]
            for e, (setting, name) in cfg.expanded(paper).items()
            if setting == s
            and (name in ("dice", "offline_dpo_newref") or re.fullmatch(r"dice_gamma\d+", name))
        )
        for s in ("zephyr", "llama3")
    }
    assert gammas == {
        "zephyr": [0.0, 0.25, 0.5, 0.75, 1.0],
        "llama3": [0.0, 0.1, 0.25, 0.5, 0.75, 1.0],
    }


def test_a_config_merged_from_the_toy_world_and_the_paper_is_refused():
    toy = yaml.safe_load((ROOT / "config.yaml").read_text())
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    cfg.check_standalone(toy)
    cfg.check_standalone(paper)
    with pytest.raises(ValueError, match=r"both `world`.*and `settings`"):
        cfg.check_standalone(cfg.deep_merge(toy, paper))


# --- per-setting evaluation decoding -------------------------------------------------------------


def test_a_model_of_each_setting_gets_its_settings_eval_decoding():
    config = two_settings()
    config["eval"] = {
        "sampling": {"n": 1, "temperature": 0.7, "top_p": 0.9, "max_tokens": 2048, "seed": 0}
    }
    config["settings"]["llama3"]["eval"] = {"sampling": {"temperature": 0.9, "top_p": 1.0}}
    zephyr = {"n": 1, "temperature": 0.7, "top_p": 0.9, "max_tokens": 2048, "seed": 0}
    llama3 = {**zephyr, "temperature": 0.9, "top_p": 1.0}
    for model in cfg.model_names(config):
        expected = llama3 if model.startswith("llama3_") else zephyr
        assert cfg.eval_sampling(config, model) == expected, model
    assert cfg.eval_sampling(config, "llama3_base") == llama3
    assert cfg.eval_sampling(config, "zephyr_dice_kto-iter1") == zephyr
    assert config["eval"]["sampling"]["temperature"] == 0.7  # merged into a copy
    with pytest.raises(KeyError, match="llama3_dice_kto"):
        cfg.eval_sampling(config, "llama3_dice_kto-iter1")  # dice_kto runs in zephyr only


def test_without_settings_every_model_gets_eval_sampling(config):
    for model in cfg.model_names(config):
        assert cfg.eval_sampling(config, model) == config["eval"]["sampling"]


def test_the_paper_config_evaluates_each_backbone_with_its_decoding():
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    z, l3 = cfg.eval_sampling(paper, "zephyr_dice-iter2"), cfg.eval_sampling(paper, "llama3_base")
    assert (z["temperature"], z["top_p"], l3["temperature"], l3["top_p"]) == (0.7, 0.9, 0.9, 1.0)
    assert z["max_tokens"] == l3["max_tokens"] == 2048 and z["n"] == l3["n"] == 1


# --- the DICE code's judge and response filters in the paper config; schema defaults ------------


def test_the_paper_config_judges_and_filters_as_the_dice_code():
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    for exp in ("zephyr_judge", "llama3_judge_beta001"):
        score = cfg.experiment(paper, exp)["score"]
        assert score["method"] == "judge"
        judge = score["judge"]
        assert {k: judge["sampling"][k] for k in ("n", "temperature", "top_p")} == {
            "n": 7,
            "temperature": 0.2,
            "top_p": 0.9,
        }
        assert (judge["min_ratings"], judge["max_prompt_tokens"]) == (3, 4095)
    for exp in ("zephyr_dice", "llama3_judge"):
        xp = cfg.experiment(paper, exp)
        assert {
            k: xp["score"][k]
            for k in ("drop_truncated", "strip_whitespace", "min_chars", "max_chars")
        } == {"drop_truncated": True, "strip_whitespace": True, "min_chars": 4, "max_chars": 6699}
        assert xp["alpha"]["min_responses"] == 8


def test_schema_defaults_fill_the_defaults_block_only(config):
    """A default set inside experiment_block would fill each experiment's partial score block
    and override the defaults block's value: the defaults live on the top-level block."""
    from snakemake.utils import validate

    config = copy.deepcopy(config)
    for key in ("strip_whitespace", "min_chars", "max_chars"):
        del config["defaults"]["score"][key]
    for key in ("min_ratings", "max_prompt_tokens"):
        del config["defaults"]["score"]["judge"][key]
    own = {"template": "t.txt", "sampling": {"n": 3, "temperature": 1.0}}
    config["experiments"]["judge"]["score"] = {"method": "judge", "judge": copy.deepcopy(own)}
    validate(config, str(SCHEMA))
    score = config["defaults"]["score"]
    assert {k: score[k] for k in ("strip_whitespace", "min_chars", "max_chars")} == {
        "strip_whitespace": True,
        "min_chars": 4,
        "max_chars": 6699,
    }
    assert (score["judge"]["min_ratings"], score["judge"]["max_prompt_tokens"]) == (3, 4095)
    assert config["defaults"]["mix"]["shortfall"] == "error"
    assert config["experiments"]["judge"]["score"] == {"method": "judge", "judge": own}
    assert config["experiments"]["judge"]["mix"] == {"shortfall": "shrink"}
    assert cfg.experiment(config, "judge")["score"]["judge"]["min_ratings"] == 3


def test_more_required_ratings_than_ratings_is_named(config):
    config = copy.deepcopy(config)
    config["experiments"]["judge"]["score"]["judge"] = {"min_ratings": 9}
    with pytest.raises(
        ValueError,
        match=r"experiments.judge: score.judge.min_ratings \(9\) "
        r"exceeds score.judge.sampling.n",
    ):
        cfg.experiment(config, "judge")


# --- defaults: written once, in the schema -----------------------------------------------------


def test_the_schema_fills_every_default_and_a_partial_block_keeps_the_others(config):
    from snakemake.utils import validate

    bare = copy.deepcopy(config)
    del bare["eval"]["suite"], bare["sampler"]["vllm"], bare["report"]["label"]
    bare["defaults"] = {k: v for k, v in bare["defaults"].items() if k != "reference"}
    bare["defaults"]["sampling"] = {"n": 8, "temperature": 0.7}
    del bare["defaults"]["score"]["method"]
    for key in ("length_unit", "fixed", "scale"):
        del bare["defaults"]["alpha"][key]
    bare["experiments"] = {
        "dice": {"sampling": {"n": 2}},
        "kto": {"trainer": "kto"},
        "alpha2x": {"alpha": {"scale": 2.0}},
    }
    validate(bare, str(SCHEMA))
    assert bare["eval"]["suite"] == "toy" and bare["sampler"]["vllm"] == {}
    assert cfg.setting_label(bare, "") == "toy world"
    dice, kto = cfg.experiment(bare, "dice"), cfg.experiment(bare, "kto")
    assert (dice["trainer"], dice["length_penalty"], dice["reference"]) == ("dpo", 0.0, "previous")
    assert dice["score"]["method"] == "implicit" and kto["trainer"] == "kto"
    alpha = {k: dice["alpha"][k] for k in ("length_unit", "fixed", "scale")}
    assert alpha == {"length_unit": "chars", "fixed": None, "scale": 1.0}
    assert cfg.experiment(bare, "alpha2x")["alpha"]["scale"] == 2.0
    # the experiment's partial sampling block overrides n alone: no default fills it
    assert dice["sampling"] == {"n": 2, "temperature": 0.7, "top_p": 1.0, "max_tokens": 64}


def test_the_schemas_sampling_defaults_are_sampling_specs(schema):
    from dataclasses import fields

    from dicewf.sampling import SamplingSpec

    defaults = {
        k: v["default"] for k, v in schema["definitions"]["sampling_defaults"]["properties"].items()
    }
    spec = {f.name: f.default for f in fields(SamplingSpec) if f.name in defaults}
    assert defaults == spec and set(defaults) == {"n", "temperature", "top_p", "max_tokens"}


def test_resolved_holds_every_value_of_a_run():
    config = {**two_settings(), "seed": 3, "sampler": {"backend": "auto", "vllm": {}}}
    out = cfg.resolved(config, "llama3_dice")
    assert (out["experiment"], out["setting"], out["seed"]) == ("llama3_dice", "llama3", 3)
    assert out["base"]["policy"] == "llama-dpo" and out["base"]["prompts"] == "x.parquet"
    assert out["sampling"]["temperature"] == 0.9 and out["mix"]["gamma"] == 0.1
    assert out["sampler"] == {"backend": "auto", "vllm": {}}


def seed_keys(block, path=""):
    if isinstance(block, dict):
        for key, value in block.items():
            where = f"{path}.{key}" if path else key
            yield from ([where] if key == "seed" else []) + list(seed_keys(value, where))


@pytest.mark.parametrize("path", ["config.yaml", ".test/config.yaml", "config/paper.yaml"])
def test_a_config_has_one_seed_and_a_block_seed_is_refused(path, schema):
    shipped = yaml.safe_load((ROOT / path).read_text())
    assert list(seed_keys(shipped)) == ["seed"]
    for block in (("defaults", "mix"), ("defaults", "sampling"), ("agreement",)):
        bad = copy.deepcopy(shipped)
        target = bad
        for key in block:
            target = target[key]
        target["seed"] = 1
        assert schema_errors(schema, bad), block


def test_each_stage_gets_the_seed_where_its_own_key_was():
    from dicewf.seeds import with_seed

    mix = {"gamma": 0.5, "n_pairs": 512, "shortfall": "error"}
    assert list(with_seed(mix, 7, "n_pairs").items()) == [
        ("gamma", 0.5),
        ("n_pairs", 512),
        ("seed", 7),
        ("shortfall", "error"),
    ]
    assert list(with_seed({"n": 4, "max_tokens": 8}, 7, "max_tokens")) == [
        "n",
        "max_tokens",
        "seed",
    ]
    assert list(with_seed({"a": 1}, 7, "")) == ["seed", "a"]
    assert with_seed({"seed": 1, "a": 1}, 7) == {"a": 1, "seed": 7}


# --- edges the mutation benchmark (benchmarks/mutation.py) showed untested -------------------------


def test_deep_merge_copies_a_new_nested_value_deeply():
    override = {"train": {"schedule": {"warmup": [1, 2]}}}
    merged = cfg.deep_merge({}, override)
    merged["train"]["schedule"]["warmup"].append(3)
    assert override == {"train": {"schedule": {"warmup": [1, 2]}}}


def test_a_merged_toy_and_paper_config_is_refused_with_the_whole_message():
    with pytest.raises(
        ValueError,
        match=r"^config: both `world` \(the embedded toy world\) and `settings` \(the paper's "
        r"backbones\) are set: two configurations were merged into one\. Give one: `snakemake` "
        r"alone runs config\.yaml, `snakemake --configfile config/paper\.yaml` runs the paper "
        r"alone$",
    ):
        cfg.check_standalone({"world": {"seed": 0}, "settings": {"zephyr": {}}})


def test_settings_of_an_experiment_need_configured_settings_and_only_unknown_ones_are_named():
    config = small_config()
    config["experiments"]["dice"]["settings"] = []
    with pytest.raises(KeyError, match=r"experiments.dice.settings: unknown setting\(s\) \[\]"):
        cfg.expanded(config)
    config = small_config() | {"settings": {"zephyr": {}, "mistral": {}}}
    config["experiments"]["dice"]["settings"] = ["zephyr", "llama"]
    with pytest.raises(
        KeyError,
        match=r"experiments.dice.settings: unknown setting\(s\) \['llama'\]; "
        r"configured: \['zephyr', 'mistral'\]",
    ):
        cfg.expanded(config)


def test_base_without_a_setting_is_the_top_level_block():
    assert cfg.base(small_config()) == BASE


def test_an_iteration_that_is_not_run_is_named_with_the_experiments_iterations():
    with pytest.raises(
        ValueError, match=r"^experiments.dice: iteration 3 is not run \(iterations: 2\)$"
    ):
        cfg.owners_of(small_config(), "dice", 3)


def test_samples_owner_is_the_first_experiment_with_the_same_iteration_one_samples():
    config = small_config()
    config["experiments"]["other_sampling"] = {"sampling": {"n": 4, "temperature": 1.0}}
    assert cfg.samples_owner(config, "dice", 1) == "dice"
    assert cfg.samples_owner(config, "dice_long", 1) == "dice"
    assert cfg.samples_owner(config, "other_sampling", 1) == "other_sampling"
    assert cfg.samples_owner(config, "dice_long", 2) == "dice_long"  # its own iteration-1 policy


def test_each_settings_base_model_is_evaluated_under_its_own_name():
    config = small_config() | {"settings": {"zephyr": {}, "mistral": {}}}
    owners = cfg.model_owners(config)
    assert owners["zephyr_base"] == "zephyr_base" and owners["mistral_base"] == "mistral_base"
    assert "base" not in owners


# --- SeRA's evaluation names, generates_pairs, _schema_default, SeRA's refusals ----------------


def sera_eval_config(wanted: list[str]) -> dict:
    """two_settings() with eval.sera.experiments set (dice_kto: zephyr only, 1 iteration;
    dice_gamma050: llama3 only, 2 iterations; dice: both settings, 2 iterations)."""
    return two_settings() | {"eval": {"sera": {"experiments": wanted}}}


def test_sera_sft_model_is_prefixed_by_the_setting_and_plain_sft_without_one():
    assert cfg.sera_sft_model("zephyr") == "zephyr_sft"
    assert cfg.sera_sft_model("") == "sft"


def test_sera_eval_settings_are_the_settings_of_the_listed_experiments_in_config_order():
    assert cfg.sera_eval_settings(sera_eval_config(["dice_gamma050"])) == ["llama3"]
    assert cfg.sera_eval_settings(sera_eval_config(["dice_kto"])) == ["zephyr"]
    assert cfg.sera_eval_settings(sera_eval_config(["dice_gamma050", "dice"])) == [
        "zephyr",
        "llama3",
    ]
    assert cfg.sera_eval_settings(two_settings()) == []  # no eval block: nothing evaluated
    assert cfg.sera_eval_settings(two_settings() | {"eval": {"sera": {}}}) == []


def test_sera_evaluated_runs_map_each_run_to_its_last_iterations_model():
    config = sera_eval_config(["dice_kto", "dice_gamma050"])
    assert cfg.sera_evaluated_runs(config) == {
        "zephyr_dice_kto": "zephyr_dice_kto-iter1",
        "llama3_dice_gamma050": "llama3_dice_gamma050-iter2",
    }
    assert cfg.sera_evaluated_runs(two_settings()) == {}


def test_sera_evaluated_runs_name_a_shared_run_by_its_owner():
    # two experiments with equal settings share every run: the second is evaluated as the first
    config = small_config()
    config["experiments"] = {"a": {}, "b": {}}
    config["eval"] = {"sera": {"experiments": ["b"]}}
    assert cfg.sera_evaluated_runs(config) == {"b": "a-iter2"}
    assert cfg.sera_eval_models(config) == ["sft", "base", "a-iter2"]


def test_sera_eval_models_are_sft_and_base_per_setting_then_each_runs_last_model_once():
    config = sera_eval_config(["dice_kto", "dice_gamma050", "dice"])
    assert cfg.sera_eval_models(config) == [
        "zephyr_sft",
        "zephyr_base",
        "llama3_sft",
        "llama3_base",
        "zephyr_dice-iter2",
        "zephyr_dice_kto-iter1",
        "llama3_dice-iter2",
        "llama3_dice_gamma050-iter2",
    ]
    assert cfg.sera_eval_models(two_settings()) == []


def test_an_unknown_sera_eval_experiment_is_named_with_the_configured_ones():
    with pytest.raises(KeyError) as err:
        cfg.sera_eval_models(sera_eval_config(["dice", "nope", "zephyr_dice"]))
    assert err.value.args[0] == (
        "eval.sera.experiments: unknown experiment(s) ['nope', 'zephyr_dice']; configured: "
        "['dice', 'dice_gamma050', 'dice_kto', 'judge']"
    )


def test_model_setting_reads_sft_base_and_run_names():
    config = two_settings()
    assert cfg.model_setting(config, "zephyr_sft") == "zephyr"
    assert cfg.model_setting(config, "llama3_sft") == "llama3"
    assert cfg.model_setting(config, "llama3_base") == "llama3"
    assert cfg.model_setting(config, "zephyr_dice_kto-iter1") == "zephyr"
    assert cfg.model_setting(config, "llama3_dice-iter2") == "llama3"
    assert cfg.model_setting(small_config(), "dice-iter1") == ""
    with pytest.raises(ValueError, match="model name 'zephyr_sftx'"):
        cfg.model_setting(config, "zephyr_sftx")


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ({"method": "sera", "mix": {"gamma": 1.0}}, True),  # SeRA always
        ({"method": "dice", "mix": {"gamma": 1.0}}, False),  # iterative DPO on D_offline only
        ({"mix": {"gamma": 1}}, False),
        ({"mix": {"gamma": "1.0"}}, False),
        ({"mix": {"gamma": 0.5}}, True),
        ({"mix": {"gamma": 0.0}}, True),
        ({"mix": {"gamma": None}}, True),
        ({"mix": {}}, True),
        ({"mix": None}, True),
        ({}, True),
    ],
)
def test_generates_pairs_unless_dice_mixes_gamma_one(block, expected):
    assert cfg.generates_pairs(block) is expected


def test_schema_default_fills_property_defaults_recursively_without_overriding():
    node = {
        "default": {"a": 1},
        "properties": {
            "a": {"default": 2},  # the node's own default wins
            "b": {"default": {}, "properties": {"c": {"default": 3}, "d": {"type": "int"}}},
            "e": {"type": "string"},  # no default: stays absent
            "f": {"default": None},
        },
    }
    assert cfg._schema_default(node) == {"a": 1, "b": {"c": 3}, "f": None}
    assert node["default"] == {"a": 1}  # a copy: the schema is not changed
    assert cfg._schema_default({"default": 0.5, "properties": {"x": {"default": 1}}}) == 0.5
    assert cfg._schema_default({"type": "object"}) is None
    assert cfg._schema_default({"default": {"k": [1]}}) == {"k": [1]}


def test_schema_default_returns_a_deep_copy():
    inner = {"k": [1]}
    node = {"default": {"inner": inner}}
    out = cfg._schema_default(node)
    out["inner"]["k"].append(2)
    assert inner == {"k": [1]}


def test_schema_defaults_are_a_deep_copy_each_call():
    first = cfg.schema_defaults()
    first["sera"]["beta"]["sigmoid"] = 99.0
    first["sera"]["sampling"]["n"] = 99
    again = cfg.schema_defaults()
    assert again["sera"]["beta"]["sigmoid"] == 0.2  # the schema's sera.beta.sigmoid
    assert again["sera"]["sampling"]["n"] == 4  # the schema's sera.sampling.n


def sera_config(**block) -> dict:
    """One SeRA experiment "s" over minimal defaults (score by implicit reward)."""
    return {
        "base": dict(BASE),
        "defaults": {
            "iterations": 1,
            "reference": "previous",
            "sampling": {"n": 8, "temperature": 1.0},
            "score": {"method": "implicit"},
            "train": {"learning_rate": 5e-5},
        },
        "experiments": {"s": {"method": "sera", **block}},
    }


def test_a_sera_experiment_without_loss_type_trains_with_the_sigmoid_beta():
    block = cfg.experiment(sera_config(sera={"beta": {"sigmoid": 0.05, "ipo": 0.5}}), "s")
    assert block["train"]["beta"] == 0.05
    # the schema's sera.beta.sigmoid (0.2) where the config sets no sera block
    assert cfg.experiment(sera_config(), "s")["train"]["beta"] == 0.2


def test_sera_refusals_are_whole_messages():
    cases = [
        (
            sera_config(mix={"gamma": 0.5}),
            "experiments.s: ['mix'] belong to DICE (method dice); a SeRA experiment selects and "
            "bootstraps its pairs by IRM with the settings of its sera block",
        ),
        (
            sera_config(train={"beta": 0.1}),
            "experiments.s: train.beta is set, but a SeRA experiment trains with "
            "sera.beta.<loss_type> (one place per value); set that instead",
        ),
        (
            sera_config(score={"method": "judge"}),
            "experiments.s: score.method 'judge'; SeRA bootstraps pairs by the implicit reward "
            "margin (score.method: implicit)",
        ),
        (
            sera_config(trainer="kto"),
            "experiments.s: trainer 'kto' with train.loss_type 'sigmoid'; SeRA trains with "
            "trainer dpo (its implicit reward) or trainer cpo with loss_type simpo (SimPO's)",
        ),
        (
            sera_config(
                trainer="cpo", train={"loss_type": "simpo"}, sera={"bootstrap": "dice_alpha"}
            ),
            "experiments.s: sera.bootstrap dice_alpha with SimPO (trainer cpo); DICE's alpha* "
            "regularises the DPO implicit reward: use sera.bootstrap implicit",
        ),
    ]
    for config, message in cases:
        with pytest.raises(ValueError) as err:
            cfg.experiment(config, "s")
        assert str(err.value) == message


def test_a_sera_block_on_a_dice_experiment_is_refused_naming_the_default_method():
    config = small_config()
    config["experiments"]["dice"] = {"sera": {"bootstrap": "implicit"}}
    with pytest.raises(ValueError) as err:
        cfg.experiment(config, "dice")
    assert str(err.value) == (
        "experiments.dice: a sera block is set but method is 'dice'; set method: sera, or "
        "remove the block"
    )


def test_a_noisy_run_without_a_start_policy_block_is_refused_with_the_whole_message():
    config = small_config()
    config["experiments"]["dice"] = {"noise_fraction": 0.2}
    with pytest.raises(ValueError) as err:
        cfg.experiment(config, "dice")
    assert str(err.value) == (
        "experiments.dice.noise_fraction: a run on noisy D_offline trains its own pi_theta^(0) "
        "on that data with the start_policy block (DPOConfig fields), which this config does "
        "not have; add one"
    )


def test_sera_offline_logps_are_not_shared_by_runs_whose_policies_differ():
    # fixed reference: both runs score D_offline against pi_theta^(0), but from iteration 2 on
    # under different policies (their learning rates differ), so the offline log-probs differ
    config = sera_config(reference="fixed", iterations=2)
    config["experiments"]["s2"] = {
        "method": "sera",
        "reference": "fixed",
        "iterations": 2,
        "train": {"learning_rate": 1e-6},
    }
    k = cfg.keys(config)
    assert k[("s", 1)][3] == k[("s2", 1)][3]  # same pi_theta^(0) and reference
    assert k[("s", 2)][3] != k[("s2", 2)][3]
