"""AlpacaEval 2 through the ``alpaca-eval`` package: LC win rate, raw win rate, mean length.

A model's responses to AlpacaEval's 805 instructions (generated elsewhere) are compared with the
reference outputs (gpt4_1106_preview for AlpacaEval 2) by the package's annotator,
``weighted_alpaca_eval_gpt4_turbo`` by default: the judge is asked which of two outputs, labelled
``m`` and ``M`` in a random order, is better, and the preference is read from the log-probabilities
of those two tokens. The package then fits its length-controlled GLM and reports the LC win rate
(``get_length_controlled_winrate``). :func:`annotate` calls ``alpaca_eval.evaluate`` with data
frames and returns the numbers.

The judge endpoint. The annotator config names a judge model and the package builds its OpenAI
clients from a client-config YAML (``client_config_path``). :func:`annotate` copies the chosen
annotator config into a temporary folder with our settings applied: ``model`` replaces the
config's ``model_name``, and a client config points at ``base_url`` (None: OpenAI's API). That
client config names :class:`EnvKeyOpenAI`, which reads the key from the environment variable
``api_key_env`` when the package builds a client, so the key is never written to any file
(``api_key_env: null``: a local server without a key). Chat formatting is forced
(``requires_chatml``) because the package would otherwise send model names containing "instruct"
to the legacy completions endpoint.

The LC GLM needs the package's ``df_gamed.csv`` (instruction difficulties and the annotations of
two length-gamed baselines) from the hub dataset ``tatsu-lab/alpaca_eval``. :func:`annotate`
resolves it before any annotation is paid for (from ``hf_cache_dir`` when given, else the default
Hugging Face cache, downloading if allowed); :func:`prefetch_lc_data` fetches it ahead of time for
jobs without internet access. The GLM matches rows to instruction difficulties by position, so the
evaluation set must hold the 805 instructions in AlpacaEval's order (results are reported in the
evaluation set's order). The GLM's per-model weights are not saved (the package would write them
into its own install folder).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .io import DatasetError, atomic_path, check_frame

__all__ = [
    "ANNOTATOR_KEYS",
    "DEFAULT_ANNOTATOR",
    "DEFAULT_API_KEY_ENV",
    "EVAL_SET_COLUMNS",
    "LC_DATA_FILE",
    "LC_DATA_REPO",
    "EnvKeyOpenAI",
    "annotate",
    "prefetch_lc_data",
]

log = logging.getLogger(__name__)

# the schema's defaults of eval.alpaca_eval (tests/test_alpacaeval.py), for callers with a
# partial block
DEFAULT_ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
LC_DATA_REPO = "tatsu-lab/alpaca_eval"
LC_DATA_FILE = "df_gamed.csv"
EVAL_SET_COLUMNS = {
    "prompt_id": "str",
    "prompt": "str",
    "reference": "str",
    "reference_generator": "str",
    "dataset": "str",
}
#: Keys of the ``annotator`` mapping understood by :func:`annotate`.
ANNOTATOR_KEYS = frozenset(
    {
        "annotators_config",
        "base_url",
        "model",
        "api_key_env",
        "concurrency",
        "timeout",
        "max_retries",
        "hf_cache_dir",
        "caching_path",
    }
)
_PLACEHOLDER_KEY = "EMPTY"


def _openai_class() -> type:
    import openai

    return openai.OpenAI


class EnvKeyOpenAI(_openai_class()):  # type: ignore[misc]
    """``openai.OpenAI`` taking the name of the environment variable that holds the key.

    The package instantiates the class named in the client config with the config's entries, so
    the config carries ``api_key_env`` (a name) rather than the key. ``api_key_env=None`` sends a
    placeholder key (a local server started without one).
    """

    def __init__(self, *, api_key_env: str | None = DEFAULT_API_KEY_ENV, **kwargs: Any) -> None:
        if api_key_env is None:
            key = _PLACEHOLDER_KEY
        else:
            key = os.environ.get(api_key_env, "")
            if not key:
                where = kwargs.get("base_url") or "OpenAI's API"
                raise RuntimeError(
                    f"environment variable {api_key_env} is not set (or empty); the AlpacaEval "
                    f"annotator at {where} needs an API key there. Set it, or set "
                    "api_key_env: null for a local server that needs no key."
                )
        super().__init__(api_key=key, **kwargs)


def _alpaca_eval() -> Any:
    try:
        import alpaca_eval
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "AlpacaEval needs the alpaca-eval package (pip install alpaca-eval==0.6.6)"
        ) from exc
    return alpaca_eval


@contextlib.contextmanager
def _hf_cache(cache_dir: str | os.PathLike | None) -> Iterator[None]:
    """Point the package's hub downloads at ``cache_dir`` for the duration (None: unchanged)."""
    from alpaca_eval import constants

    old = constants.DEFAULT_CACHE_DIR
    if cache_dir is not None:
        constants.DEFAULT_CACHE_DIR = os.fspath(cache_dir)
    try:
        yield
    finally:
        constants.DEFAULT_CACHE_DIR = old


def prefetch_lc_data(cache_dir: str | os.PathLike | None = None) -> Path:
    """Fetch ``df_gamed.csv`` (for the LC GLM) into ``cache_dir`` (None: the default HF cache).

    Offline (``HF_HUB_OFFLINE=1``) this only looks it up. Returns the local path; raises
    FileNotFoundError, saying how to fetch it, if it cannot be had.
    """
    from huggingface_hub import hf_hub_download

    try:
        return Path(
            hf_hub_download(
                repo_id=LC_DATA_REPO,
                filename=LC_DATA_FILE,
                repo_type="dataset",
                cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            )
        )
    except Exception as exc:
        raise FileNotFoundError(
            f"the length-controlled win rate needs {LC_DATA_FILE} from the hub dataset "
            f"{LC_DATA_REPO}, which could not be found or downloaded into "
            f"{cache_dir or 'the default Hugging Face cache'} ({type(exc).__name__}: {exc}). "
            "Fetch it where there is internet access with dicewf.alpacaeval.prefetch_lc_data "
            "(same cache_dir) and pass that folder as hf_cache_dir."
        ) from exc


def _annotator_config_path(name_or_path: str | os.PathLike) -> Path:
    """The configs.yaml of an annotator: a path (file or folder) or a name the package ships."""
    from alpaca_eval import constants

    candidate = Path(name_or_path)
    if not candidate.exists():
        candidate = constants.EVALUATORS_CONFIG_DIR / str(name_or_path)
    if candidate.is_dir():
        candidate = candidate / "configs.yaml"
    if not candidate.is_file():
        raise FileNotFoundError(
            f"annotators_config {os.fspath(name_or_path)!r} is neither a configs.yaml (or its "
            f"folder) nor an annotator of alpaca-eval (looked in {constants.EVALUATORS_CONFIG_DIR})"
        )
    return candidate


def _write_annotator_config(folder: Path, annotator: Mapping[str, Any]) -> Path:
    """Write the annotator config with our judge settings into ``folder``; return its path."""
    from alpaca_eval import constants

    source = _annotator_config_path(annotator.get("annotators_config", DEFAULT_ANNOTATOR))
    configs = yaml.safe_load(source.read_text())
    if not isinstance(configs, dict) or not configs:
        raise ValueError(f"{source}: not an annotator config (expected a mapping of annotators)")

    client = {
        "client_class": f"{__name__}.EnvKeyOpenAI",
        "api_key_env": annotator.get("api_key_env", DEFAULT_API_KEY_ENV),
    }
    for key in ("base_url", "timeout", "max_retries"):
        if annotator.get(key) is not None:
            client[key] = annotator[key]
    folder.mkdir(parents=True, exist_ok=True)
    client_path = folder / "client_configs.yaml"
    client_path.write_text(yaml.safe_dump({"default": [client]}, sort_keys=True))

    for name, cfg in configs.items():
        if cfg.get("fn_completions") != "openai_completions":
            raise ValueError(
                f"{source}: annotator {name!r} uses {cfg.get('fn_completions')!r}; "
                "only openai_completions annotators can be pointed at an endpoint"
            )
        template = Path(cfg["prompt_template"])
        if not template.is_absolute():  # it is relative to the package's evaluators_configs
            base = (
                source.parent.parent
                if source.parent.parent.joinpath(template).is_file()
                else constants.EVALUATORS_CONFIG_DIR
            )
            template = base / template
        if not template.is_file():
            raise FileNotFoundError(f"{source}: prompt template {template} not found")
        cfg["prompt_template"] = str(template)
        kwargs = dict(cfg.get("completions_kwargs") or {})
        if annotator.get("model"):
            kwargs["model_name"] = annotator["model"]
        kwargs["client_config_path"] = str(client_path)
        kwargs["requires_chatml"] = True
        if annotator.get("concurrency"):
            kwargs["num_procs"] = int(annotator["concurrency"])
        cfg["completions_kwargs"] = kwargs

    # the package names the annotator after the config's folder: keep the original name
    out = folder / source.parent.name / "configs.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(configs, sort_keys=False))
    return out


def _frames(
    responses: pd.DataFrame, eval_set: pd.DataFrame, model_name: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Model and reference outputs in the package's format, in the evaluation set's order."""
    check_frame(eval_set, EVAL_SET_COLUMNS, "eval_set")
    check_frame(responses, {"prompt_id": "str", "prompt": "str", "response": "str"}, "responses")
    for name, df in (("eval_set", eval_set), ("responses", responses)):
        dup = df["prompt_id"][df["prompt_id"].duplicated()].unique().tolist()
        if dup:
            raise DatasetError(
                f"{name}: more than one row for prompt_id {dup[:5]} "
                f"({len(dup)} in all); expected one per instruction"
            )
    merged = eval_set.merge(
        responses[["prompt_id", "prompt", "response"]],
        on="prompt_id",
        how="left",
        suffixes=("", "_response"),
        validate="1:1",
    )
    missing = merged.loc[merged["response"].isna(), "prompt_id"].tolist()
    if missing:
        raise DatasetError(
            f"responses: no response for prompt_id {missing[:5]} "
            f"({len(missing)} of {len(eval_set)} instructions)"
        )
    differ = merged.loc[merged["prompt"] != merged["prompt_response"], "prompt_id"].tolist()
    if differ:
        raise DatasetError(
            f"responses: prompt text differs from the evaluation set's for "
            f"prompt_id {differ[:5]} ({len(differ)} in all)"
        )
    model = pd.DataFrame(
        {
            "instruction": merged["prompt"],
            "output": merged["response"],
            "generator": model_name,
            "dataset": merged["dataset"],
        }
    )
    reference = pd.DataFrame(
        {
            "instruction": merged["prompt"],
            "output": merged["reference"],
            "generator": merged["reference_generator"],
            "dataset": merged["dataset"],
        }
    )
    return model, reference


def annotate(
    responses: pd.DataFrame,
    eval_set: pd.DataFrame,
    model_name: str,
    annotator: Mapping[str, Any],
    out_dir: str | os.PathLike,
) -> dict[str, Any]:
    """Annotate ``responses`` against ``eval_set``'s references with alpaca-eval; return metrics.

    ``responses`` has ``prompt_id``, ``prompt`` and one ``response`` per instruction;
    ``eval_set`` has ``prompt_id``, ``prompt``, ``reference``, ``reference_generator`` and
    ``dataset``. ``annotator`` takes the keys in :data:`ANNOTATOR_KEYS`: ``annotators_config``
    (a name alpaca-eval ships or a path; default :data:`DEFAULT_ANNOTATOR`), ``base_url`` (an
    OpenAI-compatible ``/v1`` address; None: OpenAI), ``model`` (the judge model; None: the
    config's), ``api_key_env`` (default ``OPENAI_API_KEY``; None: no key), ``concurrency``,
    ``timeout``, ``max_retries`` (the OpenAI client's), ``hf_cache_dir`` (where
    ``df_gamed.csv`` is cached) and ``caching_path`` (a JSON file where the package keeps
    annotations across runs; None: none).

    Writes ``annotations.json`` and ``leaderboard.csv`` (the package's outputs) into ``out_dir``,
    atomically. Returns percentages ``lc_win_rate``, ``lc_standard_error``, ``win_rate``,
    ``standard_error``, ``discrete_win_rate``, counts ``n``, ``n_wins``, ``n_wins_base``,
    ``n_draws``, ``mean_len_model`` (characters), and the ``annotator`` and ``judge_model`` used.
    """
    if "api_key" in annotator:
        raise ValueError(
            "annotator: API keys are not read from configuration; put the key in an "
            "environment variable and name it with api_key_env"
        )
    unknown = sorted(set(annotator) - ANNOTATOR_KEYS)
    if unknown:
        raise ValueError(
            f"annotator: unknown key(s) {unknown}; expected some of {sorted(ANNOTATOR_KEYS)}"
        )
    alpaca_eval = _alpaca_eval()
    model_outputs, reference_outputs = _frames(responses, eval_set, model_name)
    hf_cache_dir = annotator.get("hf_cache_dir")
    lc_data = prefetch_lc_data(hf_cache_dir)  # fail before paying for annotations
    n_known = pd.read_csv(lc_data, usecols=["index"])["index"].nunique()
    log.info("LC GLM data: %s (%d instructions)", lc_data, n_known)
    if len(model_outputs) > n_known:
        raise ValueError(
            f"eval_set has {len(model_outputs)} instructions but {LC_DATA_FILE} knows "
            f"the difficulty of {n_known}; the LC GLM matches them by position"
        )
    if len(model_outputs) < n_known:
        log.warning(
            "eval_set has %d of AlpacaEval's %d instructions: the LC GLM matches "
            "instruction difficulties by position, so the LC win rate of a subset is "
            "not AlpacaEval's",
            len(model_outputs),
            n_known,
        )

    with (
        tempfile.TemporaryDirectory(prefix="alpaca_eval-") as tmp,
        atomic_path(out_dir, is_dir=True) as out,
        _hf_cache(hf_cache_dir),
    ):
        config_path = _write_annotator_config(Path(tmp), annotator)
        configs = yaml.safe_load(config_path.read_text())
        judge_models = sorted({c["completions_kwargs"]["model_name"] for c in configs.values()})
        log.info(
            "AlpacaEval: %d instructions, annotator %s, judge %s at %s",
            len(model_outputs),
            config_path.parent.name,
            judge_models,
            annotator.get("base_url") or "OpenAI",
        )
        leaderboard, annotations = alpaca_eval.evaluate(
            model_outputs=model_outputs,
            reference_outputs=reference_outputs,
            annotators_config=str(config_path),
            name=model_name,
            output_path=str(out),
            precomputed_leaderboard=None,
            is_return_instead_of_print=True,
            is_cache_leaderboard=False,
            fn_metric="get_length_controlled_winrate",
            metric_kwargs={"save_weights_dir": None},
            caching_path=annotator.get("caching_path"),
        )
    row = leaderboard.loc[model_name]
    preference = pd.Series([a.get("preference") for a in annotations], dtype=float)
    n_missing = int(preference.isna().sum())
    if n_missing:
        log.warning(
            "AlpacaEval: %d of %d instructions have no annotation", n_missing, len(preference)
        )

    def num(key: str) -> float | None:
        value = row.get(key)
        return (
            None
            if value is None or (isinstance(value, float) and math.isnan(value))
            else float(value)
        )

    return {
        "lc_win_rate": num("length_controlled_winrate"),
        "lc_standard_error": num("lc_standard_error"),
        "win_rate": num("win_rate"),
        "standard_error": num("standard_error"),
        "discrete_win_rate": num("discrete_win_rate"),
        "n": int(row["n_total"]),
        "n_wins": int(row["n_wins"]),
        "n_wins_base": int(row["n_wins_base"]),
        "n_draws": int(row["n_draws"]),
        "n_missing": n_missing,
        "mean_len_model": float(model_outputs["output"].str.len().mean()),
        "annotator": config_path.parent.name,
        "judge_model": judge_models[0] if len(judge_models) == 1 else judge_models,
    }
