"""DICE-shaped benchmark inputs: a randomly initialised Llama of Llama-3.2-1B's shape, and
prompts and responses of DICE's lengths, for the GPU figures of ``scoring_throughput.py`` and
``ref_reuse.py`` (``benchmarks/gpu_figures.sh``).

Throughput and step times depend on a model's shape and on sequence lengths, not on its weights
or on what the text says, so no released weights are needed: the model is Llama-3.2-1B's
published architecture with random weights and Llama-3's real tokenizer (built here from the
``llama-models`` wheel by :func:`dicewf.miniworld.llama3_tokenizer`, or read from a folder).
Its rotary scaling is left out: it changes no FLOP count. The texts are runs of words that
Llama-3's tokenizer encodes as one token each (each after a space), so a prompt of 200 words is
200 tokens before the chat template's. DICE's lengths (Section 5.1, UltraFeedback prompts and
Zephyr/Llama-3 responses): a prompt of about 200 tokens and a response of 300 to 1,500.

Run from the repo root, to write a model folder:

    python benchmarks/dice_shaped.py --out /tmp/llama-1b --dtype bfloat16
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))

# Llama-3.2-1B's config.json (meta-llama/Llama-3.2-1B); the vocabulary is the tokenizer's length
LLAMA_1B = dict(
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=64,
    rope_theta=500000.0,
    max_position_embeddings=131072,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
)
# the same architecture at a size a CPU test builds in a second
TINY = dict(
    LLAMA_1B,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
)
SHAPES = {"llama-1b": LLAMA_1B, "tiny": TINY}
PROMPT_TOKENS = 200
RESPONSE_TOKENS = (300, 1500)
WORD = re.compile(r"[a-z]{3,10}")


def build_model(
    out: Path,
    *,
    shape: str = "llama-1b",
    dtype: str = "bfloat16",
    tokenizer: Path | None = None,
    seed: int = 0,
) -> Path:
    """Write a randomly initialised Llama of ``shape`` with Llama-3's tokenizer (the folder
    ``tokenizer``, else built from the llama-models wheel) to ``out``; on the GPU when there is
    one, where a 1B model initialises in seconds."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if tokenizer is not None:
        tok = AutoTokenizer.from_pretrained(tokenizer)
    else:
        from dicewf.miniworld import llama3_tokenizer

        tok = llama3_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **SHAPES[shape],
    )
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def one_token_words(tokenizer) -> list[str]:
    """Lower-case words of 3-10 letters that ``tokenizer`` encodes, after a space, as one token,
    sorted; a space-separated run of them is one token a word."""
    words = []
    for token in tokenizer.get_vocab():
        text = tokenizer.convert_tokens_to_string([token])
        if text.startswith(" ") and WORD.fullmatch(text[1:]):
            words.append(text[1:])
    words = sorted(set(words))
    # keep those that round-trip (a byte-level BPE may merge across what the vocabulary splits)
    ids = tokenizer([" " + w for w in words], add_special_tokens=False)["input_ids"]
    return [w for w, i in zip(words, ids) if len(i) == 1]


def texts(
    tokenizer,
    n: int,
    *,
    seed: int,
    prompt_tokens: int = PROMPT_TOKENS,
    response_tokens: tuple[int, int] = RESPONSE_TOKENS,
    responses_per_prompt: int = 1,
) -> tuple[list[str], list[list[str]]]:
    """``n`` prompts of ``prompt_tokens`` words and, for each, ``responses_per_prompt``
    responses of a length drawn uniformly from ``response_tokens`` (inclusive), each word one
    token of ``tokenizer``."""
    vocab = one_token_words(tokenizer)
    if len(vocab) < 100:
        raise ValueError(
            f"the tokenizer has {len(vocab)} one-token words; DICE-shaped texts need 100"
        )
    rng = np.random.default_rng(seed)
    low, high = response_tokens

    def run(k: int) -> str:  # each word after a space: one token each, the first one too
        return "".join(" " + vocab[i] for i in rng.integers(len(vocab), size=k))

    prompts = [run(prompt_tokens) for _ in range(n)]
    responses = [
        [run(int(rng.integers(low, high + 1))) for _ in range(responses_per_prompt)]
        for _ in range(n)
    ]
    return prompts, responses


def pairs(tokenizer, n: int, *, seed: int):
    """A pairs frame (``prompt_id``, ``prompt``, ``chosen``, ``rejected``) of ``n`` DICE-shaped
    pairs."""
    import pandas as pd

    prompts, responses = texts(tokenizer, n, seed=seed, responses_per_prompt=2)
    return pd.DataFrame(
        {
            "prompt_id": [f"p{i}" for i in range(n)],
            "prompt": prompts,
            "chosen": [r[0] for r in responses],
            "rejected": [r[1] for r in responses],
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-1b")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer folder (default: Llama-3's)")
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args()
    build_model(
        opts.out, shape=opts.shape, dtype=opts.dtype, tokenizer=opts.tokenizer, seed=opts.seed
    )
    print(f"wrote {opts.out}")


if __name__ == "__main__":
    main()
