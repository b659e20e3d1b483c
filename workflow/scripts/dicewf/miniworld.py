"""Tiny models with the paper backbones' real tokenizers, chat templates and architectures.

:func:`build_model` writes a folder laid out like a hub snapshot (``config.json``,
``model.safetensors``, ``generation_config.json``, tokenizer files) that transformers and vLLM load
by path, so sampling, scoring and training run on CPU with the token-level behaviour of the paper's
models:

* ``zephyr``: ``MistralForCausalLM``, Mistral-7B v0.1's SentencePiece vocabulary (32,000 tokens,
  ``<s>`` = 1 added by the tokenizer, ``</s>`` = 2), zephyr-7b-beta's chat template (``<|user|>``,
  ``<|assistant|>``, ``<|system|>`` blocks, each closed by ``</s>``). The vocabulary file ships in
  the ``mistral_common`` package.
* ``llama3``: ``LlamaForCausalLM``, Llama-3's tiktoken BPE (128,000 tokens plus 256 special ones:
  128000 ``<|begin_of_text|>``, added by the tokenizer and written by the template, 128001
  ``<|end_of_text|>`` = ``eos_token``, 128006/128007 the header tokens, 128009 ``<|eot_id|>`` which
  ends a turn), Llama-3's chat template, ``generation_config.eos_token_id`` [128001, 128009]. The
  BPE file ships in the ``llama-models`` package.

The weights are tiny (hidden size 64, 2 layers) with tied input/output embeddings (the real models
untie them; tied, the Llama-3 folder is 33 MB instead of 66 MB). A random model over a 32k/128k
vocabulary practically never samples its turn-end token, so every response would hit
``max_tokens``; the builder therefore fine-tunes it briefly (:data:`SFT_STEPS` steps of AdamW) on a
few seeded, templated conversations whose replies are a few dozen tokens long. ``role`` picks the
seed stream, so a ``policy`` and a ``reference`` of the same backbone differ (their implicit
rewards are not all zero) while the same (backbone, role, seed) gives the same tensors.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from .chat import render_conversation, render_prompts, turn_end_id
from .io import atomic_path

BACKBONES = ("zephyr", "llama3")
ROLES = ("policy", "reference")

# architecture shared by both backbones (grouped-query attention as in the real ones: 2 heads,
# 1 key/value head)
HIDDEN_SIZE = 64
NUM_LAYERS = 2
NUM_HEADS = 2
NUM_KV_HEADS = 1
HEAD_DIM = 32
INTERMEDIATE_SIZE = 128
MAX_POSITIONS = 2048

SFT_STEPS = 40
SFT_BATCH = 8
SFT_LR = 1e-2
SFT_CONVERSATIONS = 64

# zephyr-7b-beta's template, our own Jinja: every message is "<|role|>\n" + content + EOS + "\n";
# the generation prompt is "<|assistant|>\n". It writes no BOS (the tokenizer adds <s>).
ZEPHYR_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] in ['system', 'user', 'assistant'] %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
    "{% endfor %}"
)

# Llama-3's template, our own Jinja: BOS, then per message a role header, the stripped content
# and <|eot_id|>; the generation prompt is the assistant header.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{ message['content'] | trim }}{{ '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)

LLAMA3_NAMED = {
    128000: "<|begin_of_text|>",
    128001: "<|end_of_text|>",
    128006: "<|start_header_id|>",
    128007: "<|end_header_id|>",
    128009: "<|eot_id|>",
}
LLAMA3_BASE_VOCAB = 128000
LLAMA3_SPECIAL = 256
# Llama-3's pre-tokenizer split (the same as in the llama-models package)
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _package_file(package: str, *parts: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed; it ships the tokenizer "
            "file the mini models need (see requirements.txt)"
        )
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tokenizer file missing from package {package!r}")
    return path


def llama3_special_tokens() -> list[str]:
    """The 256 special tokens 128000..128255 in id order; the unnamed ones are reserved."""
    names, reserved = [], 0
    for token_id in range(LLAMA3_BASE_VOCAB, LLAMA3_BASE_VOCAB + LLAMA3_SPECIAL):
        if token_id in LLAMA3_NAMED:
            names.append(LLAMA3_NAMED[token_id])
        else:
            names.append(f"<|reserved_special_token_{reserved}|>")
            reserved += 1
    return names


def zephyr_tokenizer():
    """Mistral-7B v0.1's tokenizer with zephyr-7b-beta's chat template (pad = EOS, as zephyr)."""
    import shutil
    import tempfile

    from transformers import LlamaTokenizer

    source = _package_file("mistral_common", "data", "tokenizer.model.v1")
    # transformers converts a SentencePiece model found as tokenizer.model in a folder
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(source, Path(tmp, "tokenizer.model"))
        tok = LlamaTokenizer.from_pretrained(
            tmp,
            bos_token="<s>",
            eos_token="</s>",
            unk_token="<unk>",
            pad_token="</s>",
            add_bos_token=True,
            add_eos_token=False,
            legacy=True,
        )
    tok.chat_template = ZEPHYR_TEMPLATE
    tok.model_max_length = MAX_POSITIONS
    return tok


def llama3_tokenizer():
    """Llama-3's tokenizer: the tiktoken BPE converted to a fast tokenizer, its special tokens,
    a BOS added in front of every encoding (as the released tokenizer.json does), no pad token."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    source = _package_file("llama_models", "llama3", "tokenizer.model")
    specials = llama3_special_tokens()
    backend = TikTokenConverter(
        vocab_file=str(source), pattern=LLAMA3_PATTERN, extra_special_tokens=specials
    ).converted()
    bos = LLAMA3_NAMED[128000]
    backend.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, 128000)]
            ),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=LLAMA3_NAMED[128001],
        chat_template=LLAMA3_TEMPLATE,
        model_max_length=MAX_POSITIONS,
        clean_up_tokenization_spaces=True,
    )


def _config(backbone: str, tokenizer):
    from transformers import LlamaConfig, MistralConfig

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_KV_HEADS,
        head_dim=HEAD_DIM,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        torch_dtype="float32",
    )
    if backbone == "zephyr":
        # sliding_window off: Mistral v0.1's 4096 exceeds these models' positions anyway
        return MistralConfig(
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=2,
            rope_theta=10000.0,
            sliding_window=None,
            **common,
        )
    return LlamaConfig(bos_token_id=128000, eos_token_id=128001, rope_theta=500000.0, **common)


def _generation_eos(backbone: str) -> int | list[int]:
    return 2 if backbone == "zephyr" else [128001, 128009]


WORDS = [
    "the",
    "a",
    "model",
    "answer",
    "helps",
    "people",
    "with",
    "clear",
    "short",
    "useful",
    "steps",
    "first",
    "then",
    "check",
    "result",
    "good",
    "data",
    "plan",
    "list",
    "idea",
    "simple",
    "example",
    "because",
    "it",
    "is",
    "often",
    "best",
    "to",
    "keep",
    "each",
    "part",
    "small",
    "water",
    "light",
    "city",
    "music",
    "garden",
    "history",
    "science",
    "river",
    "book",
    "friend",
    "travel",
    "code",
    "question",
]
TOPICS = (
    "cooking",
    "the moon",
    "python lists",
    "a rainy day",
    "sleep",
    "trees",
    "budgeting",
    "chess",
    "the ocean",
    "learning French",
    "bicycles",
    "email etiquette",
)


def sft_conversations(rng: random.Random, n: int) -> list[list[dict[str, str]]]:
    """``n`` seeded one-turn conversations: prompts of 3..80 words, replies of 2..20 words."""
    convs = []
    for _ in range(n):
        topic = rng.choice(TOPICS)
        filler = " ".join(rng.choices(WORDS, k=rng.randint(0, 75)))
        prompt = f"Tell me about {topic}. {filler}".strip()
        reply = " ".join(rng.choices(WORDS, k=rng.randint(2, 20))).capitalize() + "."
        convs.append([{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}])
    return convs


def _fine_tune(model, tokenizer, convs, *, seed: int) -> list[float]:
    """A few steps of next-token training on the replies (and their turn-end token) of templated
    conversations; the losses returned. The output layer runs on the reply positions only, which
    keeps a step cheap over a 128k vocabulary."""
    import torch

    end = turn_end_id(tokenizer)
    seqs = []
    for conv in convs:
        full = tokenizer(render_conversation(tokenizer, conv))["input_ids"]
        start = len(tokenizer(render_prompts(tokenizer, [conv[0]["content"]])[0])["input_ids"])
        # the reply and its turn-end token; not what the template writes after it (zephyr: "\n")
        seqs.append((full[: full.index(end, start) + 1], start))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=SFT_LR, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(SFT_STEPS):
        batch = [seqs[i] for i in torch.randperm(len(seqs), generator=gen)[:SFT_BATCH].tolist()]
        width = max(len(full) for full, _ in batch)
        x = torch.full((len(batch), width), pad, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        rows, cols, targets = [], [], []
        for row, (full, start) in enumerate(batch):
            x[row, : len(full)] = torch.tensor(full)
            attn[row, : len(full)] = 1
            for t in range(start, len(full)):  # position t - 1 predicts reply token t
                rows.append(row)
                cols.append(t - 1)
                targets.append(full[t])
        hidden = model.model(input_ids=x, attention_mask=attn).last_hidden_state
        logits = model.lm_head(hidden[torch.tensor(rows), torch.tensor(cols)])
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(targets))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def build_model(
    backbone: str, out_dir: str | os.PathLike, *, role: str = "policy", seed: int = 0
) -> Path:
    """Write a tiny ``backbone`` model (``zephyr`` or ``llama3``) to ``out_dir``, atomically.

    ``role`` (``policy`` or ``reference``) and ``seed`` pick the initialisation and the order of
    the short fine-tuning that teaches the model to end its turns; see the module docstring.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    from .sampling import derive_seed

    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {list(BACKBONES)}")
    if role not in ROLES:
        raise ValueError(f"unknown model role {role!r}; expected one of {list(ROLES)}")
    tokenizer = zephyr_tokenizer() if backbone == "zephyr" else llama3_tokenizer()
    config = _config(backbone, tokenizer)
    stream = derive_seed(seed, backbone, role)
    torch.manual_seed(stream)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # the replies are the same for both roles (only the order and the start differ), so that
    # policy and reference stay close, like a DPO model and its SFT reference
    convs = sft_conversations(random.Random(derive_seed(seed, backbone)), SFT_CONVERSATIONS)
    _fine_tune(model, tokenizer, convs, seed=stream)
    eos = _generation_eos(backbone)
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=eos)
    out_dir = Path(out_dir)
    with atomic_path(out_dir, is_dir=True) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    return out_dir
