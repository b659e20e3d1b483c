"""ChatClient against FakeChatServer (a local OpenAI-compatible test double) and recorded data."""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
from dicewf.judge_client import (
    ChatClient,
    JudgeError,
    MissingAPIKeyError,
    ReplayMissError,
    request_key,
)

DATA = Path(__file__).parent / "data" / "judge"
MODEL = "mistralai/Mistral-Large-Instruct-2407"


from fake_chat_server import FakeChatServer


def _conv(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "judge"}, {"role": "user", "content": text}]


def _echo(body):
    time.sleep(random.uniform(0, 0.02))  # scramble completion order across threads
    return "echo: " + body["messages"][-1]["content"]


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv("DICE_TEST_JUDGE_KEY", "sk-test-not-a-real-key")
    return "DICE_TEST_JUDGE_KEY"


def test_replies_come_back_in_request_order_with_the_configured_parameters(key_env):
    with FakeChatServer(_echo) as server:
        client = ChatClient(
            server.base_url,
            MODEL,
            api_key_env=key_env,
            temperature=0.0,
            max_tokens=321,
            concurrency=4,
            request={"top_p": 0.5, "seed": 7},
        )
        texts = [f"q{i}" for i in range(20)]
        replies = client.complete([_conv(t) for t in texts])
    assert replies == [f"echo: {t}" for t in texts]
    assert len(server.requests) == 20
    body = server.requests[0]["body"]
    assert body["model"] == MODEL
    assert (body["temperature"], body["max_tokens"], body["top_p"], body["seed"]) == (
        0.0,
        321,
        0.5,
        7,
    )
    assert server.requests[0]["headers"]["authorization"] == "Bearer sk-test-not-a-real-key"


def test_identical_conversations_are_sent_once(key_env):
    with FakeChatServer(_echo) as server:
        client = ChatClient(server.base_url, MODEL, api_key_env=key_env)
        replies = client.complete([_conv("same"), _conv("other"), _conv("same")])
    assert replies == ["echo: same", "echo: other", "echo: same"]
    assert len(server.requests) == 2


def test_transient_errors_are_retried_with_backoff(key_env):
    failures = {"n": 0}
    lock = threading.Lock()

    def flaky(body):
        with lock:
            if failures["n"] < 2:
                failures["n"] += 1
                return {
                    "status": 429 if failures["n"] == 1 else 503,
                    "error": {"message": "slow down"},
                }
        return "fine"

    with FakeChatServer(flaky) as server:
        client = ChatClient(
            server.base_url, MODEL, api_key_env=key_env, max_retries=3, backoff_s=0.01
        )
        assert client.complete([_conv("x")]) == ["fine"]
    assert len(server.requests) == 3


def test_retries_give_up_and_name_the_request(key_env):
    with FakeChatServer(lambda body: {"status": 500, "error": {"message": "boom"}}) as server:
        client = ChatClient(
            server.base_url, MODEL, api_key_env=key_env, max_retries=2, backoff_s=0.01
        )
        with pytest.raises(JudgeError, match=r"after 3 attempts.*'which is better\?'"):
            client.complete([_conv("which is better?")])
    assert len(server.requests) == 3


def test_a_client_error_is_not_retried(key_env):
    with FakeChatServer(lambda body: {"status": 400, "error": {"message": "bad request"}}) as s:
        client = ChatClient(s.base_url, MODEL, api_key_env=key_env, max_retries=5, backoff_s=0.01)
        with pytest.raises(JudgeError, match="BadRequestError"):
            client.complete([_conv("x")])
    assert len(s.requests) == 1


def test_missing_key_names_the_variable_and_sends_nothing(monkeypatch):
    monkeypatch.delenv("DICE_TEST_UNSET_KEY", raising=False)
    with FakeChatServer(_echo) as server:
        client = ChatClient(server.base_url, MODEL, api_key_env="DICE_TEST_UNSET_KEY")
        with pytest.raises(MissingAPIKeyError, match="DICE_TEST_UNSET_KEY"):
            client.complete([_conv("x")])
    assert server.requests == []


def test_a_local_server_needs_no_key():
    with FakeChatServer(_echo) as server:
        client = ChatClient(server.base_url, MODEL, api_key_env=None)
        assert client.complete([_conv("x")]) == ["echo: x"]
    assert server.requests[0]["headers"]["authorization"] == "Bearer EMPTY"


def test_the_key_never_reaches_logs_cache_or_errors(tmp_path, monkeypatch, caplog):
    secret = "sk-SECRET-" + "7" * 24
    monkeypatch.setenv("DICE_TEST_SECRET", secret)
    # the openai package and its HTTP library log requests at DEBUG: capture everything
    caplog.set_level(logging.DEBUG)
    for name in ("openai", "httpx", "httpx2", "httpcore", "httpcore2", "dicewf"):
        logging.getLogger(name).setLevel(logging.DEBUG)

    def leaky(body):  # a server that echoes what it saw, including the key, in an error
        if body["messages"][-1]["content"] == "fail":
            return {"status": 400, "error": {"message": f"rejected key {leaky.auth}"}}
        return "ok"

    cache = tmp_path / "cache.jsonl"
    with FakeChatServer(leaky) as server:
        leaky.auth = secret  # what an echoing server would put in its error body
        client = ChatClient(
            server.base_url,
            MODEL,
            api_key_env="DICE_TEST_SECRET",
            cache=cache,
            max_retries=1,
            backoff_s=0.01,
        )
        assert client.complete([_conv("hello")]) == ["ok"]
        with pytest.raises(JudgeError) as err:
            client.complete([_conv("fail")])
        assert server.requests[0]["headers"]["authorization"] == f"Bearer {secret}"
    assert "***" in str(err.value) and secret not in str(err.value)
    assert secret not in repr(client)
    assert caplog.records, "expected some log records to scan"
    assert secret not in caplog.text
    assert secret not in "\n".join(str(r.__dict__) for r in caplog.records)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path


def test_a_key_echoed_in_a_successful_reply_is_redacted_in_the_cache_and_the_replies(
    tmp_path, monkeypatch
):
    secret = "sk-ECHOED-" + "5" * 24
    monkeypatch.setenv("DICE_TEST_SECRET", secret)
    cache = tmp_path / "cache.jsonl"

    def echo_authorization(body):  # a server that repeats the request's key in its answer
        return f"You sent {server.requests[-1]['headers']['authorization']}; [[A>B]]"

    with FakeChatServer(echo_authorization) as server:
        client = ChatClient(
            server.base_url, MODEL, api_key_env="DICE_TEST_SECRET", cache=cache, concurrency=1
        )
        records = client.complete_records([_conv("hello")])
        replies = client.complete([_conv("hello")])
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {secret}"
    assert replies == ["You sent Bearer ***; [[A>B]]"]
    assert secret not in json.dumps(records)
    assert secret not in cache.read_text()
    assert "Bearer ***" in cache.read_text()
    # a replay of the cache returns the same (redacted) reply as the live run did
    replay = ChatClient(None, MODEL, cache=cache, replay_only=True)
    assert replay.complete([_conv("hello")]) == replies


def test_cache_resumes_then_replays_without_network(tmp_path, key_env):
    cache = tmp_path / "judge_cache.jsonl"
    with FakeChatServer(_echo) as server:
        first = ChatClient(server.base_url, MODEL, api_key_env=key_env, cache=cache)
        assert first.complete([_conv("a"), _conv("b")]) == ["echo: a", "echo: b"]
        # a rerun with one more conversation sends only the new one
        again = ChatClient(server.base_url, MODEL, api_key_env=key_env, cache=cache)
        assert again.complete([_conv("a"), _conv("b"), _conv("c")]) == [
            "echo: a",
            "echo: b",
            "echo: c",
        ]
    sent = [r["body"]["messages"][-1]["content"] for r in server.requests]
    assert sorted(sent[:2]) == ["a", "b"] and sent[2:] == ["c"]  # a and b went concurrently
    assert len(cache.read_text().splitlines()) == 3

    # the server is gone: replay-only reads everything from the cache, needing no key either
    replay = ChatClient(
        "http://127.0.0.1:9/v1",
        MODEL,
        api_key_env="DICE_TEST_UNSET_KEY",
        cache=cache,
        replay_only=True,
    )
    assert replay.complete([_conv("c"), _conv("a")]) == ["echo: c", "echo: a"]
    with pytest.raises(ReplayMissError, match=r"'never asked'"):
        replay.complete([_conv("a"), _conv("never asked")])
    # other parameters are other requests
    hotter = ChatClient(None, MODEL, cache=cache, replay_only=True, temperature=0.7)
    with pytest.raises(ReplayMissError):
        hotter.complete([_conv("a")])


def test_a_truncated_last_cache_line_is_skipped(tmp_path, key_env):
    cache = tmp_path / "cache.jsonl"
    with FakeChatServer(_echo) as server:
        ChatClient(server.base_url, MODEL, api_key_env=key_env, cache=cache).complete([_conv("a")])
    with open(cache, "a") as f:
        f.write('{"key": "abc", "respo')  # a job killed mid-write
    replay = ChatClient(None, MODEL, cache=cache, replay_only=True)
    assert replay.complete([_conv("a")]) == ["echo: a"]


def test_recorded_replies_replay_offline(tmp_path):
    cache = tmp_path / "recorded.jsonl"
    shutil.copy(DATA / "recorded_chat.jsonl", cache)
    records = [json.loads(line) for line in cache.read_text().splitlines()]
    for rec in records:  # the key scheme is stable: recorded keys are recomputed identically
        assert rec["key"] == request_key(rec["model"], rec["messages"], rec["params"])
    client = ChatClient(
        None,
        MODEL,
        api_key_env="DICE_TEST_UNSET_KEY",
        cache=cache,
        replay_only=True,
        temperature=0.0,
        max_tokens=4096,
    )
    replies = client.complete([rec["messages"] for rec in reversed(records)])
    assert replies == [rec["response"] for rec in reversed(records)]
    assert replies[-1].endswith("[[B>>A]]")


def test_from_config_passes_extra_keys_to_create_and_rejects_typos():
    client = ChatClient.from_config(
        {
            "base_url": "http://localhost:8000/v1",
            "model": MODEL,
            "api_key_env": None,
            "max_tokens": 2048,
            "top_p": 0.9,
        }
    )
    assert client.params == {"temperature": 0.0, "max_tokens": 2048, "top_p": 0.9}
    assert client.api_key_env is None
    with pytest.raises(ValueError, match="temprature"):
        ChatClient.from_config({"base_url": None, "model": MODEL, "temprature": 0.0})
    with pytest.raises(ValueError, match="api_key_env"):
        ChatClient.from_config({"base_url": None, "model": MODEL, "api_key": "sk-in-config"})
    with pytest.raises(ValueError, match="replay_only needs a cache"):
        ChatClient(None, MODEL, replay_only=True)


# ---------------------------------------------------------------------------------------------
# Malformed replies, replies without a verdict, slow and hanging servers, progress (issue 12)


def _client(server, key_env, **kwargs):
    kwargs = {"max_retries": 2, "backoff_s": 0.01, "timeout": 5.0, **kwargs}
    return ChatClient(server.base_url, MODEL, api_key_env=key_env, **kwargs)


def _flaky(bad, n_bad):
    """A reply function that answers ``bad`` the first ``n_bad`` times, then "fine"."""
    count = {"n": 0}
    lock = threading.Lock()

    def reply(body):
        with lock:
            count["n"] += 1
            return bad if count["n"] <= n_bad else "fine"

    return reply


HTML = {"raw": "<html><body><h1>502 Bad Gateway</h1> nginx</body></html>"}
NO_CHOICES = {
    "body": {"id": "x", "object": "chat.completion", "created": 0, "model": MODEL, "choices": []}
}
NO_CONTENT = {"message": {"content": None}}


@pytest.mark.parametrize(
    "bad, what",
    [
        (HTML, r"not JSON: '<html><body><h1>502 Bad Gateway"),
        (NO_CHOICES, "without choices"),
        (NO_CONTENT, "without message content"),
    ],
    ids=["non-json-200", "no-choices", "no-content"],
)
def test_a_malformed_reply_is_retried_then_named_with_the_endpoint(key_env, bad, what):
    with FakeChatServer(_flaky(bad, 2)) as server:  # two bad replies, then a good one
        assert _client(server, key_env).complete([_conv("x")]) == ["fine"]
        assert len(server.requests) == 3
    with FakeChatServer(lambda body: bad) as server:
        with pytest.raises(JudgeError) as err:
            _client(server, key_env).complete([_conv("which?")])
        assert len(server.requests) == 3  # 1 + max_retries
    message = str(err.value)
    assert server.base_url in message and MODEL in message and "after 3 attempts" in message
    assert re.search(what, message), message
    assert "sk-test-not-a-real-key" not in message


def _has_verdict(record):
    return "[[" in record["response"]


def test_replies_without_a_verdict_are_cached_as_such_and_asked_again_by_a_rerun(tmp_path, key_env):
    cache = tmp_path / "cache.jsonl"
    convs = [_conv(f"q{i}") for i in range(4)]
    with FakeChatServer(lambda body: "I cannot decide.") as broken:
        client = _client(broken, key_env, cache=cache, max_retries=1)
        records = client.complete_records(convs, valid=_has_verdict)
        client.complete_records(convs, valid=_has_verdict)  # the same run does not ask again
        assert len(broken.requests) == 4
    assert [r["response"] for r in records] == ["I cannot decide."] * 4
    lines = [json.loads(line) for line in cache.read_text().splitlines()]
    assert [(r["valid"], r["asks"]) for r in lines] == [(False, 1)] * 4
    # the server is fixed: a rerun asks the four again instead of replaying them
    with FakeChatServer(lambda body: "[[A>B]]") as fixed:
        replies = _client(fixed, key_env, cache=cache, max_retries=1).complete(
            convs, valid=_has_verdict
        )
        assert replies == ["[[A>B]]"] * 4
        assert len(fixed.requests) == 4
        # a further run replays the answers with a verdict: nothing is sent
        _client(fixed, key_env, cache=cache, max_retries=1).complete(convs, valid=_has_verdict)
        assert len(fixed.requests) == 4
    replay = ChatClient(None, MODEL, cache=cache, replay_only=True)
    assert replay.complete(convs, valid=_has_verdict) == ["[[A>B]]"] * 4


def test_a_reply_without_a_verdict_is_asked_again_at_most_max_retries_times(
    tmp_path, key_env, caplog
):
    cache = tmp_path / "cache.jsonl"
    with FakeChatServer(lambda body: "no verdict") as server:
        for _ in range(4):
            _client(server, key_env, cache=cache, max_retries=2).complete(
                [_conv("x")], valid=_has_verdict
            )
    assert len(server.requests) == 3  # asked by runs 1-3; run 4 replays
    assert "asked 3 times already" in caplog.text


def _progress_lines(caplog):
    return [r.getMessage() for r in caplog.records if "replies," in r.getMessage()]


def test_a_slow_reply_within_the_timeout_is_accepted_with_progress_while_waiting(key_env, caplog):
    caplog.set_level(logging.INFO, logger="dicewf.judge_client")

    def slow(body):
        time.sleep(0.7)
        return "late but fine"

    with FakeChatServer(slow) as server:
        client = _client(server, key_env, timeout=3.0, progress_s=0.2)
        assert client.complete([_conv("x")]) == ["late but fine"]
    assert len(server.requests) == 1
    lines = _progress_lines(caplog)
    assert any("0/1 replies, 0 failed attempts" in line for line in lines), lines
    assert "1/1 replies" in lines[-1]


def _hang(body):
    time.sleep(4)
    return "too late"


def test_a_hanging_server_times_out_per_request_is_named_and_shows_progress(key_env, caplog):
    caplog.set_level(logging.INFO, logger="dicewf.judge_client")
    start = time.monotonic()
    with FakeChatServer(_hang) as server:
        with pytest.raises(JudgeError) as err:
            _client(server, key_env, timeout=0.4, max_retries=1, progress_s=0.15).complete(
                [_conv("x")]
            )
        assert len(server.requests) == 2
    assert time.monotonic() - start < 3.0
    message = str(err.value)
    assert "Timeout" in message and server.base_url in message and MODEL in message
    # while it hangs, the log says so: nothing done, the failed attempt counted
    assert any("0/1 replies, 1 failed attempts" in line for line in _progress_lines(caplog))


def test_the_total_budget_stops_a_batch_and_names_the_judge(key_env):
    start = time.monotonic()
    with FakeChatServer(_hang) as server:
        client = _client(server, key_env, timeout=0.4, max_retries=10, budget_s=1.0, concurrency=2)
        with pytest.raises(JudgeError, match=r"time budget of 1 s \(budget_s\) ran out") as err:
            client.complete([_conv(f"q{i}") for i in range(6)])
    assert time.monotonic() - start < 3.0
    assert MODEL in str(err.value) and server.base_url in str(err.value)


def test_a_hang_cannot_block_a_request_for_an_hour_by_default():
    client = ChatClient(None, MODEL)
    worst = client.timeout * (1 + client.max_retries) + sum(
        min(client.backoff_s * 2**i, client.max_backoff_s) * 1.25 for i in range(client.max_retries)
    )
    assert worst < 20 * 60
    assert client.budget_s is not None


def test_progress_is_logged_with_failures_and_a_500_recovers(key_env, caplog):
    caplog.set_level(logging.INFO, logger="dicewf.judge_client")
    count = {"n": 0}
    lock = threading.Lock()

    def paced(body):
        with lock:
            count["n"] += 1
            if count["n"] == 1:
                return {"status": 500, "error": {"message": "boom"}}
        time.sleep(0.15)
        return "ok"

    with FakeChatServer(paced) as server:
        client = _client(server, key_env, concurrency=1, progress_s=0.2)
        assert client.complete([_conv(f"q{i}") for i in range(6)]) == ["ok"] * 6
    assert len(server.requests) == 7
    lines = _progress_lines(caplog)
    assert len(lines) >= 3, lines  # every 0.2 s over ~1 s, and the last
    assert re.search(r"\d/6 replies, 1 failed attempts, \d+ s elapsed", lines[0]), lines
    assert "6/6 replies" in lines[-1] and server.base_url in lines[-1]


def test_a_job_resumes_from_its_partial_file_and_leaves_only_the_declared_cache(tmp_path, key_env):
    from dicewf.judge_client import finish_job, job_client, resume_file

    out = tmp_path / "judge_cache.jsonl"
    config = {"model": MODEL, "api_key_env": key_env, "max_retries": 0}
    with FakeChatServer(lambda b: {"status": 400} if "q2" in str(b) else "ok") as server:
        client = job_client({**config, "base_url": server.base_url}, out)
        with pytest.raises(JudgeError):  # the job fails part-way
            client.complete([_conv("q1"), _conv("q2")])
    assert resume_file(out) == tmp_path / "judge_cache.partial.jsonl"
    assert resume_file(out).exists() and not out.exists()
    with FakeChatServer(_echo) as server:  # the rerun sends only what is missing
        client = job_client({**config, "base_url": server.base_url}, out)
        assert client.complete([_conv("q1"), _conv("q2")]) == ["ok", "echo: q2"]
        finish_job(client, out)
        assert len(server.requests) == 1
    assert not resume_file(out).exists()  # so --forcerun (which deletes out) asks everything
    assert [json.loads(line)["response"] for line in out.read_text().splitlines()] == [
        "ok",
        "echo: q2",
    ]
    # a cache named in config is the user's: used and kept
    mine = tmp_path / "mine.jsonl"
    with FakeChatServer(_echo) as server:
        client = job_client({**config, "base_url": server.base_url, "cache": str(mine)}, out)
        client.complete([_conv("q3")])
        finish_job(client, out)
    assert mine.exists() and client.cache_path == mine


# --- edges the mutation benchmark (benchmarks/mutation.py) showed untested -------------------------


def test_the_defaults_are_the_schemas_chat_client_defaults(tmp_path):
    import yaml
    from dicewf import judge_client

    schema = Path(judge_client.__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"
    props = yaml.safe_load(schema.read_text())["definitions"]["chat_client"]["properties"]
    want = {name: spec["default"] for name, spec in props.items() if "default" in spec}
    assert judge_client._schema_defaults() == want == judge_client.DEFAULTS
    assert want  # the schema gives some
    small = tmp_path / "schema.yaml"
    small.write_text(
        "definitions:\n  chat_client:\n    properties:\n"
        "      a: {type: integer, default: 3}\n      b: {type: string}\n"
    )
    assert judge_client._schema_defaults(small) == {"a": 3}


def test_an_excerpt_is_the_replys_text_with_spaces_collapsed_and_clipped():
    from dicewf.judge_client import _excerpt

    class Model:  # the openai package's response models dump themselves as JSON
        def model_dump_json(self, exclude_none):
            return '{"a": 1}' if exclude_none else '{"a": 1, "b": null}'

    assert _excerpt("a  b\n c") == "'a b c'"
    assert _excerpt(b"caf\xc3\xa9 \xff") == repr("café \ufffd")
    assert _excerpt(Model()) == repr('{"a": 1}')
    assert _excerpt({"x": 1}) == repr("{'x': 1}")
    assert _excerpt("x" * 200) == repr("x" * 200)
    assert _excerpt("x" * 201) == repr("x" * 197 + "...")
    assert _excerpt("abcdef", width=5) == repr("ab...")


def test_a_conversation_is_described_by_its_last_user_turn_clipped_to_80():
    from dicewf.judge_client import _describe

    conversation = [
        {"role": "user", "content": "first"},
        {"role": "user", "content": "second  one\n"},
        {"role": "assistant", "content": "reply"},
    ]
    assert _describe(conversation) == "'second one'"
    assert _describe([{"role": "system", "content": "only"}]) == "'only'"
    assert _describe([{"role": "user"}]) == "''"  # a turn without content
    assert _describe([{"role": "user", "content": "y" * 80}]) == repr("y" * 80)
    assert _describe([{"role": "user", "content": "y" * 81}]) == repr("y" * 77 + "...")


def test_reply_text_takes_content_finish_reason_and_usage_or_says_what_is_missing():
    from types import SimpleNamespace

    from dicewf.judge_client import MalformedReplyError, _reply_text

    class Usage:
        def model_dump(self):
            return {"total_tokens": 7}

    choice = SimpleNamespace(message=SimpleNamespace(content="ok"), finish_reason="stop")
    assert _reply_text(SimpleNamespace(choices=[choice], usage=Usage())) == (
        "ok",
        "stop",
        {"total_tokens": 7},
    )
    bare = SimpleNamespace(message=SimpleNamespace(content="ok"))
    assert _reply_text(SimpleNamespace(choices=[bare])) == ("ok", None, None)
    with pytest.raises(MalformedReplyError, match=r"^a body that is not JSON: '<html>'$"):
        _reply_text(b"<html>")
    with pytest.raises(MalformedReplyError, match=r"^a reply without choices: \"\{'id': 1\}\"$"):
        _reply_text({"id": 1})
    with pytest.raises(
        MalformedReplyError, match=r"^a reply without message content: \"\{'index': 0\}\"$"
    ):
        _reply_text(SimpleNamespace(choices=[{"index": 0}]))


def test_cache_and_export_lines_are_sorted_json_with_text_kept_as_utf8(tmp_path, key_env):
    cache = tmp_path / "new" / "folder" / "cache.jsonl"  # folders made as needed
    with FakeChatServer(_echo) as server:
        client = ChatClient(server.base_url, MODEL, api_key_env=key_env, cache=cache)
        assert client.complete([_conv("café")]) == ["echo: café"]
    exported = client.export(tmp_path / "export.jsonl")
    for path in (cache, exported):
        (line,) = path.read_bytes().decode("utf-8").splitlines()
        assert line == json.dumps(json.loads(line), ensure_ascii=False, sort_keys=True)
        assert "echo: café" in line


def test_blank_and_unreadable_cache_lines_are_skipped_the_bad_one_named_the_next_ones_read(
    tmp_path, key_env, caplog
):
    cache = tmp_path / "cache.jsonl"
    with FakeChatServer(_echo) as server:
        ChatClient(server.base_url, MODEL, api_key_env=key_env, cache=cache).complete(
            [_conv("a"), _conv("b")]
        )
    first, second = cache.read_text().splitlines()
    cache.write_text(f"{first}\n\nnot json\n{second}\n")  # a blank line is passed over
    with caplog.at_level(logging.INFO, logger="dicewf.judge_client"):
        replay = ChatClient(None, MODEL, cache=cache, replay_only=True)
        assert sorted(replay.complete([_conv("a"), _conv("b")])) == ["echo: a", "echo: b"]
    assert f"{cache}:3: skipping an unreadable cache line" in caplog.messages
    assert f"judge cache {cache}: 2 recorded replies" in caplog.messages


# --- ChatClient against ScriptedOpenAI (a test double of the openai package's client) ------------
# (mutation benchmark, second pass: what each survivor of judge_client changed, asserted exactly)

JUDGE_URL = "http://judge.test/v1"  # never contacted: requests go to the test double
NAME = f"judge {MODEL!r} at {JUDGE_URL}"


class ScriptedOpenAI:
    """Test double of ``openai.OpenAI``: ``chat.completions.create`` records its keyword arguments
    and answers with ``script(n, kwargs)`` (n: the call's index): a reply text, a completion, or an
    exception, which it raises."""

    def __init__(self, script):
        from types import SimpleNamespace

        self.script = script
        self.calls: list[dict] = []
        self._lock = threading.Lock()
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))

    def _create(self, **kwargs):
        with self._lock:
            self.calls.append(kwargs)
            n = len(self.calls) - 1
        answer = self.script(n, kwargs)
        if isinstance(answer, BaseException):
            raise answer
        return _completion(answer) if isinstance(answer, str) else answer


class _Usage:  # the openai package's usage model, as far as the client reads it
    def __init__(self, **counts):
        self.counts = counts

    def model_dump(self):
        return dict(self.counts)


def _completion(text, finish_reason="stop", usage=None):
    from types import SimpleNamespace

    choice = SimpleNamespace(message=SimpleNamespace(content=text), finish_reason=finish_reason)
    return SimpleNamespace(choices=[choice], usage=usage)


def _server_error(message="boom"):
    import httpx2  # the HTTP library of the installed openai package
    import openai

    request = httpx2.Request("POST", f"{JUDGE_URL}/chat/completions")
    return openai.InternalServerError(
        message, response=httpx2.Response(500, request=request), body=None
    )


def _scripted(script, **kwargs):
    """A client whose requests go to a ScriptedOpenAI answering with ``script``."""
    client = ChatClient(JUDGE_URL, MODEL, api_key_env=None, **kwargs)
    client._client = ScriptedOpenAI(script)
    return client, client._client


def _reply(text):
    return lambda n, kwargs: text


@pytest.fixture
def no_waiting(monkeypatch):
    """Backoff sleeps recorded instead of slept; jitter factors 0.75, 1.25, 0.75, ... (the ends
    of the jitter range, alternating)."""
    from types import SimpleNamespace

    from dicewf import judge_client

    sleeps: list[float] = []
    ends = []

    def uniform(a, b):
        ends.append((a, b))
        return (a, b)[(len(ends) - 1) % 2]

    monkeypatch.setattr(
        judge_client, "time", SimpleNamespace(sleep=sleeps.append, monotonic=time.monotonic)
    )
    monkeypatch.setattr(judge_client, "random", SimpleNamespace(uniform=uniform))
    return sleeps


@pytest.fixture
def ascii_locale():
    """The process's LC_CTYPE set to C (ASCII as open()'s default encoding), then restored."""
    import locale

    before = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, before)


def test_create_parameters_are_the_create_arguments_without_self():
    from dicewf.judge_client import _create_parameters

    names = _create_parameters()
    assert "self" not in names
    assert {"messages", "model", "top_p", "seed", "timeout"} <= names


def test_the_schema_cache_and_export_are_utf8_whatever_the_locale(tmp_path, ascii_locale):
    from dicewf.judge_client import _schema_defaults

    schema = tmp_path / "schema.yaml"
    schema.write_bytes(
        "definitions:\n  chat_client:\n    properties:\n      a: {default: café}\n".encode()
    )
    assert _schema_defaults(schema) == {"a": "café"}
    cache = tmp_path / "cache.jsonl"
    client, _ = _scripted(_reply("très bien [[A>B]]"), cache=cache)
    assert client.complete([_conv("é?")]) == ["très bien [[A>B]]"]
    exported = client.export(tmp_path / "export.jsonl")
    for path in (cache, exported):
        assert "très bien" in path.read_bytes().decode("utf-8")
    replay = ChatClient(None, MODEL, api_key_env=None, cache=cache, replay_only=True)
    assert replay.complete([_conv("é?")]) == ["très bien [[A>B]]"]


def test_request_keys_hash_the_compact_sorted_json_with_text_kept_as_utf8():
    import hashlib

    text = '{"messages":[{"content":"café","role":"user"}],"model":"m","params":{"t":0}}'
    want = hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert request_key("m", [{"role": "user", "content": "café"}], {"t": 0}) == want


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model": ""}, "model must name the judge model"),
        ({"concurrency": 0}, "concurrency must be >= 1, got 0"),
        ({"max_retries": -1}, "max_retries must be >= 0, got -1"),
        ({"timeout": 0}, "timeout must be > 0, got 0"),
        ({"budget_s": 0}, "budget_s must be > 0, got 0"),
        ({"progress_s": -1}, "progress_s must be > 0, got -1"),
        ({"replay_only": True}, "replay_only needs a cache file to replay from"),
    ],
)
def test_a_bad_constructor_argument_is_named_in_the_error(kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape('ChatClient: ' + message)}$"):
        ChatClient(None, **{"model": MODEL, **kwargs})


def test_no_time_budget_is_allowed():
    assert ChatClient(None, MODEL, budget_s=None).budget_s is None


@pytest.mark.parametrize(
    "name", ["messages", "model", "temperature", "max_tokens", "stream", "n", "timeout"]
)
def test_request_may_not_set_an_argument_the_client_fixes(name):
    message = (
        f"ChatClient: request may not set [{name!r}]; they are fixed or given as their own "
        "arguments"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ChatClient(None, MODEL, request={name: 1})


def test_repr_shows_the_cache_path_or_none(tmp_path):
    cache = tmp_path / "c.jsonl"
    params = {"temperature": 0.0, "max_tokens": 4096}
    assert repr(ChatClient(JUDGE_URL, MODEL, api_key_env=None, cache=cache)) == (
        f"ChatClient(base_url={JUDGE_URL!r}, model={MODEL!r}, api_key_env=None, "
        f"params={params!r}, cache={str(cache)!r}, replay_only=False)"
    )
    assert "cache=None, " in repr(ChatClient(JUDGE_URL, MODEL))


def test_the_budget_error_says_how_far_the_batch_got_and_where_its_replies_are(tmp_path):
    cache = tmp_path / "c.jsonl"
    client = ChatClient(JUDGE_URL, MODEL, budget_s=2.5, cache=cache)
    client._failed_attempts = 4
    assert str(client._budget_error(3, 10)) == (
        f"{NAME}: the time budget of 2.5 s (budget_s) ran out with 3 of 10 replies "
        f"(4 failed attempts); the replies so far are kept in {cache}. Check the server, or "
        "raise budget_s or timeout"
    )
    uncached = ChatClient(JUDGE_URL, MODEL, budget_s=60)
    assert str(uncached._budget_error()) == (
        f"{NAME}: the time budget of 60 s (budget_s) ran out (0 failed attempts); no cache "
        "keeps the replies so far. Check the server, or raise budget_s or timeout"
    )


@pytest.mark.parametrize("base_url, where", [(None, "OpenAI's API"), (JUDGE_URL, JUDGE_URL)])
@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_a_missing_key_names_the_variable_the_endpoint_and_the_fix(
    monkeypatch, base_url, where, value
):
    if value is None:
        monkeypatch.delenv("DICE_TEST_UNSET_KEY", raising=False)
    else:
        monkeypatch.setenv("DICE_TEST_UNSET_KEY", value)
    client = ChatClient(base_url, MODEL, api_key_env="DICE_TEST_UNSET_KEY")
    message = (
        f"environment variable DICE_TEST_UNSET_KEY is not set (or empty); the judge {MODEL!r} "
        f"at {where} needs an API key there. Set it, or set api_key_env: null for a local "
        "server that needs no key."
    )
    with pytest.raises(MissingAPIKeyError, match=f"^{re.escape(message)}$"):
        client._openai()


def test_the_key_sent_is_redacted_even_after_its_variable_changes(monkeypatch):
    secret = "sk-SENT-" + "3" * 24
    monkeypatch.setenv("DICE_TEST_SECRET", secret)
    client = ChatClient(JUDGE_URL, MODEL, api_key_env="DICE_TEST_SECRET")
    client._openai()  # builds the openai client with the key: nothing is sent
    monkeypatch.delenv("DICE_TEST_SECRET")
    assert client._redact(f"you sent {secret}") == "you sent ***"


def test_a_cache_recorded_with_the_key_is_redacted_when_replayed_and_exported(
    tmp_path, monkeypatch
):
    secret = "sk-OLD-" + "9" * 24
    monkeypatch.setenv("DICE_TEST_SECRET", secret)
    conv = [{"role": "user", "content": f"my key is {secret}"}, {"role": "user", "content": "x"}]
    cache = tmp_path / "old.jsonl"  # written by a tool that did not redact
    client = ChatClient(None, MODEL, api_key_env="DICE_TEST_SECRET", cache=tmp_path / "none")
    record = {"key": client.key(conv), "messages": conv, "response": f"echo {secret} [[A>B]]"}
    cache.write_text(json.dumps(record) + "\n")
    replay = ChatClient(None, MODEL, api_key_env="DICE_TEST_SECRET", cache=cache, replay_only=True)
    (got,) = replay.complete_records([conv])
    assert got["response"] == "echo *** [[A>B]]"
    assert got["messages"] == [
        {"role": "user", "content": "my key is ***"},
        {"role": "user", "content": "x"},
    ]
    exported = replay.export(tmp_path / "export.jsonl")
    assert secret not in exported.read_text() and "echo *** [[A>B]]" in exported.read_text()


def test_a_request_sends_model_messages_parameters_and_timeout_and_records_the_reply():
    def script(n, kwargs):
        return _completion("[[A>B]]", finish_reason="length", usage=_Usage(total_tokens=9))

    client, fake = _scripted(script, budget_s=None, timeout=7.0, request={"seed": 3})
    conv = _conv("which?")
    (record,) = client.complete_records([conv])
    params = {"temperature": 0.0, "max_tokens": 4096, "seed": 3}
    assert fake.calls == [{"model": MODEL, "messages": conv, "timeout": 7.0, **params}]
    assert record == {
        "key": request_key(MODEL, conv, params),
        "model": MODEL,
        "params": params,
        "messages": conv,
        "response": "[[A>B]]",
        "finish_reason": "length",
        "usage": {"total_tokens": 9},
        "asks": 1,
    }


def test_a_batch_within_a_short_budget_succeeds_each_request_bounded_by_the_time_left():
    client, fake = _scripted(_reply("ok"), budget_s=0.9, timeout=7.0)
    assert client.complete([_conv("a"), _conv("b")]) == ["ok", "ok"]
    assert all(0 < call["timeout"] <= 0.9 for call in fake.calls), fake.calls


def test_no_request_is_sent_once_the_budget_has_run_out():
    from dicewf.judge_client import BudgetError

    client, fake = _scripted(_reply("ok"), budget_s=10)
    client._deadline = time.monotonic() - 1
    with pytest.raises(BudgetError, match="time budget of 10 s"):
        client._request(client.key(_conv("x")), _conv("x"))
    client._remaining = lambda: 0.0  # exactly no time left
    with pytest.raises(BudgetError):
        client._request(client.key(_conv("x")), _conv("x"))
    assert fake.calls == []


def test_retries_back_off_exponentially_with_jitter_up_to_the_cap_and_are_logged(
    no_waiting, caplog
):
    caplog.set_level(logging.INFO, logger="dicewf.judge_client")

    def script(n, kwargs):
        return _server_error() if n < 3 else "ok"

    client, fake = _scripted(script, budget_s=None, max_retries=3, backoff_s=0.4, max_backoff_s=1.0)
    assert client.complete([_conv("x")]) == ["ok"]
    assert len(fake.calls) == 4
    # 0.4 * 0.75, 0.8 * 1.25, min(1.6, 1.0) * 0.75
    assert no_waiting == pytest.approx([0.3, 1.0, 0.75])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"judge request to {JUDGE_URL} failed (InternalServerError: boom); retry {i}/3 in {d} s"
        for i, d in ((1, "0.3"), (2, "1.0"), (3, "0.8"))
    ]
    (line,) = _progress_lines(caplog)  # the sleeps were not slept: about 0 s
    assert re.fullmatch(f"{re.escape(NAME)}: 1/1 replies, 3 failed attempts, [01] s elapsed", line)


def test_the_wait_before_a_retry_never_outlasts_the_budget(no_waiting):
    client, _ = _scripted(lambda n, kwargs: _server_error(), budget_s=0.9, max_retries=1)
    client.backoff_s = 10.0
    with pytest.raises(JudgeError, match="after 2 attempts"):
        client.complete([_conv("x")])
    assert len(no_waiting) == 1 and 0.4 < no_waiting[0] <= 0.9, no_waiting


def test_a_retry_is_abandoned_when_another_request_of_the_batch_failed(no_waiting):
    client, fake = _scripted(lambda n, kwargs: _server_error(), max_retries=3)
    client._stop.set()  # what _run does when a request of the batch fails
    with pytest.raises(JudgeError, match=f"^{re.escape(NAME)}: request abandoned as another one"):
        client._request(client.key(_conv("x")), _conv("x"))
    assert len(fake.calls) == 1


def test_an_unexpected_error_is_not_retried_and_is_named_without_an_attempt_count():
    from dicewf.judge_client import _describe

    client, fake = _scripted(lambda n, kwargs: RuntimeError("bug"), max_retries=3)
    message = (
        f"judge request to {MODEL!r} at {JUDGE_URL} failed (RuntimeError: bug); request ending "
        f"with {_describe(_conv('x'))}"
    )
    with pytest.raises(JudgeError, match=f"^{re.escape(message)}$"):
        client.complete([_conv("x")])
    assert len(fake.calls) == 1
    assert not ChatClient._transient(RuntimeError("bug"))
    assert ChatClient._transient(_server_error())


def test_a_replay_miss_names_the_model_the_request_its_key_and_the_cache(tmp_path):
    cache = tmp_path / "c.jsonl"
    client = ChatClient(None, MODEL, cache=cache, replay_only=True)
    key = client.key(_conv("never asked"))
    message = (
        f"no recorded reply for the request to {MODEL!r} ending with 'never asked' "
        f"(key {key[:12]}) in {cache}; replay_only is set, so nothing is sent"
    )
    with pytest.raises(ReplayMissError, match=f"^{re.escape(message)}$"):
        client.complete([_conv("never asked")])


def test_a_cached_reply_without_an_asks_count_counts_as_asked_once(tmp_path):
    cache = tmp_path / "c.jsonl"
    client, fake = _scripted(_reply("[[A>B]]"), cache=cache, max_retries=1)
    conv = _conv("x")
    old = {"key": client.key(conv), "messages": conv, "response": "no verdict", "valid": False}
    cache.write_text(json.dumps(old) + "\n")  # recorded before asks were counted
    client, fake = _scripted(_reply("[[A>B]]"), cache=cache, max_retries=1)
    (record,) = client.complete_records([conv], valid=_has_verdict)
    assert len(fake.calls) == 1  # asked once so far, max_retries 1: asked again
    assert (record["response"], record["asks"], record["valid"]) == ("[[A>B]]", 2, True)


def test_the_budget_stops_a_batch_whose_requests_are_still_in_flight(tmp_path):
    from dicewf.judge_client import BudgetError

    cache = tmp_path / "c.jsonl"
    client = ChatClient(JUDGE_URL, MODEL, api_key_env=None, cache=cache, concurrency=2)
    client.budget_s = 0.3  # the batch starts the clock

    def in_flight(n, kwargs):  # a reply that comes once the client gives up on the batch
        client._stop.wait(5)
        return "late"

    client._client = fake = ScriptedOpenAI(in_flight)
    start = time.monotonic()
    with pytest.raises(BudgetError) as err:
        client.complete([_conv(f"q{i}") for i in range(3)])
    assert time.monotonic() - start < 1.0  # not after a wait of 1 s or more
    assert "ran out with 2 of 3 replies" in str(err.value)
    assert len(fake.calls) == 2 and len(cache.read_text().splitlines()) == 2


def test_a_failed_request_stops_the_batch_before_queued_requests_are_sent():
    client, fake = _scripted(lambda n, kwargs: RuntimeError("bug"), concurrency=1)
    with pytest.raises(JudgeError, match="RuntimeError: bug"):
        client.complete([_conv(f"q{i}") for i in range(3)])
    assert len(fake.calls) == 1


def test_each_new_reply_is_cached_with_whether_it_holds_a_verdict(tmp_path):
    cache = tmp_path / "c.jsonl"
    client, _ = _scripted(
        lambda n, kwargs: "[[A>B]]" if kwargs["messages"][-1]["content"] == "a" else "hmm",
        cache=cache,
    )
    client.complete([_conv("a"), _conv("b")], valid=_has_verdict)
    lines = {
        json.loads(line)["response"]: json.loads(line) for line in cache.read_text().splitlines()
    }
    assert (lines["[[A>B]]"]["valid"], lines["hmm"]["valid"]) == (True, False)


def test_progress_is_logged_once_for_a_batch_faster_than_progress_s(caplog):
    caplog.set_level(logging.INFO, logger="dicewf.judge_client")
    client, _ = _scripted(_reply("ok"), concurrency=1, progress_s=60, budget_s=3600)
    client.complete([_conv(f"q{i}") for i in range(3)])
    (line,) = _progress_lines(caplog)
    pattern = r": 3/3 replies, 0 failed attempts, [01] s elapsed, budget left 3[56]\d\d s"
    assert line.startswith(NAME) and re.fullmatch(pattern, line[len(NAME) :]), line


def test_progress_gives_the_elapsed_time_and_no_negative_budget_left(caplog):
    caplog.set_level(logging.INFO, logger="dicewf.judge_client")
    client = ChatClient(JUDGE_URL, MODEL, api_key_env=None, budget_s=None)
    client._started = time.monotonic() - 3.0  # no budget: no deadline
    client._progress(0, 1)
    now = time.monotonic()
    client._started, client._deadline = now - 5.0, now - 1.0
    client._progress(1, 4)
    assert _progress_lines(caplog) == [
        f"{NAME}: 0/1 replies, 0 failed attempts, 3 s elapsed",
        f"{NAME}: 1/4 replies, 0 failed attempts, 5 s elapsed, budget left 0 s",
    ]


def test_the_batch_log_counts_requests_cache_hits_re_asks_and_replies_without_a_verdict(
    tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="dicewf.judge_client")
    cache = tmp_path / "c.jsonl"
    client, _ = _scripted(_reply("[[A>B]]"), cache=cache, max_retries=1)
    convs = {name: _conv(name) for name in ("a", "b1", "b2", "c1", "c2", "d")}
    with open(cache, "w") as f:  # a: has a verdict; b: asked once; c: asked 1 + max_retries times
        for name, response, asks in [
            ("a", "[[A>B]]", 1),
            ("b1", "?", 1),
            ("b2", "?", 1),
            ("c1", "?", 2),
            ("c2", "?", 2),
        ]:
            key = client.key(convs[name])
            rec = {"key": key, "messages": convs[name], "response": response, "asks": asks}
            f.write(json.dumps(rec) + "\n")
    client, fake = _scripted(_reply("still no verdict"), cache=cache, max_retries=1)
    order = ["a", "a", "b1", "b2", "c1", "c2", "d"]
    replies = client.complete([convs[n] for n in order], valid=_has_verdict)
    assert replies == ["[[A>B]]"] * 2 + ["still no verdict"] * 2 + ["?"] * 2 + ["still no verdict"]
    assert len(fake.calls) == 3
    messages = [r.getMessage() for r in caplog.records if r.name == "dicewf.judge_client"]
    assert f"judge cache {cache}: 5 recorded replies" in messages
    assert (
        f"{NAME}: 7 requests (6 distinct, 3 from cache, 3 to send of which 2 cached without a "
        "verdict)" in messages
    )
    assert (
        f"{NAME}: 2 cached replies without a verdict were asked 2 times already (max_retries); "
        "replaying them" in messages
    )
    assert (
        f'{NAME}: 5 of 6 distinct replies hold no verdict; they are cached as such ("valid": '
        f"false) and asked again by a rerun (cache {cache})" in messages
    )
    caplog.clear()
    uncached, _ = _scripted(_reply("?"))
    uncached.complete([_conv("x")], valid=_has_verdict)
    assert caplog.records[-1].getMessage() == (
        f'{NAME}: 1 of 1 distinct replies hold no verdict; they are cached as such ("valid": '
        "false) and asked again by a rerun"
    )


def test_from_config_merges_extra_keys_into_a_configured_request_and_names_the_bad_ones():
    client = ChatClient.from_config(
        {"base_url": None, "model": MODEL, "request": {"seed": 7}, "top_p": 0.9}
    )
    assert client.params == {"temperature": 0.0, "max_tokens": 4096, "seed": 7, "top_p": 0.9}
    with pytest.raises(ValueError, match=re.escape("create argument(s) ['self']")):
        ChatClient.from_config({"base_url": None, "model": MODEL, "self": 1})
    message = (
        "ChatClient: API keys are not read from configuration; put the key in an environment "
        "variable and name it with api_key_env"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ChatClient.from_config({"base_url": None, "model": MODEL, "api_key": "sk-in-config"})


def test_cached_gives_the_record_of_a_conversation_once_it_was_answered():
    client, _ = _scripted(_reply("[[A>B]]"))
    assert client.cached(_conv("x")) is None
    client.complete([_conv("x")])
    assert client.cached(_conv("x"))["response"] == "[[A>B]]"
    assert client.cached(_conv("y")) is None


def test_a_job_that_sent_nothing_finishes_with_an_empty_declared_cache(tmp_path):
    from dicewf.judge_client import finish_job, job_client, resume_file

    out = tmp_path / "judge_cache.jsonl"
    client = job_client(
        {"base_url": None, "model": MODEL, "api_key_env": None}, out, temperature=0.5
    )
    assert client.params["temperature"] == 0.5  # overrides reach the client
    assert client.complete([]) == []
    finish_job(client, out)  # no resume file was written: nothing to remove
    assert out.read_text() == "" and not resume_file(out).exists()


def test_progress_lines_come_every_progress_s_not_more_often(caplog):
    caplog.set_level(logging.INFO, logger="dicewf.judge_client")

    def slow(n, kwargs):
        time.sleep(0.3)
        return "ok"

    client, _ = _scripted(slow, concurrency=1, progress_s=0.2)
    start = time.monotonic()
    client.complete([_conv("a"), _conv("b")])  # about 0.6 s: 3 lines on time and the last
    lines = _progress_lines(caplog)
    assert 2 <= len(lines) <= (time.monotonic() - start) / 0.2 + 2, lines
    assert "2/2 replies" in lines[-1]
