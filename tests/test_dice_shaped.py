"""benchmarks/dice_shaped.py: the inputs of the GPU figures (benchmarks/gpu_figures.sh) are the
lengths and the model shape they claim to be."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from dicewf import miniworld

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dice_shaped = _load("dice_shaped")


@pytest.fixture(scope="module")
def llama3_tok():
    return miniworld.llama3_tokenizer()


def n_tokens(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


def test_one_token_words_are_one_token_after_a_space(llama3_tok):
    words = dice_shaped.one_token_words(llama3_tok)
    assert len(words) > 10_000
    assert words == sorted(set(words))
    sample = words[:: len(words) // 200]
    assert all(n_tokens(llama3_tok, " " + w) == 1 for w in sample)
    assert all(dice_shaped.WORD.fullmatch(w) for w in words)


def test_texts_have_dice_lengths_in_tokens(llama3_tok):
    prompts, responses = dice_shaped.texts(llama3_tok, 12, seed=3, responses_per_prompt=2)
    assert len(prompts) == len(responses) == 12
    assert {n_tokens(llama3_tok, p) for p in prompts} == {dice_shaped.PROMPT_TOKENS}
    low, high = dice_shaped.RESPONSE_TOKENS
    lengths = [n_tokens(llama3_tok, r) for pair in responses for r in pair]
    assert all(low <= n <= high for n in lengths)
    # a word is a token: the lengths are the drawn word counts, not merged or split
    assert lengths == [len(r.split()) for pair in responses for r in pair]
    assert len(set(lengths)) > 12  # drawn, not one fixed length


def test_texts_follow_the_seed(llama3_tok):
    assert dice_shaped.texts(llama3_tok, 3, seed=0) == dice_shaped.texts(llama3_tok, 3, seed=0)
    assert dice_shaped.texts(llama3_tok, 3, seed=0) != dice_shaped.texts(llama3_tok, 3, seed=1)


def test_texts_refuse_a_tokenizer_without_enough_words(llama3_tok):
    class FewWords:
        def get_vocab(self):
            return {"Ġcat": 0, "Ġdog": 1}

        def convert_tokens_to_string(self, tokens):
            return tokens[0].replace("Ġ", " ")

        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [[0] for _ in texts]}

    with pytest.raises(ValueError, match="2 one-token words"):
        dice_shaped.texts(FewWords(), 1, seed=0)


def test_pairs_frame(llama3_tok):
    pairs = dice_shaped.pairs(llama3_tok, 4, seed=0)
    assert list(pairs.columns) == ["prompt_id", "prompt", "chosen", "rejected"]
    assert pairs["prompt_id"].is_unique and len(pairs) == 4
    assert (pairs["chosen"] != pairs["rejected"]).all()


@pytest.mark.slow
def test_build_model_writes_the_shape_with_llama3s_tokenizer(tmp_path, llama3_tok):
    from transformers import AutoConfig, AutoTokenizer

    llama3_tok.save_pretrained(tmp_path / "tok")
    out = dice_shaped.build_model(tmp_path / "m", shape="tiny", tokenizer=tmp_path / "tok")
    config = AutoConfig.from_pretrained(out)
    assert config.model_type == "llama"
    assert config.vocab_size == len(llama3_tok) == 128256
    assert str(config.dtype) in {"bfloat16", "torch.bfloat16"}
    for key, value in dice_shaped.TINY.items():
        if key == "rope_theta":  # transformers 5 keeps it among the rope parameters
            assert config.rope_parameters["rope_theta"] == value
        else:
            assert getattr(config, key) == value, key
    assert AutoTokenizer.from_pretrained(out)("Hi")["input_ids"] == llama3_tok("Hi")["input_ids"]
    # the 1B shape is Llama-3.2-1B's: about 1.24B parameters with the embedding tied to the head
    shape = dice_shaped.LLAMA_1B
    h, f, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = shape["num_key_value_heads"] * shape["head_dim"]
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * f + 2 * h
    assert layers * per_layer + 128256 * h + h == 1_235_814_400  # the H200 run's count
