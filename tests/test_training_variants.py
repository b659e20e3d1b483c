"""Training variants of the paper's ablations: KTO (Table 3) and length-regularised DPO (Table 7),
and SeRA's reference-free SimPO (its Appendix C.3; TRL's CPOTrainer).

Both go through :func:`dicewf.training.train_dpo` (``trainer=``, ``length_penalty=``) and its
checkpoint/resume code path, and through the entry point ``train_launch.py``'s ``--trainer`` and
``--length-penalty``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dicewf import checkpoints, jobs, launch, rdpo, scoring, toymodel, training
from dicewf.chat import render_prompts

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow" / "scripts"))
import train_launch
from conftest import assert_same_run
from test_training import PAIRS

# fp32 also where a GPU would turn bf16 on: the tests compare losses with a formula to 1e-5
ARGS = {
    "beta": 0.1,
    "learning_rate": 1e-3,
    "max_steps": 3,
    "per_device_train_batch_size": 2,
    "logging_steps": 1,
    "disable_tqdm": True,
    "bf16": False,
}


@pytest.fixture(scope="module")
def other_model(tiny_model, tmp_path_factory) -> Path:
    """Another random tiny Llama with the same tokenizer: a reference unlike the policy."""
    out = tmp_path_factory.mktemp("other") / "model"
    toymodel.init_model(
        tiny_model,
        out,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=1,
        intermediate_size=128,
        max_position_embeddings=128,
        seed=1,
    )
    return out


def logps(model_dir, frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """log pi(response | prompt) and the response length in tokens (EOS included), computed
    independently of TRL by dicewf.scoring."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    encoded = scoring.encode(tok, frame["prompt"].tolist(), frame[column].tolist())
    model = scoring.load_model(model_dir)
    lp = scoring.sequence_logprobs(
        model, encoded, max_tokens_per_batch=4096, pad_token_id=tok.pad_token_id
    )
    return lp, np.array([e.n_response for e in encoded], dtype=float)


def r_dpo_loss(
    margin: np.ndarray, len_w: np.ndarray, len_l: np.ndarray, beta: float, lam: float
) -> float:
    """Park et al. (2024): mean of -log sigmoid(beta * margin + lambda * (|y_w| - |y_l|))."""
    z = beta * margin + lam * (len_w - len_l)
    return float(np.mean(np.logaddexp(0.0, -z)))


# --- KTO ---------------------------------------------------------------------------------------


def test_unpaired_gives_both_halves_of_each_pair_in_a_seeded_order():
    rows = training.unpaired(PAIRS, seed=0)
    assert list(rows.columns) == ["prompt", "completion", "label"] and len(rows) == 8
    expected = {(p, c, True) for p, c in zip(PAIRS["prompt"], PAIRS["chosen"])} | {
        (p, r, False) for p, r in zip(PAIRS["prompt"], PAIRS["rejected"])
    }
    assert set(map(tuple, rows.itertuples(index=False))) == expected
    assert rows.equals(training.unpaired(PAIRS, seed=0))
    orders = {tuple(training.unpaired(PAIRS, seed=s)["completion"]) for s in range(5)}
    assert len(orders) > 1  # shuffled by the seed, not left as [chosen..., rejected...]


@pytest.mark.slow
def test_kto_trains_on_the_unpaired_pairs_with_chat_rendered_prompts(
    tiny_model, tmp_path, monkeypatch
):
    import trl
    from transformers import AutoTokenizer

    seen = {}

    class RecordingKTOTrainer(trl.KTOTrainer):  # the real trainer; records what it was given
        def __init__(self, *args, **kwargs):
            seen["data"] = kwargs["train_dataset"].to_pandas()
            seen["args"] = kwargs["args"]
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(trl, "KTOTrainer", RecordingKTOTrainer)
    out, metrics = tmp_path / "policy", tmp_path / "metrics.json"
    history = training.train_dpo(
        tiny_model,
        PAIRS,
        out,
        {**ARGS, "desirable_weight": 1.0},
        seed=0,
        trainer="kto",
        metrics_path=metrics,
    )

    tok = AutoTokenizer.from_pretrained(tiny_model)
    rendered = dict(zip(PAIRS["prompt"], render_prompts(tok, PAIRS["prompt"].tolist())))
    expected = training.unpaired(PAIRS.assign(prompt=PAIRS["prompt"].map(rendered)), seed=0)
    pd.testing.assert_frame_equal(seen["data"], expected)
    assert isinstance(seen["args"], trl.KTOConfig) and seen["args"].loss_type == "kto"

    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "policy"]
    saved = json.loads(metrics.read_text())
    assert saved["log_history"] == history
    steps = [e for e in history if "loss" in e]
    assert len(steps) == 3 and all("kl" in e for e in steps)
    # at step 1 the policy is its reference: every KTO term is 1 - sigmoid(0) = 0.5 (DPO: log 2)
    assert steps[0]["loss"] == pytest.approx(0.5, abs=1e-6)
    assert steps[-1]["loss"] != pytest.approx(0.5, abs=1e-6)  # and it trains


# --- CPO/SimPO: CPOTrainer, reference-free ------------------------------------------------------

SIMPO = {**ARGS, "beta": 2.0, "loss_type": "simpo", "cpo_alpha": 0.0, "simpo_gamma": 0.4}


@pytest.mark.parametrize(
    "trainer, args, error, match",
    [
        ("kto", {**ARGS, "desirable_wieght": 2.0}, TypeError, "desirable_wieght"),
        # a DPO loss type (say from a shared train block) is named before any model is loaded
        ("kto", {**ARGS, "loss_type": "sigmoid"}, ValueError, "KTOConfig loss_type.*'sigmoid'"),
        ("cpo", {**SIMPO, "simpo_gama": 1.0}, TypeError, "simpo_gama"),
        # DPO's robust loss, say from a shared train block, is not one of CPOConfig's
        ("cpo", {**SIMPO, "loss_type": "robust"}, ValueError, "'cpo' takes a CPOConfig.*'robust'"),
        ("orpo", ARGS, ValueError, "trainer must be one of"),
    ],
)
def test_trainer_config_fields_and_loss_types_are_checked_by_trl_before_any_model_loads(
    tiny_model, tmp_path, trainer, args, error, match
):
    with pytest.raises(error, match=match):
        training.train_dpo(tiny_model, PAIRS, tmp_path / "p", args, seed=0, trainer=trainer)
    assert not list(tmp_path.iterdir())


def simpo_loss(lp_w, n_w, lp_l, n_l, beta: float, gamma: float) -> float:
    """Meng et al. (2024), Eq. 6: mean of -log sigmoid(beta/|y_w| log pi(y_w|x) - beta/|y_l| log
    pi(y_l|x) - gamma)."""
    z = beta * (lp_w / n_w - lp_l / n_l) - gamma
    return float(np.mean(np.logaddexp(0.0, -z)))


@pytest.mark.slow
def test_simpo_trains_on_the_length_normalised_margin_with_no_reference_model(
    tiny_model, other_model, tmp_path, monkeypatch
):
    from transformers import AutoModelForCausalLM

    loaded = []
    original = AutoModelForCausalLM.from_pretrained.__func__

    def recording(cls, path, *args, **kwargs):
        loaded.append(Path(path))
        return original(cls, path, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(recording))
    metrics = tmp_path / "metrics.json"
    training.train_dpo(
        tiny_model,
        PAIRS,
        tmp_path / "policy",
        {**SIMPO, "max_steps": 2, "per_device_train_batch_size": len(PAIRS)},
        seed=0,
        ref=other_model,  # ignored: SimPO has no reference
        trainer="cpo",
        metrics_path=metrics,
    )
    assert loaded == [Path(tiny_model)]
    monkeypatch.undo()
    first, second = [e for e in json.loads(metrics.read_text())["log_history"] if "loss" in e]
    lp_w, n_w = logps(tiny_model, PAIRS, "chosen")
    lp_l, n_l = logps(tiny_model, PAIRS, "rejected")
    # the whole batch at step 1: the loss of the untrained policy, by Eq. 6 on our own scores
    assert first["loss"] == pytest.approx(simpo_loss(lp_w, n_w, lp_l, n_l, 2.0, 0.4), rel=1e-5)
    # a DPO-style reward against other_model would give another loss, as would unnormalised ones
    assert first["loss"] != pytest.approx(simpo_loss(lp_w, 1, lp_l, 1, 2.0, 0.4), rel=1e-3)
    assert second["loss"] < first["loss"]  # and it trains
    assert (tmp_path / "policy" / "model.safetensors").is_file()


# --- length-regularised DPO --------------------------------------------------------------------


@pytest.mark.parametrize(
    "trainer, extra, lam, match",
    [
        ("kto", {}, 0.1, "does not apply to trainer='kto'"),
        ("cpo", {"loss_type": "simpo"}, 0.1, "does not apply to trainer='cpo'"),
        ("dpo", {"loss_type": "ipo"}, 0.1, r"sigmoid loss only.*\['ipo'\]"),
        ("dpo", {"loss_type": ["sigmoid", "sft"]}, 0.1, r"sigmoid loss only.*\['sigmoid', 'sft'\]"),
        ("dpo", {"f_divergence_type": "js_divergence"}, 0.1, "reverse_kl"),
        ("dpo", {}, -0.1, "finite number >= 0"),
        ("dpo", {}, math.nan, "finite number >= 0"),
    ],
)
def test_length_penalty_is_refused_where_it_is_not_defined(
    tiny_model, tmp_path, trainer, extra, lam, match
):
    with pytest.raises(ValueError, match=match):
        training.train_dpo(
            tiny_model,
            PAIRS,
            tmp_path / "p",
            {**ARGS, **extra},
            seed=0,
            trainer=trainer,
            length_penalty=lam,
        )
    assert not list(tmp_path.iterdir())  # refused before any model is loaded or file written


def build_dpo(cls, policy, ref, tmp_path, **extra):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig

    tok = AutoTokenizer.from_pretrained(policy)
    cfg = DPOConfig(
        output_dir=str(tmp_path / "scratch"),
        **training.device_args({"beta": ARGS["beta"], "loss_type": ["sigmoid"], "bf16": False}),
    )
    data = Dataset.from_dict(
        {
            "prompt": render_prompts(tok, PAIRS["prompt"].tolist()),
            "chosen": PAIRS["chosen"].tolist(),
            "rejected": PAIRS["rejected"].tolist(),
        }
    )
    return cls(
        model=AutoModelForCausalLM.from_pretrained(policy),
        ref_model=AutoModelForCausalLM.from_pretrained(ref),
        args=cfg,
        train_dataset=data,
        processing_class=tok,
        **extra,
    )


def batch_loss(trainer) -> float:
    import torch

    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    with torch.no_grad():
        return float(trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch)))


def test_zero_length_penalty_is_plain_dpo_on_the_same_batch(tiny_model, other_model, tmp_path):
    from trl import DPOTrainer

    plain = batch_loss(build_dpo(DPOTrainer, tiny_model, other_model, tmp_path))
    zero = batch_loss(
        build_dpo(
            rdpo.LengthRegularisedDPOTrainer, tiny_model, other_model, tmp_path, length_penalty=0.0
        )
    )
    assert zero == pytest.approx(plain, rel=1e-6, abs=1e-7)
    assert plain != pytest.approx(math.log(2), abs=1e-3)  # policy != reference: a real margin


@pytest.mark.parametrize("lam", [0.0, 0.05, 0.3])
def test_length_regularised_loss_is_the_formula_on_a_hand_made_batch(
    tiny_model, other_model, tmp_path, lam
):
    from trl import DPOTrainer

    cls = rdpo.LengthRegularisedDPOTrainer if lam else DPOTrainer
    extra = {"length_penalty": lam} if lam else {}
    loss = batch_loss(build_dpo(cls, tiny_model, other_model, tmp_path, **extra))

    pw, len_w = logps(tiny_model, PAIRS, "chosen")
    pl, len_l = logps(tiny_model, PAIRS, "rejected")
    rw, _ = logps(other_model, PAIRS, "chosen")
    rl, _ = logps(other_model, PAIRS, "rejected")
    margin = (pw - rw) - (pl - rl)
    assert (len_w != len_l).all()
    by_hand = r_dpo_loss(margin, len_w, len_l, ARGS["beta"], lam)
    assert loss == pytest.approx(by_hand, rel=1e-5, abs=1e-6)
    if lam:  # the penalty matters on this batch, with the sign of the formula
        assert abs(by_hand - r_dpo_loss(margin, len_w, len_l, ARGS["beta"], 0.0)) > 1e-2
        assert abs(by_hand - r_dpo_loss(margin, len_w, len_l, ARGS["beta"], -lam)) > 1e-2


@pytest.mark.slow
def test_first_logged_step_of_a_run_is_the_formula(tiny_model, tmp_path):
    lam = 0.2
    metrics = tmp_path / "metrics.json"
    training.train_dpo(
        tiny_model,
        PAIRS,
        tmp_path / "policy",
        {**ARGS, "max_steps": 1, "per_device_train_batch_size": len(PAIRS)},
        seed=0,
        length_penalty=lam,
        metrics_path=metrics,
    )
    step = json.loads(metrics.read_text())["log_history"][0]
    _, len_w = logps(tiny_model, PAIRS, "chosen")
    _, len_l = logps(tiny_model, PAIRS, "rejected")
    # the policy is its own reference at step 1: only the length term is left
    assert step["loss"] == pytest.approx(r_dpo_loss(0.0, len_w, len_l, 0.1, lam), rel=1e-5)
    assert step["rewards/length_margins"] == pytest.approx(lam * np.mean(len_w - len_l), rel=1e-5)
    assert step["rewards/margins"] == pytest.approx(step["rewards/length_margins"], abs=1e-5)


def length_biased(n: int, seed: int) -> pd.DataFrame:
    """Pairs whose chosen response is the rejected one plus a filler sentence."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(1, 9, size=(2, n))
    answers = [f"The answer is {x + y}." for x, y in zip(a, b)]
    return pd.DataFrame(
        {
            "prompt_id": [f"p{i}" for i in range(n)],
            "prompt": [f"What is {x} plus {y}?" for x, y in zip(a, b)],
            "chosen": [s + " I hope this helps you." for s in answers],
            "rejected": answers,
        }
    )


@pytest.mark.slow
def test_length_penalty_unlearns_a_planted_length_preference(tiny_model, tmp_path):
    """On pairs where the winner is always the longer response, DPO learns to prefer length;
    R-DPO explains the preference by the length term and learns much less of it. Ignoring the
    penalty, or applying it with the opposite sign (which under Adam trains like plain DPO
    here), fails the test."""
    train, held_out = length_biased(16, 0), length_biased(16, 1)
    args = {**ARGS, "learning_rate": 5e-4, "max_steps": 8, "per_device_train_batch_size": 4}
    base = logps(tiny_model, held_out, "chosen")[0] - logps(tiny_model, held_out, "rejected")[0]
    gain = {}
    for lam in (0.0, 1.0):
        out = tmp_path / f"lambda{lam}"
        training.train_dpo(tiny_model, train, out, args, seed=0, length_penalty=lam)
        gap = logps(out, held_out, "chosen")[0] - logps(out, held_out, "rejected")[0]
        gain[lam] = float(np.mean(gap - base))  # how much more the long response gained
    assert gain[0.0] > 2.0, gain  # plain DPO learned the planted length preference
    assert gain[1.0] < 0.5 * gain[0.0], gain


# --- shared code path: fingerprint, resume, command line ------------------------------------------


def test_fingerprint_names_the_trainer_and_the_length_penalty(tiny_model):
    def fingerprint(**variant):
        return training.preference_fingerprint(
            tiny_model, None, PAIRS, ARGS, seed=0, world_size=1, **variant
        )

    base = fingerprint()
    assert base["trainer"] == "dpo" and base["length_penalty"] == 0.0
    kto, r_dpo = fingerprint(trainer="kto"), fingerprint(length_penalty=0.05)
    assert len({json.dumps(f, sort_keys=True) for f in (base, kto, r_dpo)}) == 3


class Crash(Exception):
    """Raised by the test double below in place of a killed job."""


def crashing_training_step(original, after: int):
    calls = {"n": 0}

    def fake_training_step(self, *args, **kwargs):
        if calls["n"] == after:
            raise Crash(f"crash before step {after + 1}")
        calls["n"] += 1
        return original(self, *args, **kwargs)

    return fake_training_step


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["kto", "r-dpo"])
def test_a_crashed_variant_resumes_like_an_uninterrupted_run(tiny_model, tmp_path, variant, caplog):
    import trl

    kwargs = {"trainer": "kto"} if variant == "kto" else {"length_penalty": 0.05}
    cls = trl.KTOTrainer if variant == "kto" else rdpo.LengthRegularisedDPOTrainer
    # 4 steps of 2 rows; the R-DPO run goes on into a second, reshuffled epoch
    args = {**ARGS, "max_steps": 4, "save_steps": 2}

    def run(name: str) -> dict:
        training.train_dpo(
            tiny_model,
            PAIRS,
            tmp_path / name / "policy",
            args,
            seed=0,
            metrics_path=tmp_path / name / "metrics.json",
            **kwargs,
        )
        return json.loads((tmp_path / name / "metrics.json").read_text())

    reference = run("uninterrupted")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cls, "training_step", crashing_training_step(cls.training_step, after=3))
        with pytest.raises(Crash):
            run("resumed")
    ckpts = checkpoints.checkpoint_dir_for(tmp_path / "resumed" / "policy")
    assert sorted(p.name for p in ckpts.glob("checkpoint-*")) == ["checkpoint-2"]
    assert json.loads((ckpts / "run.json").read_text())["trainer"] == (
        "kto" if variant == "kto" else "dpo"
    )
    with caplog.at_level("INFO", logger="dicewf.checkpoints"):
        resumed = run("resumed")
    assert f"resuming from checkpoint {ckpts / 'checkpoint-2'} (step 2)" in caplog.text

    assert_same_run(reference, resumed, tmp_path / "uninterrupted", tmp_path / "resumed", "policy")


@pytest.mark.slow
def test_the_entry_point_parses_with_trls_parser_over_the_config_class(tiny_model, tmp_path):
    """train_launch.py: our arguments and the TRL fields of a --config file (JSON as the
    train_args rule writes it) parsed by TrlParser; the command line wins over the file."""
    pairs = tmp_path / "pairs.parquet"
    PAIRS.to_parquet(pairs)
    config = tmp_path / "train_args.json"
    # json writes 5e-05, which YAML 1.1 reads as a string; the parser types it from DPOConfig
    config.write_text(json.dumps({**ARGS, "learning_rate": 5e-05, "global_batch_size": 2}))
    assert "5e-05" in config.read_text()
    common = [
        "--model",
        str(tiny_model),
        "--pairs",
        str(pairs),
        "--out",
        str(tmp_path / "kto"),
        "--config",
        str(config),
        "--seed",
        "0",
    ]
    script, fields = launch.parse(common)
    assert (script.trainer, script.length_penalty, script.seed) == ("dpo", 0.0, 0)
    assert fields == {**ARGS, "learning_rate": 5e-05, "global_batch_size": 2}
    assert isinstance(fields["learning_rate"], float)
    script, fields = launch.parse(
        [*common, "--trainer", "kto", "--length-penalty", "0.05", "--beta", "0.3"]
    )
    assert (script.trainer, script.length_penalty, fields["beta"]) == ("kto", 0.05, 0.3)
    with pytest.raises(SystemExit):
        launch.parse([*common, "--trainer", "orpo"])
    (tmp_path / "typo.json").write_text(json.dumps({"lerning_rate": 1e-3}))
    with pytest.raises(SystemExit, match=r"typo\.json: .*lerning_rate.*\(DPOConfig"):
        launch.parse([a if a != str(config) else str(tmp_path / "typo.json") for a in common])

    train_launch.main([*common, "--trainer", "kto", "--metrics", str(tmp_path / "m.json")])
    steps = [e for e in json.loads((tmp_path / "m.json").read_text())["log_history"] if "loss" in e]
    assert len(steps) == 3 and "kl" in steps[0]  # KTO's metrics: it ran KTOTrainer
    assert (tmp_path / "kto" / "model.safetensors").is_file()


@pytest.mark.slow
def test_the_toy_start_policy_rule_runs_the_same_entry_point(
    tmp_path, monkeypatch, restore_logging
):
    """Under Snakemake's script: directive train_launch.py takes the rule's inputs, outputs,
    seed, log and training block (never on a command line) and trains as the train rule does."""
    import runpy
    from types import SimpleNamespace

    calls, threads = [], []
    monkeypatch.setattr(training, "train_dpo", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(jobs, "set_threads", lambda n, **k: threads.append((n, k)))
    pairs = tmp_path / "offline.parquet"
    PAIRS.to_parquet(pairs)
    (tmp_path / "sft").mkdir()
    block = {**ARGS, "learning_rate": "5e-05"}  # a string as YAML 1.1 reads 5e-05
    smk = SimpleNamespace(
        input=SimpleNamespace(model="hub/model", pairs=str(pairs)),
        output=SimpleNamespace(model=str(tmp_path / "policy"), metrics=str(tmp_path / "m.json")),
        params=SimpleNamespace(args=block, seed=7),
        log=[str(tmp_path / "train.log")],
        threads=2,
    )
    monkeypatch.setattr(sys, "argv", ["snakemake-script"])
    runpy.run_path(
        str(REPO / "workflow" / "scripts" / "train_launch.py"),
        init_globals={"snakemake": smk},
        run_name="__main__",
    )
    [(args, kwargs)] = calls
    assert args[0] == "hub/model" and args[2] == str(tmp_path / "policy")
    assert args[3] == {**ARGS, "learning_rate": 5e-05}
    assert kwargs["seed"] == 7 and kwargs["metrics_path"] == str(tmp_path / "m.json")
    assert (kwargs["trainer"], kwargs["length_penalty"], kwargs["ref"]) == ("dpo", 0.0, None)
    assert (tmp_path / "train.log").is_file()
    assert threads == [(2, {"processes": 1})]  # the rule's threads
