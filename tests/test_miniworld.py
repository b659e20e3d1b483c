"""The mini models: the paper backbones' real tokenizers, chat templates and architectures, tiny.

Tokenizer tests are fast (a tokenizer builds in seconds); tests on built models are slow (a build
fine-tunes for about 10 s here) and share the session fixture ``mini_models``.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
from dicewf import chat, miniworld

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi there"},
]


@pytest.fixture(scope="module")
def zephyr_tok():
    return miniworld.zephyr_tokenizer()


@pytest.fixture(scope="module")
def llama3_tok():
    return miniworld.llama3_tokenizer()


def test_zephyr_tokenizer_is_mistral_v01(zephyr_tok):
    tok = zephyr_tok
    assert len(tok) == 32000
    assert tok("Hello world", add_special_tokens=False)["input_ids"] == [22557, 1526]
    assert tok("Hello world")["input_ids"] == [1, 22557, 1526]
    assert (tok.bos_token, tok.bos_token_id) == ("<s>", 1)
    assert (tok.eos_token, tok.eos_token_id) == ("</s>", 2)
    assert tok.unk_token_id == 0


def test_llama3_tokenizer_ids(llama3_tok):
    tok = llama3_tok
    assert len(tok) == 128256
    assert tok("Hello world", add_special_tokens=False)["input_ids"] == [9906, 1917]
    assert tok("Hello world")["input_ids"] == [128000, 9906, 1917]
    assert tok.bos_token_id == 128000 and tok.eos_token_id == 128001
    ids = {
        t: tok.convert_tokens_to_ids(t)
        for t in (
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<|reserved_special_token_0|>",
            "<|reserved_special_token_250|>",
        )
    }
    assert ids == {
        "<|start_header_id|>": 128006,
        "<|end_header_id|>": 128007,
        "<|eot_id|>": 128009,
        "<|reserved_special_token_0|>": 128002,
        "<|reserved_special_token_250|>": 128255,
    }
    # special tokens are matched whole in text, never split into pieces
    assert tok("<|eot_id|>x", add_special_tokens=False)["input_ids"][0] == 128009


def test_zephyr_chat_template_renders_as_published(zephyr_tok):
    text = zephyr_tok.apply_chat_template(CONVERSATION, tokenize=False)
    assert text == "<|system|>\nBe brief.</s>\n<|user|>\nHello</s>\n<|assistant|>\nHi there</s>\n"
    prompt = zephyr_tok.apply_chat_template(
        CONVERSATION[:2], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<|system|>\nBe brief.</s>\n<|user|>\nHello</s>\n<|assistant|>\n"


def test_llama3_chat_template_renders_as_published(llama3_tok):
    text = llama3_tok.apply_chat_template(CONVERSATION, tokenize=False)
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>"
    )
    prompt = llama3_tok.apply_chat_template(
        [{"role": "user", "content": " Hello \n"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_unknown_backbone_or_role_is_named(tmp_path):
    with pytest.raises(ValueError, match="backbone 'gpt2'"):
        miniworld.build_model("gpt2", tmp_path / "m")
    with pytest.raises(ValueError, match="role 'judge'"):
        miniworld.build_model("zephyr", tmp_path / "m", role="judge")
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "backbone, arch, vocab, eos",
    [
        ("zephyr", "MistralForCausalLM", 32000, 2),
        ("llama3", "LlamaForCausalLM", 128256, [128001, 128009]),
    ],
)
def test_built_folder_loads_like_a_hub_snapshot(mini_models, backbone, arch, vocab, eos):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    path = mini_models[(backbone, "policy")]
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    } <= {p.name for p in path.iterdir()}
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # nothing half-written
    config = AutoConfig.from_pretrained(path)
    assert config.architectures == [arch] and config.vocab_size == vocab
    assert config.max_position_embeddings >= 2048
    assert type(AutoModelForCausalLM.from_pretrained(path)).__name__ == arch
    assert GenerationConfig.from_pretrained(path).eos_token_id == eos
    assert json.loads((path / "generation_config.json").read_text())["eos_token_id"] == eos
    tok = AutoTokenizer.from_pretrained(path)
    assert len(tok) == vocab
    assert chat.turn_end_token(tok) == ("</s>" if backbone == "zephyr" else "<|eot_id|>")


@pytest.mark.slow
@pytest.mark.parametrize("backbone", miniworld.BACKBONES)
def test_policy_and_reference_differ(mini_models, backbone):
    import torch
    from safetensors.torch import load_file

    a = load_file(mini_models[(backbone, "policy")] / "model.safetensors")
    b = load_file(mini_models[(backbone, "reference")] / "model.safetensors")
    assert a.keys() == b.keys()
    assert not any(torch.equal(a[k], b[k]) for k in a if "norm" not in k)


@pytest.mark.slow
def test_build_is_deterministic(mini_models, tmp_path):
    again = miniworld.build_model("zephyr", tmp_path / "again", role="reference", seed=0)
    first = mini_models[("zephyr", "reference")]
    assert (again / "model.safetensors").read_bytes() == (first / "model.safetensors").read_bytes()
    assert (again / "tokenizer.json").read_bytes() == (first / "tokenizer.json").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("backbone", miniworld.BACKBONES)
def test_models_end_their_turns(mini_models, backbone):
    """Sampled at the paper's temperature, most replies end on the turn-end token well before
    64 tokens (a random model over this vocabulary would practically never)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = mini_models[(backbone, "policy")]
    tok = AutoTokenizer.from_pretrained(path)
    lm = AutoModelForCausalLM.from_pretrained(path)
    end = chat.turn_end_id(tok)
    ids = tok(chat.render_prompts(tok, ["Name three rivers in Europe."])[0])["input_ids"]
    torch.manual_seed(0)
    x = torch.tensor([ids])
    out = lm.generate(
        x,
        attention_mask=torch.ones_like(x),
        do_sample=True,
        temperature=0.9,
        top_k=0,
        max_new_tokens=64,
        num_return_sequences=16,
        eos_token_id=[end],
        pad_token_id=end,
    )
    ended = [end in row for row in out[:, len(ids) :].tolist()]
    assert sum(ended) >= 12


# ---- tokenization: one BOS, the turn-end token, the ids TRL trains on, stop tokens ----------

BACKBONE_IDS = {  # backbone: (BOS id, turn-end id, EOS id of the tokenizer)
    "zephyr": (1, 2, 2),
    "llama3": (128000, 128009, 128001),
}
PAIRS = [
    ("What is 2 plus 2?", "It is 4.", "Five, I think."),
    ("  Name a colour.  ", " Blue", "Green\nor red."),
    ("Write a haiku about rain.", "Soft rain on the roof\nwhispers", "Rain."),
]


@pytest.fixture(scope="module")
def tokenizers(zephyr_tok, llama3_tok):
    return {"zephyr": zephyr_tok, "llama3": llama3_tok}


@pytest.mark.parametrize("backbone", miniworld.BACKBONES)
def test_turn_end_token_and_trl_tokenizer(tokenizers, backbone):
    tok = tokenizers[backbone]
    _bos, end, eos = BACKBONE_IDS[backbone]
    assert chat.turn_end_id(tok) == end
    trl_tok = chat.for_trl(tok)
    assert trl_tok.eos_token_id == end
    assert tok.eos_token_id == eos  # the tokenizer itself is left as it was


def test_stop_token_ids_merge_template_generation_config_and_extra(llama3_tok, zephyr_tok):
    assert chat.stop_token_ids(llama3_tok, [128001, 128009], [13]) == [128009, 128001, 13]
    assert chat.stop_token_ids(llama3_tok) == [128009, 128001]
    assert chat.stop_token_ids(zephyr_tok, 2) == [2]


@pytest.mark.parametrize("backbone", miniworld.BACKBONES)
def test_exactly_one_bos_when_sampling_and_scoring(tokenizers, backbone):
    from dicewf import reward_model, sampling, scoring

    tok = tokenizers[backbone]
    bos, end, eos = BACKBONE_IDS[backbone]
    prompts = [p for p, _, _ in PAIRS]
    responses = [c for _, c, _ in PAIRS]
    for ids in sampling.prompt_token_ids(tok, prompts):
        assert ids[0] == bos and ids.count(bos) == 1
    for enc, resp in zip(scoring.encode(tok, prompts, responses), responses, strict=True):
        ids = enc.input_ids
        assert ids[0] == bos and ids.count(bos) == 1
        # the user's turn and the response end with the turn-end token, nothing with another EOS
        assert ids[-1] == end and ids.count(end) == 2
        assert eos == end or eos not in ids
        assert tok.decode(ids[enc.response_start : -1]).strip() == resp.strip()
    for ids in reward_model.encode(tok, prompts, responses):
        assert ids[0] == bos and ids.count(bos) == 1


def _trl_dataset(tok, config):
    """TRL's DPOTrainer on a randomly initialised mini model: its tokenized train dataset."""
    import pandas as pd
    import torch
    from dicewf import training
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    pairs = pd.DataFrame(PAIRS, columns=["prompt", "chosen", "rejected"])
    torch.manual_seed(0)
    model, ref = (AutoModelForCausalLM.from_config(config) for _ in range(2))
    args = DPOConfig(output_dir=config.output_dir, use_cpu=True, report_to="none", max_steps=1)
    trainer = DPOTrainer(
        model=model,
        ref_model=ref,
        args=args,
        train_dataset=training.preference_dataset(tok, pairs),
        processing_class=chat.for_trl(tok),
    )
    return pairs, trainer.train_dataset


@pytest.mark.parametrize("backbone", miniworld.BACKBONES)
def test_scoring_ids_equal_the_ids_trl_trains_on(tokenizers, backbone, tmp_path):
    from dicewf import scoring

    tok = tokenizers[backbone]
    bos, end, _ = BACKBONE_IDS[backbone]
    config = miniworld._config(backbone, tok)
    config.output_dir = str(tmp_path / "trainer")
    pairs, data = _trl_dataset(tok, config)
    for side in ("chosen", "rejected"):
        ours = scoring.encode(tok, pairs["prompt"].tolist(), pairs[side].tolist())
        for enc, row in zip(ours, data, strict=True):
            assert enc.input_ids[: enc.response_start] == row["prompt_ids"]
            assert enc.input_ids[enc.response_start :] == row[f"{side}_ids"]
            assert row["prompt_ids"].count(bos) == 1 and row[f"{side}_ids"][-1] == end


# ---- the workflow's steps on the built models --------------------------------------------

VLLM_ENGINE = {
    "dtype": "float32",
    "max_model_len": 512,
    "kv_cache_memory_bytes": 2**28,
    "enforce_eager": True,
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend",
    [
        "transformers",
        pytest.param(
            "vllm",
            marks=[
                pytest.mark.vllm,
                pytest.mark.skipif(
                    importlib.util.find_spec("vllm") is None, reason="vllm is not installed"
                ),
            ],
        ),
    ],
)
@pytest.mark.parametrize("backbone", miniworld.BACKBONES)
def test_sampled_responses_stop_on_the_turn_end_token(mini_models, backbone, backend):
    """At the paper's Llama-3 temperature, most responses stop (on the turn-end token: the only
    stop token these models learnt to emit) well before ``max_tokens``, none is dropped for want
    of a stop token."""
    import pandas as pd
    from dicewf import sampling
    from transformers import AutoTokenizer

    path = mini_models[(backbone, "policy")]
    prompts = pd.DataFrame(
        {
            "prompt_id": ["a", "b", "c", "d"],
            "prompt": [p for p, _, _ in PAIRS] + ["Explain photosynthesis."],
        }
    )
    spec = sampling.SamplingSpec(n=4, temperature=0.9, top_p=1.0, max_tokens=64, seed=0)
    tok = AutoTokenizer.from_pretrained(path)
    assert sampling.model_stop_token_ids(path, tok, spec)[0] == BACKBONE_IDS[backbone][1]
    out = sampling.sample(
        path, prompts, spec, backend=backend, engine=VLLM_ENGINE if backend == "vllm" else None
    )
    assert len(out) == 16
    assert (out["finish_reason"] == "stop").mean() >= 0.75
    # the stop token is not part of the text
    for marker in ("<|eot_id|>", "<|end_of_text|>", "</s>"):
        assert not out["response"].str.contains(marker, regex=False).any()


@pytest.mark.slow
@pytest.mark.parametrize("backbone", miniworld.BACKBONES)
def test_scoring_and_a_dpo_step_on_the_mini_models(mini_models, backbone, tmp_path):
    import math

    import pandas as pd
    from dicewf import scoring, training
    from transformers import AutoTokenizer

    policy, ref = mini_models[(backbone, "policy")], mini_models[(backbone, "reference")]
    pairs = pd.DataFrame(PAIRS, columns=["prompt", "chosen", "rejected"]).assign(
        prompt_id=["a", "b", "c"]
    )
    samples = pd.DataFrame(
        {
            "prompt_id": pairs["prompt_id"],
            "prompt": pairs["prompt"],
            "sample_idx": 0,
            "response": pairs["chosen"],
            "finish_reason": "stop",
            "seed": 0,
        }
    )
    scored = scoring.score(samples, policy, ref, beta=0.1)
    assert scored["reward"].abs().min() > 0  # policy and reference differ
    tok = AutoTokenizer.from_pretrained(policy)
    # the response's own tokens plus the turn-end token
    assert scored["len_tokens"].tolist() == [
        e.n_response for e in scoring.encode(tok, pairs["prompt"], pairs["chosen"])
    ]
    history = training.train_dpo(
        policy,
        pairs,
        tmp_path / "dpo",
        {"max_steps": 1, "per_device_train_batch_size": 3, "learning_rate": 1e-3, "beta": 0.1},
        seed=0,
        ref=ref,
    )
    assert math.isfinite(next(e["loss"] for e in history if "loss" in e))
    trained = AutoTokenizer.from_pretrained(tmp_path / "dpo")
    assert trained.eos_token == tok.eos_token  # the folder keeps the tokenizer as loaded
    assert chat.turn_end_id(trained) == BACKBONE_IDS[backbone][1]
