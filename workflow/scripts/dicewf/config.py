"""Config helpers shared by the Snakefile and the tests: experiment resolution and DAG paths.

An experiment is a named block under ``experiments:``; its keys are deep-merged over
``defaults:``, so adding an experiment is configuration, not code. Iteration t of experiment e
starts from the policy of iteration t-1 (iteration 0 is the configured base policy) and scores
with the reference of iteration t-1 (the configured base reference for t=1, the policy of
iteration t-2 after that), as in Algorithm 1.

Settings. A config may define ``settings:`` (the paper's zephyr and llama3 backbones): each has a
``label``, a partial ``base`` block merged over the top-level ``base``, a partial ``defaults``
block merged over ``defaults`` and a partial ``eval`` block merged over the top-level ``eval``
(its ``sampling``: the decoding of the setting's evaluated models, :func:`eval_sampling`).
Every experiment then runs once per setting (or in the settings listed by its own
``settings:`` key) under the full name ``{setting}_{experiment}``; the base model of a setting
is evaluated as ``{setting}_base``. Without ``settings:`` there is one unnamed
setting, experiments keep their names and the base model is ``base``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from . import hub

RESULTS = "results"

# Keys of an experiment block (the rest of the merged block must come from defaults).
EXPERIMENT_KEYS = (
    "iterations",
    "reference",
    "sampling",
    "score",
    "alpha",
    "mix",
    "train",
    "trainer",
    "length_penalty",
    "description",
)
# Keys of an experiment block that are not settings of the experiment itself.
PLACEMENT_KEYS = ("settings",)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` merged into a copy of ``base``; nested mappings merge, other values replace."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_standalone(config: Mapping[str, Any]) -> None:
    """A configuration is the embedded toy world (``world:``) or hub backbones (``settings:``),
    never both: both come only from merging two configurations, whose runs would then mix."""
    if config.get("world") and config.get("settings"):
        raise ValueError(
            "config: both `world` (the embedded toy world) and `settings` (the paper's backbones)"
            " are set: two configurations were merged into one. Give one: `snakemake` alone runs"
            " config.yaml, `snakemake --configfile config/paper.yaml` runs the paper alone"
        )


def settings(config: Mapping[str, Any]) -> list[str]:
    """Names of the configured settings; ``[""]`` (one unnamed setting) when there are none."""
    return list(config.get("settings") or {}) or [""]


def setting_label(config: Mapping[str, Any], setting: str) -> str:
    if not setting:
        return config["report"]["label"]
    return (config["settings"][setting] or {}).get("label", setting)


def full_name(setting: str, exp: str) -> str:
    """The name experiment ``exp`` runs under in ``setting`` (results/{full_name}/...)."""
    return f"{setting}_{exp}" if setting else exp


def base_model(setting: str) -> str:
    """The evaluated model name of a setting's base policy."""
    return f"{setting}_base" if setting else "base"


def expanded(config: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Every experiment run: full name -> (setting, experiment name), in config order."""
    known = settings(config)
    out: dict[str, tuple[str, str]] = {}
    for setting in known:
        for name, block in (config.get("experiments") or {}).items():
            wanted = (block or {}).get("settings")
            if wanted is not None:
                unknown = [s for s in wanted if s not in known]
                if unknown or known == [""]:
                    raise KeyError(
                        f"experiments.{name}.settings: unknown setting(s) "
                        f"{unknown or wanted}; configured: {[s for s in known if s]}"
                    )
                if setting not in wanted:
                    continue
            out[full_name(setting, name)] = (setting, name)
    return out


def locate(config: Mapping[str, Any], full: str) -> tuple[str, str]:
    """(setting, experiment name) of a full experiment name."""
    runs = expanded(config)
    if full not in runs:
        raise KeyError(f"experiments: no experiment named {full!r}; have {sorted(runs)}")
    return runs[full]


def base(config: Mapping[str, Any], setting: str = "") -> dict[str, Any]:
    """The ``base`` block of a setting: the top-level one with the setting's overrides."""
    top = config.get("base") or {}
    if not setting:
        return dict(top)
    return deep_merge(top, (config["settings"][setting] or {}).get("base") or {})


def experiment(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The fully resolved settings of experiment ``name`` (a full name when settings exist)."""
    setting, logical = locate(config, name)
    block = dict(config["experiments"][logical] or {})
    unknown = set(block) - set(EXPERIMENT_KEYS) - set(PLACEMENT_KEYS)
    if unknown:
        raise KeyError(
            f"experiments.{logical}: unknown key(s) {sorted(unknown)}; "
            f"allowed: {list(EXPERIMENT_KEYS + PLACEMENT_KEYS)}"
        )
    for key in PLACEMENT_KEYS:
        block.pop(key, None)
    defaults = config.get("defaults") or {}
    if setting:
        defaults = deep_merge(defaults, (config["settings"][setting] or {}).get("defaults") or {})
    merged = deep_merge(defaults, block)
    judge = (merged.get("score") or {}).get("judge")  # optional: score.method judge only
    if judge and judge["min_ratings"] > judge["sampling"]["n"]:
        raise ValueError(
            f"experiments.{logical}: score.judge.min_ratings ({judge['min_ratings']}) exceeds "
            f"score.judge.sampling.n ({judge['sampling']['n']}), the ratings per response"
        )
    return merged


def resolved(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Every value experiment ``name`` (a full name) runs with, in one mapping: its setting, the
    global seed, the setting's base models and data, the sampler and the merged experiment
    block (written to results/{name}/config.yaml, as alignment-handbook's recipes read)."""
    setting = locate(config, name)[0]
    return {
        "experiment": name,
        "setting": setting or None,
        "seed": config["seed"],
        "base": base(config, setting),
        "sampler": dict(config["sampler"]),
        **experiment(config, name),
    }


def iterations(config: Mapping[str, Any]) -> list[tuple[str, int]]:
    """Every (experiment, iteration) of the config, iterations counted from 1."""
    return [
        (name, t)
        for name in expanded(config)
        for t in range(1, int(experiment(config, name)["iterations"]) + 1)
    ]


def iter_dir(exp: str, t: int | str) -> str:
    return f"{RESULTS}/{exp}/iter{t}"


def policy_path(config: Mapping[str, Any], exp: str, t: int) -> str:
    """pi_theta^(t) of experiment ``exp``: the base policy for t = 0."""
    t = int(t)
    if t < 0:
        raise ValueError(f"iteration must be >= 0, got {t}")
    if t == 0:
        return hub.local_dir(base(config, locate(config, exp)[0])["policy"])
    return f"{iter_dir(exp, t)}/policy"


def reference_path(config: Mapping[str, Any], exp: str, t: int) -> str:
    """pi_ref^(t), the reference that pi_theta^(t) was trained against.

    The base reference for t = 0; else pi_theta^(t-1) (Algorithm 1 line 7), or pi_theta^(0) in
    every iteration for an experiment with ``reference: fixed`` (Offline DPO).
    """
    t = int(t)
    if t == 0:
        return hub.local_dir(base(config, locate(config, exp)[0])["reference"])
    fixed = experiment(config, exp)["reference"] == "fixed"
    return policy_path(config, exp, 0 if fixed else t - 1)


def iteration1_owners(config: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Every experiment -> (samples owner, scores owner) at iteration 1, in one pass."""
    first_samples: dict[str, str] = {}
    first_scores: dict[str, str] = {}
    out = {}
    for exp, (setting, _) in expanded(config).items():
        settings_ = experiment(config, exp)
        samples_key = repr((setting, settings_["sampling"]))
        scores_key = repr((samples_key, settings_["score"], settings_["train"]["beta"]))
        out[exp] = (
            first_samples.setdefault(samples_key, exp),
            first_scores.setdefault(scores_key, exp),
        )
    return out


def _owner(config: Mapping[str, Any], exp: str, t: int, key) -> str:
    if int(t) != 1:
        return exp
    locate(config, exp)
    return iteration1_owners(config)[exp][key]


def samples_owner(config: Mapping[str, Any], exp: str, t: int) -> str:
    """The experiment whose iteration-``t`` samples ``exp`` reads.

    Experiments of one setting start from the same base policy, so at iteration 1 all of them
    with equal sampling settings share one set of samples: that of the first such experiment in
    config order. Later iterations start from the experiment's own policy and are never shared.
    """
    return _owner(config, exp, t, 0)


def sampling_owner(config: Mapping[str, Any], exp: str, t: int) -> str:
    """The experiment whose iteration-``t`` scores (and samples) ``exp`` reads.

    As :func:`samples_owner`, but the scoring settings (the ``score`` block, with the LLM-as-a-
    Judge or implicit-reward method, and beta) must be equal too.
    """
    return _owner(config, exp, t, 1)


def model_names(config: Mapping[str, Any]) -> list[str]:
    """Names of every evaluated model: each setting's base model and ``{exp}-iter{t}``."""
    return [base_model(s) for s in settings(config)] + [
        f"{e}-iter{t}" for e, t in iterations(config)
    ]


def _parse_model(config: Mapping[str, Any], model: str) -> tuple[str, str | None, int]:
    """(setting, experiment or None for a base model, iteration) of an evaluated model name."""
    for setting in settings(config):
        if model == base_model(setting):
            return setting, None, 0
    m = re.fullmatch(r"(?P<exp>.+)-iter(?P<t>\d+)", model)
    if not m:
        raise ValueError(f"model name {model!r} is neither 'base' nor '<experiment>-iter<t>'")
    return locate(config, m["exp"])[0], m["exp"], int(m["t"])


def model_policy(config: Mapping[str, Any], model: str) -> str:
    """Policy folder of an evaluated model name (see :func:`model_names`)."""
    setting, exp, t = _parse_model(config, model)
    if exp is None:
        return hub.local_dir(base(config, setting)["policy"])
    return policy_path(config, exp, t)


def eval_sampling(config: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The decoding of an evaluated model: ``eval.sampling`` with its setting's
    ``settings.<setting>.eval.sampling`` merged over it."""
    setting = _parse_model(config, model)[0]
    shared = (config.get("eval") or {})["sampling"]
    if not setting:
        return dict(shared)
    own = ((config["settings"][setting] or {}).get("eval") or {}).get("sampling") or {}
    return deep_merge(shared, own)


def alternation(names: list[str]) -> str:
    """A regex matching exactly one of ``names`` (for wildcard_constraints)."""
    if not names:
        return "(?!)"
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
