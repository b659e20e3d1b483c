"""Start-up checks: what can be known wrong when the DAG is built is refused then, naming the key.

The schema (workflow/schemas/config.schema.yaml) checks each value on its own. :func:`check_config`
(called by workflow/rules/common.smk right after schema validation) checks what needs more than
one value, the merged experiment blocks, or TRL itself, so a setting that would otherwise fail or
silently go wrong after sampling and scoring (minutes, or GPU-hours) stops the run at start-up:

- the toy rules' ``world`` block present wherever the toy world is used (:func:`world_block`);
- per experiment (:func:`experiment_blocks`): ``alpha.bounds`` in order; at least two responses
  per prompt where pairs are built from the samples; no greedy decoding (temperature 0) with
  ``n > 1``, whose responses (or ratings) would all be equal;
- every distinct training block built as TRL's own config class, once, as the training job
  builds it (:func:`train_blocks`): an unknown field, a bad value, an unknown ``loss_type`` or
  ``save_steps`` that is no multiple of ``logging_steps`` is named with its key path;
- ``report.experiment`` and ``agreement.experiment`` naming configured experiments
  (:func:`report_targets`);
- local model folders given in ``base`` (not built or downloaded by the workflow) hold a
  model (:func:`model_dir`, also called by the adapters that load a model).

Each error names the key path where the value is set (``experiments.dice.alpha.bounds``, or
``defaults.alpha.bounds`` and the experiment it breaks). :func:`load_yaml` reads a config file
strictly: a duplicate key is refused and a syntax error shows its line and column.

Importing TRL and building its first config costs several seconds (TRL imports torch and
transformers' integrations), so a block that passed is remembered by a hash of its fields and of
the installed trl, transformers and torch versions: an empty marker file in
``$XDG_CACHE_HOME/dicewf/trl-checked/`` (default ``~/.cache``). A dry run whose blocks all passed
before imports nothing heavy.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from . import config as cfg
from . import hub
from .model_files import model_dir

# paths the workflow builds or downloads itself: checked by the jobs that read them
WORKFLOW_DIRS = (cfg.RESULTS + "/", hub.HUB_DIR + "/")


# --- YAML -------------------------------------------------------------------------------------


def _strict_loader(path: str):
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader that refuses a key given twice in one mapping (YAML keeps the last)."""

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.setdefault(key, key_node.start_mark.line + 1)
                    except TypeError:  # an unhashable key: SafeLoader refuses it itself
                        continue
                    if first != key_node.start_mark.line + 1:
                        raise ValueError(
                            f"{path}, line {key_node.start_mark.line + 1}: duplicate key "
                            f"{key!r} (first at line {first}); YAML keeps only the last value "
                            "of a key given twice, so give it once"
                        )
            return super().construct_mapping(node, deep)

    return StrictLoader


def load_yaml(path: str | os.PathLike) -> Any:
    """A YAML (or JSON) config file, read strictly: a syntax error is a ValueError naming the
    file, line and column; a key given twice in one mapping is refused naming file, key and
    lines. Snakemake's own loader shows neither."""
    import yaml

    path = str(path)
    with open(path, encoding="utf-8") as f:
        try:
            return yaml.load(f, Loader=_strict_loader(path))
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
            context = e.context or ""
            if context and e.context_mark and e.context_mark is not mark:
                context += f" at line {e.context_mark.line + 1}, column {e.context_mark.column + 1}"
            raise ValueError(
                f"{path}, {where}: not valid YAML: {e.problem or e}"
                + (f" ({context})" if context else "")
            ) from None


# --- key paths --------------------------------------------------------------------------------


def _has(block: Any, path: Iterable[str]) -> bool:
    for key in path:
        if not isinstance(block, Mapping) or key not in block:
            return False
        block = block[key]
    return True


def origin(config: Mapping[str, Any], full: str, *path: str) -> str:
    """The key path that sets value ``path`` of experiment ``full``: the experiment's own block,
    its setting's ``defaults`` or the top-level ``defaults``, whichever sets it last."""
    setting, logical = cfg.locate(config, full)
    blocks = [(f"experiments.{logical}", (config.get("experiments") or {}).get(logical))]
    if setting:
        own = (config["settings"][setting] or {}).get("defaults")
        blocks.append((f"settings.{setting}.defaults", own))
    blocks.append(("defaults", config.get("defaults")))
    for prefix, block in blocks:
        if _has(block, path):
            return ".".join((prefix, *path))
    return ".".join((f"experiments.{logical}", *path))


def _named(config: Mapping[str, Any], full: str, path: tuple[str, ...], problem: str) -> str:
    where = origin(config, full, *path)
    logical = cfg.locate(config, full)[1]
    suffix = "" if where.startswith(f"experiments.{logical}.") else f" (experiment {full})"
    return f"{where}: {problem}{suffix}"


# --- the checks -------------------------------------------------------------------------------


def world_block(config: Mapping[str, Any]) -> None:
    """The toy world's ``world`` block is there when the toy eval, the gold judge or a base
    path built by the toy rules needs it."""
    if "world" in config:  # an empty block is the toy world with its defaults
        return
    needs = []
    if config["eval"]["suite"] == "toy":
        needs.append("eval.suite: toy (the default) judges with the toy world's gold judge")
    if (config.get("agreement") or {}).get("judge") == "gold":
        needs.append("agreement.judge: gold is the toy world's judge")
    bases = [("base", config.get("base") or {})]
    bases += [
        (f"settings.{s}.base", (b or {}).get("base") or {})
        for s, b in (config.get("settings") or {}).items()
    ]
    toy = [
        f"{where}.{key}"
        for where, block in bases
        for key, path in block.items()
        if isinstance(path, str) and path.startswith(f"{cfg.RESULTS}/toy/")
    ]
    if toy:
        needs.append(f"{', '.join(toy)} are built by the toy-world rules")
    if needs:
        raise ValueError(
            "world: the toy world's block is missing, and " + "; ".join(needs) + ". Add a "
            "`world:` block (see config.yaml), or configure hub models and eval.suite: paper "
            "(see config/paper.yaml)"
        )


def experiment_blocks(config: Mapping[str, Any]) -> None:
    """Bounds order and sampling that can give pairs, per resolved experiment."""
    for full in cfg.expanded(config):
        x = cfg.experiment(config, full)
        bounds = (x.get("alpha") or {}).get("bounds")
        if bounds is not None and len(bounds) == 2 and bounds[0] > bounds[1]:
            raise ValueError(
                _named(
                    config,
                    full,
                    ("alpha", "bounds"),
                    f"{list(bounds)} is reversed: give [lo, hi] with lo <= hi",
                )
            )
        gamma = (x.get("mix") or {}).get("gamma")  # no schema default: each config sets it
        if gamma is None:
            raise ValueError(
                f"experiment {full}: mix.gamma (the share of D_offline in each iteration's "
                "pairs) is not set; set it in defaults.mix or the experiment's mix block"
            )
        if gamma >= 1:
            continue  # offline pairs only: nothing is sampled
        sampling = x["sampling"]
        n = sampling["n"]
        method = x["score"]["method"]
        if n < 2:
            reward = "implicit rewards" if method == "implicit" else "judge ratings"
            raise ValueError(
                _named(
                    config,
                    full,
                    ("sampling", "n"),
                    f"{n} response per prompt: pairs are the best and worst of each prompt's "
                    f"responses by their {reward}, so they need n >= 2",
                )
            )
        _distinct(config, full, ("sampling",), sampling, "responses")
        if method == "judge":
            judge = x["score"]["judge"]["sampling"]
            _distinct(config, full, ("score", "judge", "sampling"), judge, "ratings")


def _distinct(config, full, path: tuple[str, ...], sampling: Mapping[str, Any], what: str) -> None:
    n, temperature = sampling["n"], sampling["temperature"]
    if temperature == 0 and n > 1:
        raise ValueError(
            _named(
                config,
                full,
                (*path, "temperature"),
                f"0 (greedy decoding) with {'.'.join(path)}.n {n}: the {n} {what} of a prompt "
                f"would all be equal; use temperature > 0, or n 1",
            )
        )


def report_targets(config: Mapping[str, Any]) -> None:
    """``report.experiment`` (Figures 2 and 4) and ``agreement.experiment`` (Table 5) name an
    experiment of the report's setting."""
    main = (config.get("report") or {}).get("setting") or cfg.settings(config)[0]
    runs = cfg.expanded(config)
    for where, block, what in (
        ("report", config.get("report") or {}, "Figures 2 and 4 would be placeholders"),
        ("agreement", config.get("agreement") or {}, "Table 5's tuples"),
    ):
        if "experiment" not in block:
            continue  # report's default, dice, is drawn when configured
        exp = block["experiment"]
        if any(full in runs and runs[full][0] == main for full in (cfg.full_name(main, exp), exp)):
            continue
        have = sorted(logical for s, logical in runs.values() if s == main)
        raise ValueError(
            f"{where}.experiment: no experiment {exp!r} in "
            f"{'setting ' + repr(main) if main else 'the configuration'} "
            f"({what}); configured: {have}"
        )


def base_models(config: Mapping[str, Any]) -> None:
    """Local model folders of ``base`` (not built or downloaded by the workflow) hold a model."""
    for setting in cfg.settings(config):
        block = cfg.base(config, setting)
        for role in ("policy", "reference"):
            path = block.get(role)
            if (
                not isinstance(path, str)
                or path.startswith(WORKFLOW_DIRS)
                or path.startswith("hf://")
                or not os.path.isdir(path)
            ):
                continue
            own = ((config.get("settings") or {}).get(setting) or {}).get("base") or {}
            model_dir(path, f"settings.{setting}.base.{role}" if role in own else f"base.{role}")


# --- TRL config classes -----------------------------------------------------------------------


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "dicewf" / "trl-checked"


@functools.cache
def _versions() -> tuple[str | None, ...]:
    from importlib import metadata

    versions = []
    for package in ("trl", "transformers", "torch"):
        try:
            versions.append(metadata.version(package))
        except metadata.PackageNotFoundError:
            versions.append(None)
    return tuple(versions)


def _fingerprint(kind: str, args: Mapping[str, Any], **extra: Any) -> str:
    text = json.dumps([kind, dict(args), extra, _versions()], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def trl_config(kind: str, args: Mapping[str, Any], *, length_penalty: float = 0.0) -> None:
    """Build training block ``args`` as the job will: ``dpo``/``kto`` with
    :func:`dicewf.training.preference_config`, ``sft`` as SFTConfig, ``reward`` as
    RewardConfig (dicewf.reward_model). Raises TRL's TypeError or ValueError, or ours."""
    from . import training

    with tempfile.TemporaryDirectory(prefix="dicewf-check-") as out:
        if kind in training.TRAINERS:
            training.preference_config(
                args, trainer=kind, length_penalty=length_penalty, output_dir=out, processes=1
            )
            return
        if kind == "sft":
            from trl import SFTConfig as config_cls
        elif kind == "reward":
            from trl import RewardConfig as config_cls
        else:
            raise ValueError(f"unknown training block kind {kind!r}")
        training.trl_config(config_cls, args, where=kind, output_dir=out, processes=1)


def _culprit(block: Mapping[str, Any], message: str) -> str | None:
    """The key of ``block`` an error message is about: the first it names, else the one whose
    value it quotes."""
    named = {
        m.start(): k
        for k in block
        if (m := re.search(rf"(?<![\w.]){re.escape(k)}(?![\w])", message))
    }
    if named:
        return named[min(named)]
    quoted = [
        k
        for k, v in block.items()
        if isinstance(v, (str, int, float)) and not isinstance(v, bool) and str(v) in message
    ]
    return quoted[0] if len(quoted) == 1 else None


def train_blocks(config: Mapping[str, Any], *, cache: bool = True) -> None:
    """Every distinct training block built once by TRL's own config class; a failure names
    the key path (the key that TRL or our check names, where it can be told)."""
    # (kind, args, length_penalty) -> (key path of the block, full experiment name or None)
    blocks: dict[str, tuple[str, dict, float, str, str | None]] = {}

    def add(kind, args, length_penalty, where, full=None):
        key = json.dumps([kind, args, length_penalty], sort_keys=True, default=str)
        blocks.setdefault(key, (kind, dict(args or {}), float(length_penalty), where, full))

    for full in cfg.expanded(config):
        x = cfg.experiment(config, full)
        add(x["trainer"], x["train"], x["length_penalty"], "train", full)
    if "world" in config:  # the toy rules train these
        if config.get("start_policy") is not None:
            add("dpo", config["start_policy"], 0.0, "start_policy")
        if config.get("sft") is not None:
            add("sft", config["sft"], 0.0, "sft")
    if (config.get("agreement") or {}).get("reward_model") is not None:
        add("reward", config["agreement"]["reward_model"], 0.0, "agreement.reward_model")

    marks = _cache_dir()
    for kind, args, length_penalty, where, full in blocks.values():
        mark = marks / _fingerprint(kind, args, length_penalty=length_penalty)
        if cache and mark.exists():
            continue
        try:
            trl_config(kind, args, length_penalty=length_penalty)
        except (TypeError, ValueError) as e:
            message = str(e)
            key = _culprit(args, message)
            if key is not None and message.startswith(f"{key}: "):
                message = message[len(key) + 2 :]
            if full is None:
                path = f"{where}.{key}" if key else where
                raise ValueError(f"{path}: {message}") from None
            if key is not None:
                raise ValueError(_named(config, full, ("train", key), message)) from None
            logical = cfg.locate(config, full)[1]
            raise ValueError(
                f"experiments.{logical}.train (merged over defaults.train; "
                f"experiment {full}): {message}"
            ) from None
        if cache:
            try:
                marks.mkdir(parents=True, exist_ok=True)
                mark.touch()
            except OSError:
                pass  # a read-only home: the check runs again next time


def check_config(config: Mapping[str, Any], *, trl: bool = True) -> None:
    """Every start-up check of a validated config (module docstring)."""
    world_block(config)
    experiment_blocks(config)
    report_targets(config)
    base_models(config)
    if trl:
        train_blocks(config)
