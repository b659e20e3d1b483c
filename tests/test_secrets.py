"""Secrets never reach disk (issue 12, faults 1-3).

A key or token in config is refused at start-up, before the schema validation (whose errors
quote values), naming every key path and never the value (dicewf.secrets, called first in
common.smk); the train block reaches the train job as a file, not on the recorded command
line; TRL's pickled training arguments carry no token; a judge's key is redacted from every reply
and record it returns, replayed ones included, so none reaches the Arena judgments.
"""

from __future__ import annotations

import json
import pickle
import runpy
import types
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fake_chat_server import FakeChatServer
from test_workflow import REPO, load, snakemake

# planted values: long enough to look like real keys; never a real one
HF = "hf_" + "PlantedHubToken" * 3  # a Hugging Face token
SK = "sk-" + "PlantedOpenAIKey" * 3  # an OpenAI-style key
GHP = "ghp_" + "PlantedGitHubToken" * 2  # a GitHub token
AWS = "AKIA" + "PLANTEDAWSKEY123"  # an AWS access key id
XOXB = "xoxb-" + "1234-planted-slack"
PW = "correct-horse-battery-staple"  # a password: only its key name gives it away
ENV_HF = "hf_" + "PlantedInTheEnvironment" * 2
ENV_SK = "sk-" + "PlantedInTheEnvironment" * 2


def _secrets():
    from dicewf import secrets  # imported here: each test fails alone before the module exists

    return secrets


def _refusal(config) -> str:
    secrets = _secrets()
    with pytest.raises(secrets.SecretInConfigError) as err:
        secrets.check(config)
    return str(err.value)


# ----------------------------------------------------------------------------------- names
@pytest.mark.parametrize(
    "name",
    [
        "token",
        "hub_token",
        "hf_token",
        "auth_token",
        "access_token",
        "use_auth_token",
        "HF_TOKEN",
        "hubToken",
        "api_key",
        "apikey",
        "apiKey",
        "openai-api-key",
        "secret",
        "client_secret",
        "aws_secret_access_key",
        "password",
        "db_password",
        "passwd",
        "credentials",
        "Authorization",
    ],
)
def test_secret_key_names_are_refused(name):
    assert _secrets().secret_name(name)


@pytest.mark.parametrize(
    "name",
    [
        # every key of the schema and the three configs that says "token" or "key" is legitimate
        "max_tokens",
        "max_new_tokens",
        "max_prompt_tokens",
        "max_tokens_per_batch",
        "stop_token_ids",
        "eos_token_id",
        "pad_token",
        "eos_token",
        "bos_token",
        "turn_end_token",
        "label_pad_token_id",
        "skip_special_tokens",
        "truncate_prompt_tokens",
        "tokenizer",
        "api_key_env",
        "token_env",
        "hf_token_file",
        "hub_model_id",
        "hub_private_repo",
        "keys",
    ],
)
def test_legitimate_key_names_pass(name):
    assert not _secrets().secret_name(name)


@pytest.mark.parametrize("path", ["config.yaml", ".test/config.yaml", "config/paper.yaml"])
def test_the_shipped_configs_hold_no_secret(path):
    assert _secrets().find(load(REPO / path)) == []


# ------------------------------------------------------------------- paths and the message
PLANTED = {
    # secret-looking names (the training blocks allow any TRL field)
    "defaults.train.hub_token": HF,
    "settings.zephyr.defaults.train.hub_token": HF,
    "experiments.dice.train.password": PW,
    "agreement.judge.api_key": SK,
    "eval.arena_hard.judge.request.extra_body.secret": PW,
    # provider-shaped values under harmless names, in the free-form blocks
    "settings.zephyr.defaults.sampling.vllm.x": SK,
    "sampler.vllm.hf_overrides.note": HF,
    "agreement.judge.request.extra_headers.X-Note": f"Bearer {GHP}",
    "defaults.train.run_name": AWS,
    "agreement.reward_model.hub_model_id": XOXB,
    "eval.alpaca_eval.base_url": f"https://judge:{PW}@example.org/v1",
    "eval.alpaca_eval.api_key_env": SK,  # the key itself where its variable's name belongs
}


def _nest(flat: dict[str, str], into: dict | None = None) -> dict:
    out = into if into is not None else {}
    for path, value in flat.items():
        node = out
        *parents, leaf = path.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                node[p] = {}  # e.g. `judge: gold` becomes a judge block
            node = node[p]
        node[leaf] = value
    return out


@pytest.mark.parametrize("path", sorted(PLANTED))
def test_a_secret_is_refused_naming_its_path_and_never_its_value(path):
    message = _refusal(_nest({path: PLANTED[path]}, load(REPO / ".test/config.yaml")))
    assert f"  {path}: " in message
    assert PLANTED[path] not in message
    # where keys belong instead
    assert "environment" in message and "api_key_env" in message
    assert "OPENAI_API_KEY" in message and "HF_TOKEN" in message


def test_every_secret_is_named_at_once_in_lists_too():
    config = _nest(PLANTED)
    config["defaults"]["sampling"] = {"stop": ["</s>", SK]}
    config[HF] = 1  # a key that is itself a token is named without it
    message = _refusal(config)
    for path in [*PLANTED, "defaults.sampling.stop[1]", "<redacted key>"]:
        assert f"  {path}: " in message, path
    for value in (HF, SK, GHP, AWS, XOXB, PW):
        assert value not in message


@pytest.mark.parametrize(
    "config",
    [
        {"hub_token": None},
        {"use_auth_token": True},
        {"hf_token": ""},  # name no secret
        {"model": "HuggingFaceH4/zephyr-7b-beta"},
        {"stop": ["sk-", "hf_x"]},  # too short for keys
        {"base_url": "http://127.0.0.1:8000/v1"},
        {"api_key_env": "OPENAI_API_KEY"},
    ],
)
def test_harmless_values_pass(config):
    _secrets().check(config)


# ------------------------------------------------------------------ the workflow, end to end
def _grep(root: Path, values: list[str]) -> list[str]:
    """Files under ``root`` (dot-folders included) that contain any of ``values``."""
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path}: {v[:6]}..." for v in values if v.encode() in data]
    return hits


@pytest.mark.slow
def test_a_planted_config_is_refused_and_nothing_anywhere_holds_a_key(tmp_path):
    """Secrets planted in every free-form block and a judge's api_key, plus keys in the
    environment: the run is refused at start-up naming each path; no file of the working
    directory (.snakemake/ and its log included) and no output line holds any of them."""
    plant = tmp_path / "input" / "plant.yaml"
    plant.parent.mkdir()
    config = _nest(PLANTED, load(REPO / ".test/config.yaml"))
    plant.write_text(yaml.safe_dump(config, sort_keys=False))
    work = tmp_path / "work"
    work.mkdir()
    env = {"HF_TOKEN": ENV_HF, "OPENAI_API_KEY": ENV_SK}
    values = [*PLANTED.values(), ENV_HF, ENV_SK]
    output = ""
    # a dry run, then a real one (it writes .snakemake/log/); a cheap target either way
    for extra in (["-n"], ["--cores", "1"]):
        proc = snakemake(
            "results/toy/data/train_prompts.parquet",
            *extra,
            "--configfile",
            str(plant),
            cwd=work,
            check=False,
            env=env,
        )
        said = proc.stdout + proc.stderr
        output += said
        assert proc.returncode != 0, said
        for path in PLANTED:
            assert f"  {path}: " in said, (path, said)
    assert list((work / ".snakemake" / "log").glob("*.snakemake.log"))
    assert not (work / "results").exists()
    assert _grep(work, values) == []
    assert [v[:6] for v in values if v in output] == []


@pytest.mark.slow
def test_the_train_block_reaches_the_train_job_as_a_file_not_on_the_command_line(tmp_path):
    """The train job's recorded shell command names the file of the block, not its values; the
    block's own job writes the file (a changed block reruns it, and so the training)."""
    config = load(REPO / ".test/config.yaml")
    config["defaults"]["train"]["learning_rate"] = 1.2345e-05
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = snakemake(
        "results/dice/iter1/policy",
        "-n",
        "-p",
        "--configfile",
        str(tmp_path / "config.yaml"),
        cwd=tmp_path,
    )
    shell = [line for line in proc.stdout.splitlines() if "train_launch.py --config" in line]
    assert len(shell) == 1, proc.stdout
    assert "--config results/dice/iter1/train_args.json" in shell[0]
    assert "learning_rate" not in shell[0] and "1.2345e-05" not in shell[0]
    written = snakemake(
        "results/dice/iter1/train_args.json",
        "--cores",
        "1",
        "--configfile",
        str(tmp_path / "config.yaml"),
        cwd=tmp_path,
    )
    assert written.returncode == 0
    args = json.loads((tmp_path / "results/dice/iter1/train_args.json").read_text())
    assert args == config["defaults"]["train"]


# --------------------------------------------------------------------------------- training
def test_no_token_reaches_the_pickled_training_arguments(tmp_path, monkeypatch):
    """TRL pickles its config (training_args.bin) into checkpoints and the policy folder: a
    hub_token in the block is refused naming it, and the environment's HF_TOKEN is not in it."""
    from dicewf import training

    pairs = pd.DataFrame({"prompt_id": ["a"], "prompt": ["p"], "chosen": ["c"], "rejected": ["r"]})
    configs = []

    def record_run(cfg, build, **kwargs):  # a test double: trains nothing
        configs.append(cfg)
        return []

    monkeypatch.setattr(training, "train_resumable", record_run)
    monkeypatch.setenv("HF_TOKEN", ENV_HF)
    args = {"beta": 0.1, "max_steps": 1, "per_device_train_batch_size": 1}
    with pytest.raises(ValueError, match="hub_token") as err:
        training.train_dpo(
            "no-model", pairs, tmp_path / "policy", {**args, "hub_token": HF}, seed=0
        )
    assert HF not in str(err.value)
    assert configs == [] and not (tmp_path / "policy.checkpoints").exists()
    training.train_dpo("no-model", pairs, tmp_path / "policy", args, seed=0)
    (cfg,) = configs
    assert cfg.hub_token is None
    assert ENV_HF.encode() not in pickle.dumps(cfg)


# ----------------------------------------------------------------------------------- judges
def _conv(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "judge"}, {"role": "user", "content": text}]


def _record_raw_cache(cache: Path, reply) -> None:
    """A cache recorded with the key in its replies, as the client wrote before it redacted
    replies (or another tool would): recorded against a server that needed no key."""
    from dicewf.judge_client import ChatClient

    with FakeChatServer(reply) as server:
        ChatClient(server.base_url, "judge", api_key_env=None, cache=cache).complete_records(
            [_conv("hello")]
        )
    assert SK in cache.read_text()


def test_a_replayed_reply_holding_the_key_is_redacted_in_text_and_records(tmp_path, monkeypatch):
    from dicewf.judge_client import ChatClient

    cache = tmp_path / "cache.jsonl"
    _record_raw_cache(cache, lambda body: f"You sent Bearer {SK}; [[A>B]]")
    monkeypatch.setenv("DICE_TEST_SECRET", SK)
    replay = ChatClient(
        None, "judge", api_key_env="DICE_TEST_SECRET", cache=cache, replay_only=True
    )
    assert replay.complete([_conv("hello")]) == ["You sent Bearer ***; [[A>B]]"]
    assert SK not in json.dumps(replay.complete_records([_conv("hello")]))


def test_an_echoing_arena_judge_cannot_put_the_key_in_the_judgments(
    tmp_path, monkeypatch, restore_logging
):
    """The Arena adapter against a judge that echoes the request's key, live and replayed from
    a cache that holds the key: no output file, cache or log line holds it."""
    from snakemake.iocontainers import Namedlist
    from test_arena import QUESTIONS, RESPONSES

    monkeypatch.setenv("DICE_TEST_SECRET", SK)
    QUESTIONS.to_parquet(tmp_path / "questions.parquet", index=False)
    RESPONSES.to_parquet(tmp_path / "responses.parquet", index=False)
    script = REPO / "workflow" / "scripts" / "arena_hard_judge.py"

    def run(out: str, judge: dict) -> None:
        snakemake = types.SimpleNamespace(
            input=Namedlist(
                fromdict={
                    "responses": str(tmp_path / "responses.parquet"),
                    "questions": str(tmp_path / "questions.parquet"),
                }
            ),
            output=Namedlist(
                fromdict={
                    "judgments": str(tmp_path / out / "judgments.parquet"),
                    "metrics": str(tmp_path / out / "metrics.json"),
                    "judge_cache": str(tmp_path / out / "judge_cache.jsonl"),
                }
            ),
            params=Namedlist(
                fromdict={"judge": {"model": "judge", **judge}, "n_bootstrap": 5, "seed": 0}
            ),
            log=[str(tmp_path / out / "arena.log")],
        )
        runpy.run_path(str(script), init_globals={"snakemake": snakemake})

    def echo(body):  # repeats the key it was sent, then a verdict
        return f"{server.requests[-1]['headers'].get('authorization')} [[A>B]]"

    with FakeChatServer(echo) as server:
        run(
            "live",
            {
                "base_url": server.base_url,
                "api_key_env": "DICE_TEST_SECRET",
                "cache": str(tmp_path / "live" / "cache.jsonl"),
            },
        )
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {SK}"
    # replayed from a cache that holds the key (recorded before replies were redacted)
    raw = tmp_path / "replay" / "cache.jsonl"
    raw.parent.mkdir()
    live = [json.loads(line) for line in (tmp_path / "live" / "cache.jsonl").open()]
    raw.write_text(
        "".join(
            json.dumps({**r, "response": r["response"].replace("***", SK)}) + "\n" for r in live
        )
    )
    run(
        "replay",
        {
            "base_url": None,
            "api_key_env": "DICE_TEST_SECRET",
            "cache": str(raw),
            "replay_only": True,
        },
    )
    for out in ("live", "replay"):
        judgments = pd.read_parquet(tmp_path / out / "judgments.parquet")  # compressed: read it
        assert judgments["judgment"].str.startswith("Bearer ***").all(), out
        assert not judgments.astype(str).map(lambda cell: SK in cell).any().any(), out
    assert _grep(tmp_path, [SK]) == [f"{raw}: {SK[:6]}..."]  # the planted cache alone
