"""A client for LLM judges behind an OpenAI-compatible chat-completions endpoint.

The paper's evaluations send each comparison to a judge model: OpenAI's GPT-4-Turbo for AlpacaEval 2
and Mistral-Large-Instruct-2407 served by an OpenAI-compatible server (such as vLLM's) for
Arena-Hard. :class:`ChatClient` sends batches of chat conversations through the ``openai``
package's documented API (``openai.OpenAI(base_url=..., api_key=...)``,
``client.chat.completions.create``) and returns the reply texts in request order.

* Secrets: the API key is read from the environment variable named by ``api_key_env`` when the
  first request goes out; configuration names the variable, never the key. ``api_key_env: null``
  is for a local server started without a key (a placeholder key is sent). The key is not written
  to the cache, to logs or to exception messages, nor returned in a reply or a record, live or
  replayed from the cache (any occurrence is replaced by ``***``).
* Concurrency and retries: requests run in a thread pool (``concurrency`` at a time). Transient
  failures (connection errors, timeouts, HTTP 408/409/429 and 5xx) and malformed replies (a
  body that is not a chat completion, such as a proxy's HTML page; no ``choices``; no message
  content) are retried up to ``max_retries`` times with exponential backoff and jitter, then
  fail naming the endpoint, the model and what came back; other errors stop the batch at once.
* Time: ``timeout`` bounds each attempt and ``budget_s`` the whole client (every request and
  retry, from the first request sent): when it runs out the batch stops with an error naming the
  judge and how far it got. Progress (replies done of total, failed attempts, elapsed time) is
  logged every ``progress_s`` seconds. The workflow's defaults of these are the schema's
  (``definitions.chat_client`` of ``workflow/schemas/config.schema.yaml``), read from there.
* Cache: with ``cache`` set, each reply is appended to a JSONL file as soon as it arrives, keyed
  by a SHA-256 hash of the model name, the messages and the request parameters (not the server's
  address, so recorded replies replay against any server of the same model). A rerun reads its
  replies from the file and sends only what is missing, so an interrupted job resumes and a finished
  one replays with no network. ``replay_only=True`` never contacts a server: a request without a
  recorded reply raises :class:`ReplayMissError` naming it.
* Unusable replies: the caller, who parses the replies, may pass ``valid`` (a predicate on a
  record) to :meth:`ChatClient.complete_records`. A reply it rejects (no verdict) is returned and
  cached with ``"valid": false``, but a later run asks again instead of replaying it, up to
  ``max_retries`` times per request (``asks`` in the record counts them).
* Snakemake jobs (:func:`job_client`, :func:`finish_job`): replies go to an undeclared resume file
  beside the job's declared cache output while the job runs (a killed or failed job resumes from
  it: Snakemake deletes a job's declared outputs before it runs), and are written to the declared
  output when the job succeeds, the resume file removed; so ``--forcerun`` asks everything again.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULTS",
    "ChatClient",
    "JudgeError",
    "MissingAPIKeyError",
    "ReplayMissError",
    "finish_job",
    "job_client",
    "request_key",
    "resume_file",
]

log = logging.getLogger(__name__)

#: Sent as the key when ``api_key_env`` is None (a local server without authentication).
PLACEHOLDER_KEY = "EMPTY"
#: HTTP statuses worth retrying besides 5xx: request timeout, conflict, rate limit.
RETRY_STATUSES = frozenset({408, 409, 429})

Message = Mapping[str, str]
Record = dict[str, Any]

#: The workflow config schema, whose ``definitions.chat_client`` holds the judges' defaults.
SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


def _schema_defaults(path: Path = SCHEMA) -> dict[str, Any]:
    """The ``default`` of each property of the schema's ``chat_client`` definition."""
    import yaml

    with open(path, encoding="utf-8") as f:
        props = yaml.safe_load(f)["definitions"]["chat_client"]["properties"]
    return {name: spec["default"] for name, spec in props.items() if "default" in spec}


#: ChatClient's defaults, from the schema (one place for them; the config gets the same values).
DEFAULTS: dict[str, Any] = _schema_defaults()


class JudgeError(RuntimeError):
    """A judge request failed (after retries, or with a non-transient error)."""


class MissingAPIKeyError(JudgeError):
    """The environment variable that should hold the API key is unset or empty."""


class ReplayMissError(JudgeError):
    """Replay-only mode met a request whose reply is not in the cache."""


class BudgetError(JudgeError):
    """The client's total time budget (``budget_s``) ran out."""


class MalformedReplyError(Exception):
    """An HTTP 200 reply that is not a usable chat completion (retried like a transient error)."""


def _excerpt(value: Any, width: int = 200) -> str:
    """What came back, for an error message: its text or JSON, clipped to ``width``."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        text = value
    elif hasattr(value, "model_dump_json"):  # the openai package's response models
        text = value.model_dump_json(exclude_none=True)
    else:
        text = repr(value)
    text = " ".join(text.split())
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def _reply_text(completion: Any) -> tuple[str, Any, Any]:
    """(content, finish_reason, usage) of a completion; MalformedReplyError if it has none."""
    if isinstance(completion, str | bytes):  # openai returns the body when it is not JSON
        raise MalformedReplyError(f"a body that is not JSON: {_excerpt(completion)}")
    choices = getattr(completion, "choices", None)
    if not choices:
        raise MalformedReplyError(f"a reply without choices: {_excerpt(completion)}")
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    if not isinstance(content, str):
        raise MalformedReplyError(f"a reply without message content: {_excerpt(choices[0])}")
    usage = getattr(completion, "usage", None)
    return (
        content,
        getattr(choices[0], "finish_reason", None),
        (usage.model_dump() if usage is not None else None),
    )


def request_key(model: str, messages: Sequence[Message], params: Mapping[str, Any]) -> str:
    """SHA-256 hex digest identifying a request: model, messages and request parameters."""
    payload = {"model": model, "messages": [dict(m) for m in messages], "params": dict(params)}
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _create_parameters() -> frozenset[str]:
    """Names accepted by ``client.chat.completions.create`` in the installed ``openai``."""
    from openai.resources.chat.completions import Completions

    return frozenset(inspect.signature(Completions.create).parameters) - {"self"}


def _describe(messages: Sequence[Message], width: int = 80) -> str:
    """A short description of a conversation for error messages: its last user turn, clipped."""
    last = next((m for m in reversed(messages) if m.get("role") == "user"), messages[-1])
    text = " ".join(str(last.get("content", "")).split())
    return repr(text if len(text) <= width else text[: width - 3] + "...")


class ChatClient:
    """Send chat conversations to one judge model and return its replies (see the module docstring).

    ``base_url`` is the endpoint's ``/v1`` address (None: OpenAI's API). ``temperature`` and
    ``max_tokens`` plus any further ``create()`` arguments in ``request`` (e.g. ``top_p``, ``seed``,
    ``stop``; checked against the installed ``openai``) are sent with every request and are part
    of the cache key. ``timeout`` bounds each attempt, in seconds; ``backoff_s`` is the first
    retry's delay (doubled on each further retry, at most ``max_backoff_s``, with +-25 % jitter);
    ``budget_s`` bounds the client's whole work (None: no bound); ``progress_s`` is the interval
    of the progress log lines. Defaults: :data:`DEFAULTS` (the config schema's).
    """

    def __init__(
        self,
        base_url: str | None,
        model: str,
        api_key_env: str | None = DEFAULTS["api_key_env"],
        temperature: float = DEFAULTS["temperature"],
        max_tokens: int = DEFAULTS["max_tokens"],
        max_retries: int = DEFAULTS["max_retries"],
        concurrency: int = DEFAULTS["concurrency"],
        cache: str | os.PathLike | None = None,
        replay_only: bool = False,
        timeout: float = DEFAULTS["timeout"],
        backoff_s: float = DEFAULTS["backoff_s"],
        max_backoff_s: float = DEFAULTS["max_backoff_s"],
        budget_s: float | None = DEFAULTS["budget_s"],
        progress_s: float = DEFAULTS["progress_s"],
        request: Mapping[str, Any] | None = None,
    ) -> None:
        if not model:
            raise ValueError("ChatClient: model must name the judge model")
        if concurrency < 1:
            raise ValueError(f"ChatClient: concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"ChatClient: max_retries must be >= 0, got {max_retries}")
        for name, value in (
            ("timeout", timeout),
            ("budget_s", budget_s),
            ("progress_s", progress_s),
        ):
            if value is not None and value <= 0:
                raise ValueError(f"ChatClient: {name} must be > 0, got {value}")
        if replay_only and cache is None:
            raise ValueError("ChatClient: replay_only needs a cache file to replay from")
        request = dict(request or {})
        reserved = {"messages", "model", "temperature", "max_tokens", "stream", "n", "timeout"}
        clash = sorted(reserved & set(request))
        if clash:
            raise ValueError(
                f"ChatClient: request may not set {clash}; they are fixed or "
                "given as their own arguments"
            )
        unknown = sorted(set(request) - _create_parameters())
        if unknown:
            raise ValueError(f"ChatClient: unknown chat.completions.create argument(s) {unknown}")
        self.base_url = base_url
        self.model = model
        self.api_key_env = api_key_env
        self.params: dict[str, Any] = {
            "temperature": temperature,
            "max_tokens": max_tokens,
            **request,
        }
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.timeout = timeout
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.budget_s = budget_s
        self.progress_s = progress_s
        self.replay_only = replay_only
        self.cache_path = Path(cache) if cache is not None else None
        self._records: dict[str, dict[str, Any]] = {}
        self._used: dict[str, None] = {}  # keys returned by this client, in order (export)
        self._sent: set[str] = set()  # keys this client asked (a reply is re-asked once a run)
        self._lock = threading.Lock()
        self._deadline: float | None = None  # time.monotonic() when budget_s runs out
        self._started: float | None = None
        self._failed_attempts = 0
        self._stop = threading.Event()  # set when a batch has failed: in-flight requests stop
        self._client: Any = None
        self._secret: str | None = None
        if self.cache_path is not None and self.cache_path.exists():
            self._records = self._load_cache(self.cache_path)

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> ChatClient:
        """Build a client from a config mapping whose keys are this class's arguments.

        Keys other than the constructor's arguments are taken as ``create()`` arguments (``top_p``,
        ``seed``, ...) and merged into ``request``; an unknown name raises ValueError.
        """
        merged = {**config, **overrides}
        if "api_key" in merged:
            raise ValueError(
                "ChatClient: API keys are not read from configuration; put the key in "
                "an environment variable and name it with api_key_env"
            )
        own = set(inspect.signature(cls.__init__).parameters) - {"self"}
        extra = {k: v for k, v in merged.items() if k not in own}
        kwargs = {k: v for k, v in merged.items() if k in own}
        if extra:
            kwargs["request"] = {**(kwargs.get("request") or {}), **extra}
        return cls(**kwargs)

    def __repr__(self) -> str:  # never shows the key
        return (
            f"ChatClient(base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key_env={self.api_key_env!r}, params={self.params!r}, "
            f"cache={str(self.cache_path) if self.cache_path else None!r}, "
            f"replay_only={self.replay_only})"
        )

    @property
    def endpoint(self) -> str:
        """Where requests go, for messages: the base_url (never the key)."""
        return self.base_url or "OpenAI's API (base_url null)"

    @property
    def name(self) -> str:
        """The judge in messages: its model and endpoint."""
        return f"judge {self.model!r} at {self.endpoint}"

    # ------------------------------------------------------------------ cache
    @staticmethod
    def _load_cache(path: Path) -> dict[str, dict[str, Any]]:
        records: dict[str, dict[str, Any]] = {}
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    records[rec["key"]] = rec
                except (json.JSONDecodeError, KeyError, TypeError):
                    # a job killed mid-write leaves at most a truncated last line
                    log.warning("%s:%d: skipping an unreadable cache line", path, lineno)
        log.info("judge cache %s: %d recorded replies", path, len(records))
        return records

    def _store(self, record: dict[str, Any]) -> None:
        # redacted before it is kept: a reply that echoes the key returns what the cache replays
        record = self._redact_all(record)
        with self._lock:
            self._records[record["key"]] = record
            if self.cache_path is None:
                return
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            line = json.dumps(record, ensure_ascii=False, sort_keys=True)
            with open(self.cache_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())

    def key(self, messages: Sequence[Message]) -> str:
        """The cache key of one conversation sent with this client's model and parameters."""
        return request_key(self.model, messages, self.params)

    def cached(self, messages: Sequence[Message]) -> dict[str, Any] | None:
        """The recorded reply (with its request) for ``messages``, or None."""
        return self._records.get(self.key(messages))

    # ------------------------------------------------------------------ network
    def _redact(self, text: str) -> str:
        secret = self._secret
        if secret is None and self.api_key_env:  # replaying: the key a request would send
            secret = os.environ.get(self.api_key_env)
        if secret and secret != PLACEHOLDER_KEY:
            text = text.replace(secret, "***")
        return text

    def _redact_all(self, value: Any) -> Any:
        """``value`` with the key replaced by ``***`` in every string it holds (dicts, lists)."""
        if isinstance(value, str):
            return self._redact(value)
        if isinstance(value, Mapping):
            return {k: self._redact_all(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._redact_all(v) for v in value]
        return value

    def _openai(self) -> Any:
        with self._lock:
            if self._client is None:
                import openai

                if self.api_key_env is None:
                    key = PLACEHOLDER_KEY
                else:
                    key = os.environ.get(self.api_key_env, "")
                    if not key:
                        where = self.base_url or "OpenAI's API"
                        raise MissingAPIKeyError(
                            f"environment variable {self.api_key_env} is not set (or empty); the "
                            f"judge {self.model!r} at {where} needs an API key there. Set it, or "
                            "set api_key_env: null for a local server that needs no key."
                        )
                self._secret = key
                # retries are ours (logged, with our backoff), so the package's are switched off
                self._client = openai.OpenAI(
                    base_url=self.base_url, api_key=key, timeout=self.timeout, max_retries=0
                )
            return self._client

    @staticmethod
    def _transient(exc: BaseException) -> bool:
        import openai

        if isinstance(
            exc, MalformedReplyError | json.JSONDecodeError | openai.APIResponseValidationError
        ):
            return True  # a proxy's error page, a truncated body: the next try may be fine
        if isinstance(exc, openai.APIConnectionError):  # includes timeouts
            return True
        if isinstance(exc, openai.APIStatusError):
            return exc.status_code in RETRY_STATUSES or exc.status_code >= 500
        return False

    def _remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def _budget_error(self, done: int | None = None, total: int | None = None) -> BudgetError:
        got = f" with {done} of {total} replies" if total is not None else ""
        kept = (
            f"the replies so far are kept in {self.cache_path}"
            if self.cache_path
            else "no cache keeps the replies so far"
        )
        return BudgetError(
            f"{self.name}: the time budget of {self.budget_s:g} s (budget_s) ran out{got} "
            f"({self._failed_attempts} failed attempts); {kept}. Check the server, or raise "
            "budget_s or timeout"
        )

    def _request(self, key: str, messages: Sequence[Message]) -> dict[str, Any]:
        if self.replay_only:
            raise ReplayMissError(
                f"no recorded reply for the request to {self.model!r} ending with "
                f"{_describe(messages)} (key {key[:12]}) in {self.cache_path}; replay_only is set, "
                "so nothing is sent"
            )
        client = self._openai()
        attempt = 0
        while True:
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                raise self._budget_error()
            if attempt and self._stop.is_set():
                raise JudgeError(f"{self.name}: request abandoned as another one failed")
            timeout = self.timeout if remaining is None else min(self.timeout, remaining)
            try:
                completion = client.chat.completions.create(
                    model=self.model,
                    messages=[dict(m) for m in messages],
                    timeout=timeout,
                    **self.params,
                )
                content, finish_reason, usage = _reply_text(completion)
                break
            except Exception as exc:  # noqa: BLE001 - classified below, re-raised redacted
                message = self._redact(f"{type(exc).__name__}: {exc}")
                with self._lock:
                    self._failed_attempts += 1
                if not self._transient(exc) or attempt >= self.max_retries:
                    tried = f" after {attempt + 1} attempts" if attempt else ""
                    raise JudgeError(
                        f"judge request to {self.model!r} at {self.endpoint} failed"
                        f"{tried} ({message}); request ending with {_describe(messages)}"
                    ) from None
                delay = min(self.backoff_s * 2**attempt, self.max_backoff_s)
                delay *= random.uniform(0.75, 1.25)
                remaining = self._remaining()
                if remaining is not None:
                    delay = max(0.0, min(delay, remaining))
                attempt += 1
                log.warning(
                    "judge request to %s failed (%s); retry %d/%d in %.1f s",
                    self.endpoint,
                    message,
                    attempt,
                    self.max_retries,
                    delay,
                )
                time.sleep(delay)
        previous = self._records.get(key)
        return {
            "key": key,
            "model": self.model,
            "params": self.params,
            "messages": [dict(m) for m in messages],
            "response": content,
            "finish_reason": finish_reason,
            "usage": usage,
            "asks": (previous.get("asks", 1) + 1) if previous is not None else 1,
        }

    # ------------------------------------------------------------------ public API
    def complete(
        self,
        messages_list: Sequence[Sequence[Message]],
        valid: Callable[[Record], bool] | None = None,
    ) -> list[str]:
        """Return the judge's reply text to each conversation, in the order given.

        Identical conversations are sent once. Replies found in the cache are not requested again,
        except those ``valid`` rejects (see :meth:`complete_records`). Raises :class:`JudgeError`
        (or a subclass) if a request fails; replies that arrived before the failure are already
        in the cache.
        """
        return [rec["response"] for rec in self.complete_records(messages_list, valid)]

    def complete_records(
        self,
        messages_list: Sequence[Sequence[Message]],
        valid: Callable[[Record], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """Like :meth:`complete` but return the cache records (reply, finish_reason, usage, ...).

        ``valid``, when given, tells a usable reply (one holding a verdict) from one that is not:
        a cached reply it rejects is asked again (each request at most ``max_retries`` times
        over all runs, then replayed); a new reply it rejects is returned and cached with
        ``"valid": false``, to be asked again by the next run.
        """
        keys = [self.key(m) for m in messages_list]
        todo: dict[str, Sequence[Message]] = {}
        reask = spent = 0
        for key, messages in zip(keys, messages_list):
            if key in todo:
                continue
            rec = self._records.get(key)
            if rec is None:
                todo[key] = messages
            elif (
                valid is not None
                and not self.replay_only
                and key not in self._sent
                and not valid(rec)
            ):
                if rec.get("asks", 1) <= self.max_retries:
                    todo[key] = messages
                    reask += 1
                else:
                    spent += 1
        distinct = len(dict.fromkeys(keys))
        log.info(
            "%s: %d requests (%d distinct, %d from cache, %d to send of which %d cached "
            "without a verdict)",
            self.name,
            len(keys),
            distinct,
            distinct - len(todo),
            len(todo),
            reask,
        )
        if spent:
            log.warning(
                "%s: %d cached replies without a verdict were asked %d times already "
                "(max_retries); replaying them",
                self.name,
                spent,
                1 + self.max_retries,
            )
        if todo:
            self._sent.update(todo)
            self._run(todo, valid)
        self._used.update(dict.fromkeys(keys))
        records = [self._records[k] for k in keys]
        if valid is not None:
            bad = len({r["key"] for r in records if not valid(r)})
            if bad:
                log.warning(
                    "%s: %d of %d distinct replies hold no verdict; they are cached as "
                    'such ("valid": false) and asked again by a rerun%s',
                    self.name,
                    bad,
                    distinct,
                    f" (cache {self.cache_path})" if self.cache_path else "",
                )
        # redacted again on the way out: a cache recorded before replies were redacted (or by
        # another tool) may hold the key, and what is returned lands in judgments and logs
        return [self._redact_all(r) for r in records]

    def _run(
        self, todo: Mapping[str, Sequence[Message]], valid: Callable[[Record], bool] | None = None
    ) -> None:
        if self.replay_only:  # fail before anything is sent, naming the first miss
            key, messages = next(iter(todo.items()))
            self._request(key, messages)
        self._openai()  # a missing key fails here, before any thread starts
        if self._started is None:
            self._started = time.monotonic()
            if self.budget_s is not None:
                self._deadline = self._started + self.budget_s
        done = 0
        error: BaseException | None = None
        self._stop.clear()
        next_report = time.monotonic() + self.progress_s
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            pending = {pool.submit(self._request, k, m) for k, m in todo.items()}
            while pending:
                remaining = self._remaining()
                if remaining is not None and remaining <= 0 and error is None:
                    error = self._budget_error(done, len(todo))
                    self._stop.set()
                    for other in pending:
                        other.cancel()
                wait_s = max(0.0, next_report - time.monotonic())
                if remaining is not None:
                    wait_s = min(wait_s, max(remaining, 0.0) + 0.05)
                finished, pending = wait(pending, timeout=wait_s, return_when=FIRST_COMPLETED)
                for fut in finished:
                    if fut.cancelled():
                        continue
                    exc = fut.exception()
                    if exc is not None:
                        if error is None:  # stop what has not started; keep what is in flight
                            error = exc
                            self._stop.set()  # and no more retries of what is
                            for other in pending:
                                other.cancel()
                        continue
                    record = fut.result()
                    if valid is not None:
                        record["valid"] = bool(valid(record))
                    self._store(record)
                    done += 1
                if time.monotonic() >= next_report or (not pending and error is None):
                    self._progress(done, len(todo))
                    next_report = time.monotonic() + self.progress_s
        if isinstance(error, BudgetError):  # raised in a thread: say how far the batch got
            error = self._budget_error(done, len(todo))
        if error is not None:
            raise error

    def _progress(self, done: int, total: int) -> None:
        elapsed = time.monotonic() - (self._started or time.monotonic())
        left = ""
        if self._deadline is not None:
            left = f", budget left {max(0.0, self._deadline - time.monotonic()):.0f} s"
        log.info(
            "%s: %d/%d replies, %d failed attempts, %.0f s elapsed%s",
            self.name,
            done,
            total,
            self._failed_attempts,
            elapsed,
            left,
        )

    def export(self, path: str | os.PathLike) -> Path:
        """Write the records this client returned (in the order first asked) to ``path`` as
        JSONL, atomically, redacted (replayed records may predate redaction); returns the path."""
        from .io import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for key in self._used:
                record = self._redact_all(self._records[key])
                f.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        return path


def resume_file(cache_out: str | os.PathLike) -> Path:
    """The undeclared file a job's replies are appended to while it runs, beside its declared
    cache output ``cache_out`` (``judge_cache.jsonl`` -> ``judge_cache.partial.jsonl``)."""
    cache_out = Path(cache_out)
    return cache_out.with_name(f"{cache_out.stem}.partial{cache_out.suffix}")


def job_client(
    config: Mapping[str, Any], cache_out: str | os.PathLike, **overrides: Any
) -> ChatClient:
    """The client of a Snakemake job that declares ``cache_out``: as :meth:`ChatClient.from_config`,
    with the cache defaulting to :func:`resume_file` (a config ``cache`` is used as it is)."""
    config = dict(config)
    if config.get("cache") is None:
        config["cache"] = resume_file(cache_out)
    return ChatClient.from_config(config, **overrides)


def finish_job(client: ChatClient, cache_out: str | os.PathLike) -> None:
    """At the end of a successful job: write its replies to the declared ``cache_out`` and remove
    the job's resume file, so a forced rerun (``--forcerun``) asks the judge again."""
    client.export(cache_out)
    if client.cache_path is not None and client.cache_path == resume_file(cache_out):
        client.cache_path.unlink(missing_ok=True)
