"""Sampling K responses per prompt: vLLM's offline API, or transformers ``generate``.

Both backends take the same parameters, named as in vLLM's ``SamplingParams`` (``n``,
``temperature``, ``top_p``, ``max_tokens``, ``seed``, ``stop_token_ids``) and get the same prompt
token ids (the chat template rendered, then tokenized as TRL tokenizes it: exactly one BOS, see
:mod:`dicewf.chat`). A response ends at the first of :func:`dicewf.chat.stop_token_ids` (the chat
template's turn-end token, e.g. Llama-3's ``<|eot_id|>``, the model's
``generation_config.eos_token_id``, the tokenizer's EOS, and the configured ``stop_token_ids``),
with both backends; ``finish_reason`` is ``stop`` then, ``length`` at ``max_tokens``. Seeds derive
from (global seed, prompt id, sample index) through a stable hash, so a prompt's samples do not
depend on how the prompt set is batched or sharded:

* vLLM: every (prompt, sample) is its own request with ``n=1`` and its own seed. (One
  ``SamplingParams(seed=s)`` shared by all prompts would give every prompt the same random stream,
  and vLLM's child seeds for ``n>1`` are ``seed + index``, which overlap across prompts.)
* transformers: one ``generate`` call per prompt draws its K samples after
  ``torch.manual_seed(prompt seed)``.

``temperature == 0`` means greedy decoding (then ``n`` must be 1).

Before the model is loaded, every prompt is checked against the model's context, the same way
for both backends (:func:`new_token_budgets`): a prompt with no room for a new token is an error
naming its prompt id; a prompt that leaves fewer than ``max_tokens`` gets the tokens left (its
response ends ``length``, as vLLM does by itself), with a warning that counts them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from .chat import context_limits
from .io import SHOWN, DatasetError, check_frame
from .seeds import derive_seed

log = logging.getLogger(__name__)

BACKENDS = ("auto", "vllm", "transformers")


@dataclass(frozen=True)
class SamplingSpec:
    """vLLM ``SamplingParams`` names; the same meaning for both backends."""

    n: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 64
    seed: int = 0
    # token ids that end a response besides the model's own (see dicewf.chat.stop_token_ids)
    stop_token_ids: tuple[int, ...] = ()

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"sampling.n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"sampling.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"sampling.top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"sampling.max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature == 0 and self.n != 1:
            raise ValueError("greedy decoding (temperature 0) gives one response: set n to 1")
        if any(not isinstance(i, int) or i < 0 for i in self.stop_token_ids):
            raise ValueError(
                f"sampling.stop_token_ids must be token ids (integers >= 0), got "
                f"{list(self.stop_token_ids)}"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SamplingSpec:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown sampling key(s) {sorted(unknown)}")
        d = dict(d)
        if "stop_token_ids" in d:
            d["stop_token_ids"] = tuple(d["stop_token_ids"] or ())
        return cls(**d)


def resolve_backend(backend: str) -> str:
    """``auto`` picks vLLM when it imports, else transformers."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown sampling backend {backend!r}; expected one of {BACKENDS}")
    if backend != "auto":
        return backend
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # noqa: BLE001  (ImportError, or a broken install)
        log.info("vllm is not usable here (%s); sampling with transformers", exc)
        return "transformers"
    return "vllm"


def prompt_token_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Chat-template each prompt and tokenize it as TRL does (its special tokens: one BOS)."""
    from .chat import render_prompts

    return [tokenizer(text)["input_ids"] for text in render_prompts(tokenizer, prompts)]


def new_token_budgets(
    prompt_ids: Sequence[str],
    token_ids: Sequence[Sequence[int]],
    max_tokens: int,
    limits: Mapping[str, int],
    source: str = "<prompts>",
) -> list[int]:
    """How many new tokens each prompt may get within the context (see :func:`context_limits`).

    A prompt with no room for a single new token is an error naming ``source``, the first
    prompt ids, their token counts and how many prompts are affected (vLLM refuses such a prompt
    and fails the whole job; transformers would generate past the model's positions). A prompt
    that fits but leaves fewer than ``max_tokens`` gets what is left: its response is cut at
    the context with ``finish_reason`` ``length`` (as vLLM does by itself), and the number of
    such prompts is logged as a warning. Both backends use this one check.
    """
    if not limits:
        return [max_tokens] * len(token_ids)
    context = min(limits.values())
    lengths = [len(t) for t in token_ids]
    over = [(pid, n) for pid, n in zip(prompt_ids, lengths, strict=True) if n >= context]
    if over:
        shown = dict(over[:SHOWN])
        raise DatasetError(
            f"{source}: {len(over)} of {len(lengths)} prompt(s) do not fit the model's context "
            f"of {context} tokens ({limits}) with room for a new token; prompt ids and their "
            f"token counts (chat template applied): {shown}. Shorten them or leave them out of "
            "the prompt set (LLM-as-a-Judge prompts: lower score.judge.max_prompt_tokens)"
        )
    budgets = [min(max_tokens, context - n) for n in lengths]
    capped = sum(b < max_tokens for b in budgets)
    if capped:
        log.warning(
            "%s: %d of %d prompts leave fewer than max_tokens=%d new tokens in the "
            "context of %d tokens (%s); their responses stop at the context "
            "(finish_reason 'length'); the longest prompt has %d tokens",
            source,
            capped,
            len(lengths),
            max_tokens,
            context,
            limits,
            max(lengths),
        )
    return budgets


def model_stop_token_ids(model: str | os.PathLike, tokenizer, spec: SamplingSpec) -> list[int]:
    """:func:`dicewf.chat.stop_token_ids` of the model folder ``model`` (its generation config,
    when it has one) plus ``spec.stop_token_ids``."""
    from transformers import GenerationConfig

    from .chat import stop_token_ids

    try:
        generation_eos = GenerationConfig.from_pretrained(model).eos_token_id
    except OSError:  # no generation_config.json
        generation_eos = None
    return stop_token_ids(tokenizer, generation_eos, spec.stop_token_ids)


def _rows(prompts: pd.DataFrame, per_prompt: list[list[tuple[str, str, int]]]) -> pd.DataFrame:
    rows = []
    for (pid, prompt), outs in zip(
        prompts[["prompt_id", "prompt"]].itertuples(index=False), per_prompt, strict=True
    ):
        for k, (text, finish, seed) in enumerate(outs):
            rows.append((pid, prompt, k, text, finish, seed))
    df = pd.DataFrame(
        rows, columns=["prompt_id", "prompt", "sample_idx", "response", "finish_reason", "seed"]
    )
    return df.astype({"sample_idx": "int64", "seed": "int64"})


def sample_vllm(
    model: str | os.PathLike,
    prompts: pd.DataFrame,
    spec: SamplingSpec,
    engine: Mapping[str, Any] | None = None,
    source: str = "<prompts>",
) -> pd.DataFrame:
    """Sample with vLLM's offline ``LLM.generate``; ``engine`` holds ``LLM(...)`` arguments."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    tokenizer = AutoTokenizer.from_pretrained(model)
    ids = prompt_token_ids(tokenizer, prompts["prompt"].tolist())
    budgets = new_token_budgets(
        prompts["prompt_id"].tolist(),
        ids,
        spec.max_tokens,
        context_limits(model, tokenizer, engine),
        source,
    )
    stops = model_stop_token_ids(model, tokenizer, spec)
    llm = LLM(model=str(model), seed=spec.seed, **dict(engine or {}))
    requests, params, keys = [], [], []
    for pid, toks, budget in zip(prompts["prompt_id"], ids, budgets, strict=True):
        for k in range(spec.n):
            seed = derive_seed(spec.seed, pid, k)
            requests.append(TokensPrompt(prompt_token_ids=toks))
            params.append(
                SamplingParams(
                    n=1,
                    temperature=spec.temperature,
                    top_p=spec.top_p,
                    max_tokens=budget,
                    seed=seed,
                    stop_token_ids=stops,
                )
            )
            keys.append(seed)
    outputs = llm.generate(requests, params, use_tqdm=True)
    per_prompt: list[list[tuple[str, str, int]]] = []
    for i, out in enumerate(outputs):
        if i % spec.n == 0:
            per_prompt.append([])
        completion = out.outputs[0]
        finish = "length" if completion.finish_reason == "length" else "stop"
        per_prompt[-1].append((completion.text, finish, keys[i]))
    return _rows(prompts, per_prompt)


def sample_transformers(
    model: str | os.PathLike, prompts: pd.DataFrame, spec: SamplingSpec, source: str = "<prompts>"
) -> pd.DataFrame:
    """Sample with transformers ``generate``, one call per prompt (K sequences each)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    ids = prompt_token_ids(tokenizer, prompts["prompt"].tolist())
    budgets = new_token_budgets(
        prompts["prompt_id"].tolist(),
        ids,
        spec.max_tokens,
        context_limits(model, tokenizer),
        source,
    )
    lm = AutoModelForCausalLM.from_pretrained(model)
    lm.eval()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lm.to(device)
    stops = model_stop_token_ids(model, tokenizer, spec)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    greedy = spec.temperature == 0
    per_prompt = []
    for pid, toks, budget in tqdm(
        list(zip(prompts["prompt_id"], ids, budgets, strict=True)), desc="sampling", mininterval=5
    ):
        seed = derive_seed(spec.seed, pid)
        torch.manual_seed(seed)
        x = torch.tensor([toks], device=device)
        kwargs: dict[str, Any] = {
            "do_sample": not greedy,
            "max_new_tokens": budget,
            "num_return_sequences": spec.n,
            "eos_token_id": stops,
            "pad_token_id": pad,
        }
        if not greedy:
            kwargs.update(temperature=spec.temperature, top_p=spec.top_p, top_k=0)
        with torch.no_grad():
            gen = lm.generate(x, attention_mask=torch.ones_like(x), **kwargs)
        outs = []
        for row in gen[:, len(toks) :].tolist():
            finish = "length"
            end = next((i for i, tok in enumerate(row) if tok in stops), None)
            if end is not None:
                row = row[:end]
                finish = "stop"
            outs.append((tokenizer.decode(row, skip_special_tokens=True), finish, seed))
        per_prompt.append(outs)
    return _rows(prompts, per_prompt)


def sample(
    model: str | os.PathLike,
    prompts: pd.DataFrame,
    spec: SamplingSpec | Mapping,
    backend: str = "auto",
    engine: Mapping[str, Any] | None = None,
    source: str = "<prompts>",
) -> pd.DataFrame:
    """K responses per prompt from ``model``: columns of :data:`dicewf.io.SCHEMAS` ``samples``."""
    if not isinstance(spec, SamplingSpec):
        spec = SamplingSpec.from_dict(spec)
    check_frame(prompts, "prompts", source)
    dupes = prompts["prompt_id"][prompts["prompt_id"].duplicated()]
    if len(dupes):
        raise ValueError(f"{source}: duplicate prompt_id values {dupes.tolist()[:5]}")
    chosen = resolve_backend(backend)
    log.info("sampling %d prompts x %d with %s: %s", len(prompts), spec.n, chosen, asdict(spec))
    if chosen == "vllm":
        return sample_vllm(model, prompts, spec, engine, source=str(source))
    return sample_transformers(model, prompts, spec, source=str(source))


def sample_sets(
    model: str | os.PathLike,
    sets: Mapping[str, pd.DataFrame],
    spec: SamplingSpec | Mapping,
    backend: str = "auto",
    engine: Mapping[str, Any] | None = None,
) -> dict[str, pd.DataFrame]:
    """:func:`sample` over several prompt sets in one run (one model load), split back per set.

    Prompt ids are namespaced ``{set}/{prompt_id}`` for the run, so two sets may share ids; the
    seeds derive from the namespaced ids. Each returned frame has the set's own ids, in its
    order.
    """
    for name in sets:
        if "/" in name:
            raise ValueError(f"prompt set name {name!r} must not contain '/'")
    frames = []
    for name, prompts in sets.items():
        check_frame(prompts, "prompts", name)
        frames.append(
            prompts[["prompt_id", "prompt"]].assign(prompt_id=name + "/" + prompts["prompt_id"])
        )
    responses = sample(
        model,
        pd.concat(frames, ignore_index=True),
        spec,
        backend=backend,
        engine=engine,
        source=", ".join(sets),
    )
    owner = responses["prompt_id"].str.split("/", n=1).str[0]
    out = {}
    for name in sets:
        mine = responses[owner == name]
        out[name] = mine.assign(prompt_id=mine["prompt_id"].str.slice(len(name) + 1)).reset_index(
            drop=True
        )
    return out
