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
