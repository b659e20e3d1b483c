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

Sharing. Work with equal inputs and settings is done once (:func:`owners`): the samples, the
scores and whole iterations (alpha, mix, the trained policy and its evaluation) of two
experiments of one setting whose keys (:func:`keys`) are equal are those of the first in config
order; every path (:func:`policy_path`, :func:`model_owners`) resolves through it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import hub
from .seeds import derive_seed

RESULTS = "results"

# Keys of an experiment block (the rest of the merged block must come from defaults).
EXPERIMENT_KEYS = (
    "method",
    "sera",
    "noise_fraction",
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
# Keys of an experiment block that are not settings of the experiment itself: where it runs and
# how many times (replicates, :func:`expanded`; also a key of ``defaults``).
PLACEMENT_KEYS = ("settings", "replicates")
# replicate r >= 2 of experiment ``{full}`` runs as ``{full}{REPLICATE}{r}``
REPLICATE = "_rep"


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
    """Every experiment run: full name -> (setting, experiment name), in config order; an
    experiment's replicates (:func:`replicates`) follow it."""
    return {full: (setting, name) for full, (setting, name, _) in _runs(config).items()}


def replicate_count(config: Mapping[str, Any], setting: str, name: str) -> int:
    """How many times experiment ``name`` runs in ``setting``: its ``replicates``, else its
    setting's ``defaults.replicates``, else ``defaults.replicates`` (the schema's default)."""
    block = (config.get("experiments") or {}).get(name) or {}
    if "replicates" in block:
        return int(block["replicates"])
    own = ((config.get("settings") or {}).get(setting) or {}).get("defaults") or {}
    if setting and "replicates" in own:
        return int(own["replicates"])
    top = config.get("defaults") or {}
    return int(top["replicates"] if "replicates" in top else _schema_filled()["replicates"])


def replicates(config: Mapping[str, Any]) -> dict[str, tuple[str, int]]:
    """Every experiment run -> (the full name of its first replicate, its replicate number).

    ``replicates: R`` runs an experiment R times, with the world and the start models fixed
    and the seeds of sampling, LLM-as-a-Judge ratings, the alpha search, mixing and training
    varied together (:func:`run_seed`): replicate 1 under the experiment's own name with the
    config's ``seed``, replicate r >= 2 under ``{name}_rep{r}`` with a seed of its own."""
    return {
        full: (full_name(setting, name), r) for full, (setting, name, r) in _runs(config).items()
    }


def run_seed(config: Mapping[str, Any], full: str) -> int:
    """The seed of experiment run ``full``'s sampling, ratings, alpha search, mixing and
    training: the config's ``seed`` for its first replicate, for replicate r >= 2 one derived
    from ``seed`` and r. The world, the start models and the evaluation keep ``seed``."""
    runs = _runs(config)
    if full not in runs:
        locate(config, full)  # names the unknown experiment
    r = runs[full][2]
    seed = config.get("seed")
    return seed if r == 1 else derive_seed(seed, "replicate", r)


def _runs(config: Mapping[str, Any]) -> dict[str, tuple[str, str, int]]:
    """Every experiment run: full name -> (setting, experiment name, replicate number)."""
    known = settings(config)
    out: dict[str, tuple[str, str, int]] = {}
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
            full = full_name(setting, name)
            for r in range(1, replicate_count(config, setting, name) + 1):
                run = full if r == 1 else f"{full}{REPLICATE}{r}"
                if run in out or (r > 1 and name + run[len(full) :] in config["experiments"]):
                    raise ValueError(
                        f"experiments.{name}.replicates: replicate {r} would run as {run!r}, "
                        "the name of another experiment; rename that experiment"
                    )
                out[run] = (setting, name, r)
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
    merged.pop("replicates", None)  # where the experiment runs, not how (:func:`replicates`)
    filled = schema_defaults()
    del filled["replicates"]
    method = merged.get("method", filled["method"])
    if method == "sera":
        # the schema's sera defaults under the block (a config not validated: a test's raw
        # config.yaml; a validated one has them already)
        merged = deep_merge(filled, merged)
        _sera_block(logical, block, merged)
    else:  # DICE reads no sera block; one set for it would be ignored
        if "sera" in block:
            raise ValueError(
                f"experiments.{logical}: a sera block is set but method is {method!r}; set "
                "method: sera, or remove the block"
            )
        merged.pop("sera", None)
    if trains_own_start(merged) and not config.get("start_policy"):
        raise ValueError(
            f"experiments.{logical}.noise_fraction: a run on noisy D_offline trains its own "
            "pi_theta^(0) on that data with the start_policy block (DPOConfig fields), which "
            "this config does not have; add one"
        )
    judge = (merged.get("score") or {}).get("judge")  # optional: score.method judge only
    if judge and judge["min_ratings"] > judge["sampling"]["n"]:
        raise ValueError(
            f"experiments.{logical}: score.judge.min_ratings ({judge['min_ratings']}) exceeds "
            f"score.judge.sampling.n ({judge['sampling']['n']}), the ratings per response"
        )
    return merged


SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"
# keys of the defaults block whose schema defaults experiment() fills in itself
SCHEMA_FILLED = ("method", "sera", "replicates")


def _schema_default(node: Mapping[str, Any]) -> Any:
    """What validation gives an absent key of schema ``node``: its default, with the defaults
    of its properties filled in."""
    out = copy.deepcopy(node.get("default"))
    if isinstance(out, dict):
        for key, sub in (node.get("properties") or {}).items():
            if "default" in sub and key not in out:
                out[key] = _schema_default(sub)
    return out


@functools.cache
def _schema_filled() -> dict[str, Any]:
    import yaml

    schema = yaml.safe_load(SCHEMA.read_text())
    properties: dict[str, Any] = {}
    for part in schema["properties"]["defaults"]["allOf"]:
        properties.update(part.get("properties") or {})
    return {key: _schema_default(properties[key]) for key in SCHEMA_FILLED}


def schema_defaults() -> dict[str, Any]:
    """The schema's defaults of the defaults block's ``method``, ``sera`` and ``replicates``
    (read from the schema, where they are set once)."""
    return copy.deepcopy(_schema_filled())


# keys of an experiment block that belong to DICE alone (SeRA selects and bootstraps by IRM)
DICE_ONLY_KEYS = ("alpha", "mix")


def sera_reads(block: Mapping[str, Any]) -> tuple[str, ...]:
    """DICE's keys a SeRA experiment's (merged) ``block`` reads: ``alpha`` where its pairs are
    bootstrapped at DICE's alpha* (``sera.bootstrap: dice_alpha``), else none."""
    return ("alpha",) if (block.get("sera") or {}).get("bootstrap") == "dice_alpha" else ()


def _sera_block(logical: str, block: Mapping[str, Any], merged: dict[str, Any]) -> None:
    """A SeRA experiment's resolved block, in place: its samples are drawn with the sera
    block's decoding (sera.sampling merged over sampling) and it trains with the beta of its
    loss from sera.beta (the IRM uses that beta too). What SeRA cannot run is refused, naming
    the key: DICE's own keys in the experiment's block, train.beta set beside sera.beta, LLM-as-
    a-Judge scores, KTO, CPO's losses other than SimPO, DICE's alpha* with SimPO's reward."""
    where = f"experiments.{logical}"
    own = [k for k in DICE_ONLY_KEYS if k in block and k not in sera_reads(merged)]
    if own:
        raise ValueError(
            f"{where}: {own} belong to DICE (method dice); a SeRA experiment selects and "
            "bootstraps its pairs by IRM with the settings of its sera block"
        )
    if "beta" in (block.get("train") or {}):
        raise ValueError(
            f"{where}: train.beta is set, but a SeRA experiment trains with sera.beta.<loss_type>"
            " (one place per value); set that instead"
        )
    sera = merged["sera"]
    if merged["score"]["method"] != "implicit":
        raise ValueError(
            f"{where}: score.method {merged['score']['method']!r}; SeRA bootstraps pairs by the "
            "implicit reward margin (score.method: implicit)"
        )
    loss = merged["train"].get("loss_type", "sigmoid")
    trainer = merged.get("trainer") or "dpo"  # None: not validated yet (dpo)
    if trainer not in ("dpo", "cpo") or (trainer == "cpo" and loss != "simpo"):
        raise ValueError(
            f"{where}: trainer {trainer!r} with train.loss_type {loss!r}; SeRA trains with "
            "trainer dpo (its implicit reward) or trainer cpo with loss_type simpo (SimPO's)"
        )
    if sera_reward(merged) == "simpo" and sera["bootstrap"] == "dice_alpha":
        raise ValueError(
            f"{where}: sera.bootstrap dice_alpha with SimPO (trainer cpo); DICE's alpha* "
            "regularises the DPO implicit reward: use sera.bootstrap implicit"
        )
    betas = sera["beta"]
    if loss not in betas:
        raise ValueError(
            f"{where}: sera.beta has no beta for train.loss_type {loss!r} (have {sorted(betas)});"
            f" add sera.beta.{loss}"
        )
    merged["train"]["beta"] = betas[loss]
    merged["sampling"] = deep_merge(merged["sampling"], sera["sampling"])


def sera_reward(block: Mapping[str, Any]) -> str:
    """The implicit reward a SeRA experiment's (merged) ``block`` selects and bootstraps by
    (:data:`dicewf.sera.REWARDS`): SimPO's length-normalised one where it trains with SimPO
    (trainer cpo, the reference-free CPOTrainer), else DPO's."""
    return "simpo" if block.get("trainer") == "cpo" else "dpo"


def trains_own_start(block: Mapping[str, Any]) -> bool:
    """Whether an experiment's resolved ``block`` starts from a pi_theta^(0) of its own rather
    than the setting's base policy: a run on noisy D_offline (noise_fraction > 0), any method.
    pi_theta^(0) is DPO from the SFT model on D_offline (the paper's t = 0), so on swapped labels
    it is trained on them: a start policy that saw the clean labels would tell the swapped pairs
    apart by what it was taught, not by what the noisy data lets it learn."""
    return float(block.get("noise_fraction") or 0) > 0


def start_owner(config: Mapping[str, Any], exp: str) -> str:
    """The experiment whose folder holds ``exp``'s own pi_theta^(0) (:func:`trains_own_start`):
    the first in config order with the same setting and noise, since the noisy copy and the
    recipe (start_policy, seed) are then the same."""
    setting = locate(config, exp)[0]
    noise = float(experiment(config, exp)["noise_fraction"])
    for name, (other, _) in expanded(config).items():
        if other == setting and float(experiment(config, name)["noise_fraction"]) == noise:
            return name
    raise KeyError(exp)  # unreachable: exp itself matches


def resolved(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Every value experiment ``name`` (a full name) runs with, in one mapping: its setting, its
    seed (:func:`run_seed`) and replicate (:func:`replicates`: the first replicate's name and
    this one's number), the setting's base models and data, the sampler, the merged experiment
    block and what it shares with other experiments (:func:`shared`); written to
    results/{name}/config.yaml, as alignment-handbook's recipes read."""
    setting = locate(config, name)[0]
    first, r = replicates(config)[name]
    return {
        "experiment": name,
        "setting": setting or None,
        "seed": run_seed(config, name),
        "replicate": {"of": first, "number": r},
        "base": base(config, setting),
        "sampler": dict(config["sampler"]),
        **experiment(config, name),
        # iterations whose work is done once under another experiment's name (same inputs and
        # settings): {"iter1": {"run": owner}}; empty when nothing is shared
        "shared": shared(config, name),
    }


def iterations(config: Mapping[str, Any]) -> list[tuple[str, int]]:
    """Every (experiment, iteration) of the config, iterations counted from 1."""
    return [
        (name, t)
        for name in expanded(config)
        for t in range(1, int(experiment(config, name)["iterations"]) + 1)
    ]


def own_dir(config: Mapping[str, Any], folder: str = RESULTS) -> str:
    """``folder`` of the configuration's own outputs, those no experiment owns (tables, figures,
    the agreement run; ``folder`` logs or results/benchmarks for their logs and benchmarks):
    ``folder/name`` when the config has a ``name``, else ``folder`` itself."""
    name = config.get("name")
    return f"{folder}/{name}" if name else folder


def iter_dir(exp: str, t: int | str) -> str:
    return f"{RESULTS}/{exp}/iter{t}"


def reference_iteration(block: Mapping[str, Any], t: int) -> int:
    """The iteration whose policy is pi_ref^(t) (t >= 1) for an experiment's resolved ``block``:
    0 for ``reference: fixed`` (Offline DPO), else t - 1 (Algorithm 1 line 7). At t = 1 both
    are pi_theta^(0)."""
    return 0 if int(t) == 1 or block["reference"] == "fixed" else int(t) - 1


# --- work shared between experiments ------------------------------------------------------------
#
# Every piece of work of iteration t gets a key from everything it depends on; the first
# (experiment, iteration) in config order with a key does the work and every other one reads its
# files. The key of pi_theta^(t) is built from the key of the policy it starts from and of the
# reference it trains against, so equal keys mean equal inputs all the way back to the setting's
# base models. A key holds too much rather than too little: a missed share costs a rerun, a false
# one a wrong result.

# keys of a resolved experiment block that do not change what an iteration computes: the
# description; the iteration count (each iteration has its own key); the reference mode (the
# key of the reference itself stands in for it)
NOT_IN_RUN_KEY = ("description", "iterations", "reference")
# keys that only shape the generated pairs D(alpha*): out of the key where gamma >= 1 (none made)
GENERATION_KEYS = ("sampling", "score", "alpha")
# the score block's keys that SeRA's scoring of D_offline reads (rule sera_offline_logps)
OFFLINE_SCORE_KEYS = ("max_tokens_per_batch", "dtype")


@dataclasses.dataclass(frozen=True)
class Owners:
    """The experiments whose files iteration t of an experiment reads (itself when not shared).

    ``samples``: the sampled responses (equal start policy, sampling settings and seed);
    ``scores``: their rewards (also equal scoring settings, beta and scoring reference);
    ``run``: the rest of the iteration, search_alpha, mix, train and the trained policy's
    evaluation (also every other setting of the iteration, its start policy and its training
    reference equal); ``offline``: SeRA's log-probs of D_offline (rule sera_offline_logps:
    the same D_offline, clean or with the same noise, scored under the same models with the
    same scoring settings; a DICE run's is its run owner, unused)."""

    samples: str
    scores: str
    run: str
    offline: str


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _canonical(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_canonical(v) for v in value)
    return value


def _key(*parts: Any) -> str:
    """A digest of ``parts``: equal only for equal values (1 and 1.0 differ: no share)."""
    text = repr(_canonical(parts)).encode()
    return hashlib.sha256(text).hexdigest()


def generates_pairs(block: Mapping[str, Any]) -> bool:
    """Whether an experiment samples and scores: SeRA always (its bootstrapped pairs), DICE
    (which also searches alpha) where mix.gamma < 1 (or unset)."""
    if block.get("method") == "sera":
        return True
    gamma = (block.get("mix") or {}).get("gamma")
    return gamma is None or float(gamma) < 1


def sera_ensembles(block: Mapping[str, Any], t: int) -> bool:
    """Whether iteration ``t`` of an experiment's resolved ``block`` uses Eq. 7's ensemble, for
    the offline selection and the bootstrapped pairs alike: a SeRA run with
    ``sera.ensemble_lambda`` > 0 once pi_theta^(t-2) exists (t >= 2 in the workflow's
    numbering, whose pi_theta^(0) is the paper's first model; docs/sera.md)."""
    return (
        block.get("method") == "sera"
        and int(t) >= 2
        and float(block["sera"]["ensemble_lambda"]) > 0
    )


def _unused_at(settings_: Mapping[str, Any], t: int) -> Mapping[str, Any]:
    """An experiment's run settings without what iteration ``t`` does not read: SeRA's Eq. 7
    lambda before iteration 2 (no pi_theta^(t-2) yet), so a lambda sweep shares iteration 1."""
    sera = settings_.get("sera")
    if t >= 2 or not isinstance(sera, Mapping) or "ensemble_lambda" not in sera:
        return settings_
    return {**settings_, "sera": {k: v for k, v in sera.items() if k != "ensemble_lambda"}}


def keys(config: Mapping[str, Any]) -> dict[tuple[str, int], tuple[str, str, str, str]]:
    """Every (experiment, iteration) -> the keys of its samples, scores, run and offline
    log-probs (digests of all each depends on), in config order: equal keys, equal work."""
    out = {}
    for exp, (setting, _) in expanded(config).items():
        block = experiment(config, exp)
        seed = run_seed(config, exp)  # a replicate's own
        generates = generates_pairs(block)
        # SeRA reads no mix block, and no alpha block but with sera.bootstrap dice_alpha (they
        # stay in its resolved block, from defaults)
        unused = (
            tuple(k for k in DICE_ONLY_KEYS if k not in sera_reads(block))
            if block.get("method") == "sera"
            else ()
        )
        settings_ = {
            k: v
            for k, v in block.items()
            if k not in NOT_IN_RUN_KEY
            and k not in unused
            and (generates or k not in GENERATION_KEYS)
        }
        # the keys of pi_theta^(t) and pi_ref^(t), t = 0, 1, ...; a start policy of its own
        # (trains_own_start) is the experiment's alone
        own = trains_own_start(block)
        start = (
            ("own start", setting, float(block["noise_fraction"]))
            if own
            else ("base policy", setting)
        )
        policy, reference = [_key(*start)], [_key("base reference", setting)]
        for t in range(1, int(block["iterations"]) + 1):
            reference.append(policy[reference_iteration(block, t)])  # reference_path's rule
            samples = _key("samples", setting, policy[t - 1], block.get("sampling"), seed)
            scores = _key(
                "scores",
                samples,
                reference[t - 1],  # the implicit reward's reference
                block.get("score"),
                (block.get("train") or {}).get("beta"),
            )
            run = _key(
                "run",
                setting,
                t,  # the offline share of the mix is drawn anew each iteration
                seed,
                policy[t - 1],
                reference[t],  # what it trains against
                scores if generates else None,
                _unused_at(settings_, t),
            )
            policy.append(run)
            offline = run  # DICE scores no D_offline of its own
            if block.get("method") == "sera":
                # D_offline (the setting's, with the same noise drawn from the same seed) under
                # pi_theta^(t-1) and its reference, and for Eq. 7 the pair before them
                older = (policy[t - 2], reference[t - 2]) if sera_ensembles(block, t) else None
                offline = _key(
                    "offline logps",
                    setting,
                    config.get("seed"),  # the noise's (rule noisy_offline)
                    float(block.get("noise_fraction") or 0),  # as trains_own_start reads it
                    policy[t - 1],
                    reference[t - 1],
                    older,
                    {k: (block.get("score") or {}).get(k) for k in OFFLINE_SCORE_KEYS},
                )
            out[(exp, t)] = (samples, scores, run, offline)
    return out


def owners(config: Mapping[str, Any]) -> dict[tuple[str, int], Owners]:
    """Every (experiment, iteration) -> who does its work (:class:`Owners`): for each part, the
    first experiment in config order with its key (:func:`keys`)."""
    first: dict[str, str] = {}
    return {
        (exp, t): Owners(*(first.setdefault(key, exp) for key in parts))
        for (exp, t), parts in keys(config).items()
    }


def owners_of(config: Mapping[str, Any], exp: str, t: int, table: Mapping | None = None) -> Owners:
    """:class:`Owners` of iteration ``t`` of ``exp``; ``table``: :func:`owners` of the config,
    when the caller has it. An iteration the experiment does not run is named."""
    table = owners(config) if table is None else table
    got = table.get((exp, int(t)))
    if got is None:
        locate(config, exp)  # an unknown experiment is named
        n = experiment(config, exp)["iterations"]
        raise ValueError(f"experiments.{exp}: iteration {t} is not run (iterations: {n})")
    return got


def run_owner(config: Mapping[str, Any], exp: str, t: int, table: Mapping | None = None) -> str:
    """The experiment whose iteration ``t`` (policy, evaluation and the steps before) ``exp``
    reads; ``table``: :func:`owners` of the config, when the caller has it."""
    return owners_of(config, exp, t, table).run


def iteration1_owners(config: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Every experiment -> (samples owner, scores owner) at iteration 1."""
    return {e: (o.samples, o.scores) for (e, t), o in owners(config).items() if t == 1}


def samples_owner(config: Mapping[str, Any], exp: str, t: int) -> str:
    """The experiment whose iteration-``t`` samples ``exp`` reads.

    Experiments of one setting start from the same base policy, so at iteration 1 all of them
    with equal sampling settings share one set of samples: that of the first such experiment in
    config order. A later iteration shares only where its start policy is shared too.
    """
    return owners_of(config, exp, t).samples


def sampling_owner(config: Mapping[str, Any], exp: str, t: int) -> str:
    """The experiment whose iteration-``t`` scores (and samples) ``exp`` reads.

    As :func:`samples_owner`, but the scoring settings (the ``score`` block, with the LLM-as-a-
    Judge or implicit-reward method, beta and the scoring reference) must be equal too.
    """
    return owners_of(config, exp, t).scores


def shared(config: Mapping[str, Any], exp: str, table: Mapping | None = None) -> dict[str, Any]:
    """What experiment ``exp`` reads from others, per iteration: ``{"iter1": {"run": owner,
    ...}}`` with only the work done under another experiment's name (results/{exp}/config.yaml
    shows it)."""
    table = owners(config) if table is None else table
    generates = generates_pairs(experiment(config, exp))
    out = {}
    for (e, t), o in table.items():
        if e != exp:
            continue
        parts = dataclasses.asdict(o)
        if experiment(config, exp).get("method") != "sera":  # no D_offline log-probs of its own
            del parts["offline"]
        if not generates:  # nothing sampled or scored: only the run can be shared
            parts = {"run": o.run}
        theirs = {part: owner for part, owner in parts.items() if owner != exp}
        if theirs:
            out[f"iter{t}"] = theirs
    return out


def policy_path(config: Mapping[str, Any], exp: str, t: int, table: Mapping | None = None) -> str:
    """pi_theta^(t) of experiment ``exp``: the base policy for t = 0 (or the experiment's own,
    :func:`trains_own_start`), else the policy trained by the iteration's owner (:func:`owners`; ``table``: that, when the caller has it)."""
    t = int(t)
    if t < 0:
        raise ValueError(f"iteration must be >= 0, got {t}")
    if t == 0:
        if trains_own_start(experiment(config, exp)):
            return f"{iter_dir(start_owner(config, exp), 0)}/policy"  # rule noisy_start_policy
        return hub.local_dir(base(config, locate(config, exp)[0])["policy"])
    return f"{iter_dir(run_owner(config, exp, t, table), t)}/policy"


def reference_path(
    config: Mapping[str, Any], exp: str, t: int, table: Mapping | None = None
) -> str:
    """pi_ref^(t), the reference that pi_theta^(t) was trained against.

    The base reference for t = 0; else pi_theta^(t-1) (Algorithm 1 line 7), or pi_theta^(0) in
    every iteration for an experiment with ``reference: fixed`` (Offline DPO).
    """
    t = int(t)
    if t == 0:
        return hub.local_dir(base(config, locate(config, exp)[0])["reference"])
    return policy_path(config, exp, reference_iteration(experiment(config, exp), t), table)


def model_names(config: Mapping[str, Any]) -> list[str]:
    """Names of every model the tables may name: each setting's base model, a noisy run's own
    pi_theta^(0) ``{exp}-iter0``, and ``{exp}-iter{t}`` (one evaluated under another name where shared: :func:`model_owners`)."""
    own = [f"{e}-iter0" for e in expanded(config) if trains_own_start(experiment(config, e))]
    return (
        [base_model(s) for s in settings(config)]
        + own
        + [f"{e}-iter{t}" for e, t in iterations(config)]
    )


def model_owners(config: Mapping[str, Any], table: Mapping | None = None) -> dict[str, str]:
    """Every model name -> the name it is evaluated under: the model of the iteration's owner
    (:func:`owners`), itself when not shared."""
    table = owners(config) if table is None else table
    out = {base_model(s): base_model(s) for s in settings(config)}
    # a noisy run's own pi_theta^(0) (the paper's DPO on the noisy data), once per noise level
    out |= {
        f"{e}-iter0": f"{start_owner(config, e)}-iter0"
        for e in expanded(config)
        if trains_own_start(experiment(config, e))
    }
    out |= {f"{e}-iter{t}": f"{o.run}-iter{t}" for (e, t), o in table.items()}
    return out


def evaluated_models(config: Mapping[str, Any], table: Mapping | None = None) -> list[str]:
    """The models evaluated once each (:func:`model_owners`' values), in config order."""
    return list(dict.fromkeys(model_owners(config, table).values()))


def _parse_model(config: Mapping[str, Any], model: str) -> tuple[str, str | None, int]:
    """(setting, experiment or None for a base model, iteration) of an evaluated model name."""
    for setting in settings(config):
        if model == base_model(setting):
            return setting, None, 0
    m = re.fullmatch(r"(?P<exp>.+)-iter(?P<t>\d+)", model)
    if not m:
        raise ValueError(f"model name {model!r} is neither 'base' nor '<experiment>-iter<t>'")
    return locate(config, m["exp"])[0], m["exp"], int(m["t"])


def model_policy(config: Mapping[str, Any], model: str, table: Mapping | None = None) -> str:
    """Policy folder of an evaluated model name (see :func:`model_names`)."""
    setting, exp, t = _parse_model(config, model)
    if exp is None:
        return hub.local_dir(base(config, setting)["policy"])
    return policy_path(config, exp, t, table)


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


# SeRA's paper-scale evaluation (eval.sera; workflow/rules/sera_eval.smk)


def sera_sft_model(setting: str) -> str:
    """The evaluated name of a setting's SFT model, its base reference."""
    return f"{setting}_sft" if setting else "sft"


def _sera_eval_runs(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(setting, full name) of every run of the experiments eval.sera.experiments lists."""
    wanted = ((config.get("eval") or {}).get("sera") or {}).get("experiments") or []
    logical = {name for _, name in expanded(config).values()}
    unknown = [name for name in wanted if name not in logical]
    if unknown:
        raise KeyError(
            f"eval.sera.experiments: unknown experiment(s) {unknown}; configured: {sorted(logical)}"
        )
    first = replicates(config)  # the first replicate of each: the paper's table has one row
    return [
        (s, full)
        for full, (s, name) in expanded(config).items()
        if name in wanted and first[full][1] == 1
    ]


def sera_eval_settings(config: Mapping[str, Any]) -> list[str]:
    """The settings of eval.sera's experiments, in config order."""
    return list(dict.fromkeys(s for s, _ in _sera_eval_runs(config)))


def sera_evaluated_runs(config: Mapping[str, Any], table: Mapping | None = None) -> dict[str, str]:
    """Every run of eval.sera's experiments (full name) -> the model its last iteration is
    evaluated as (the owner's name where runs are shared, :func:`model_owners`)."""
    owners_of_model = model_owners(config, table)
    out = {}
    for _, full in _sera_eval_runs(config):
        last = int(experiment(config, full)["iterations"])
        out[full] = owners_of_model[f"{full}-iter{last}"]
    return out


def sera_eval_models(config: Mapping[str, Any], table: Mapping | None = None) -> list[str]:
    """The models SeRA's evaluation answers with, each once: per setting of eval.sera's
    experiments its SFT and base models, then each experiment's last iteration (under the name
    it is evaluated as where runs are shared, :func:`model_owners`)."""
    out = []
    for setting in sera_eval_settings(config):
        out += [sera_sft_model(setting), base_model(setting)]
    out += sera_evaluated_runs(config, table).values()
    return list(dict.fromkeys(out))


def model_setting(config: Mapping[str, Any], model: str) -> str:
    """The setting of an evaluated model name (an SFT model's too)."""
    for setting in settings(config):
        if model == sera_sft_model(setting):
            return setting
    return _parse_model(config, model)[0]
