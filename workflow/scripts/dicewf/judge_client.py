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
  failures (connection errors, timeouts, HTTP 408/409/429 and 5xx) are retried up to
  ``max_retries`` times with exponential backoff and jitter; other errors stop the batch at once.
* Cache: with ``cache`` set, each reply is appended to a JSONL file as soon as it arrives, keyed
  by a SHA-256 hash of the model name, the messages and the request parameters (not the server's
  address, so recorded replies replay against any server of the same model). A rerun reads its
  replies from the file and sends only what is missing, so an interrupted job resumes and a finished
  one replays with no network. ``replay_only=True`` never contacts a server: a request without a
  recorded reply raises :class:`ReplayMissError` naming it.
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
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

__all__ = [
    "ChatClient",
    "JudgeError",
    "MissingAPIKeyError",
    "ReplayMissError",
    "request_key",
]

log = logging.getLogger(__name__)

#: Sent as the key when ``api_key_env`` is None (a local server without authentication).
PLACEHOLDER_KEY = "EMPTY"
#: HTTP statuses worth retrying besides 5xx: request timeout, conflict, rate limit.
RETRY_STATUSES = frozenset({408, 409, 429})

Message = Mapping[str, str]


class JudgeError(RuntimeError):
    """A judge request failed (after retries, or with a non-transient error)."""


class MissingAPIKeyError(JudgeError):
    """The environment variable that should hold the API key is unset or empty."""


class ReplayMissError(JudgeError):
    """Replay-only mode met a request whose reply is not in the cache."""


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
    of the cache key. ``timeout`` is per request, in seconds; ``backoff_s`` is the first retry's
    delay (doubled on each further retry, at most ``max_backoff_s``, with +-25 % jitter).
    """

    def __init__(
        self,
        base_url: str | None,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        temperature: float = 0.0,
        max_tokens: int = 4096,
        max_retries: int = 5,
        concurrency: int = 8,
        cache: str | os.PathLike | None = None,
        replay_only: bool = False,
        timeout: float = 600.0,
        backoff_s: float = 2.0,
        max_backoff_s: float = 60.0,
        request: Mapping[str, Any] | None = None,
    ) -> None:
        if not model:
            raise ValueError("ChatClient: model must name the judge model")
        if concurrency < 1:
            raise ValueError(f"ChatClient: concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"ChatClient: max_retries must be >= 0, got {max_retries}")
        if replay_only and cache is None:
            raise ValueError("ChatClient: replay_only needs a cache file to replay from")
        request = dict(request or {})
        reserved = {"messages", "model", "temperature", "max_tokens", "stream", "n"}
        clash = sorted(reserved & set(request))
        if clash:
            raise ValueError(f"ChatClient: request may not set {clash}; they are fixed or "
                             "given as their own arguments")
        unknown = sorted(set(request) - _create_parameters())
        if unknown:
            raise ValueError(f"ChatClient: unknown chat.completions.create argument(s) {unknown}")
        self.base_url = base_url
        self.model = model
        self.api_key_env = api_key_env
        self.params: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens,
                                       **request}
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.timeout = timeout
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.replay_only = replay_only
        self.cache_path = Path(cache) if cache is not None else None
        self._records: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
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
            raise ValueError("ChatClient: API keys are not read from configuration; put the key in "
                             "an environment variable and name it with api_key_env")
        own = set(inspect.signature(cls.__init__).parameters) - {"self"}
        extra = {k: v for k, v in merged.items() if k not in own}
        kwargs = {k: v for k, v in merged.items() if k in own}
        if extra:
            kwargs["request"] = {**(kwargs.get("request") or {}), **extra}
        return cls(**kwargs)

    def __repr__(self) -> str:  # never shows the key
        return (f"ChatClient(base_url={self.base_url!r}, model={self.model!r}, "
                f"api_key_env={self.api_key_env!r}, params={self.params!r}, "
                f"cache={str(self.cache_path) if self.cache_path else None!r}, "
                f"replay_only={self.replay_only})")

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
                self._client = openai.OpenAI(base_url=self.base_url, api_key=key,
                                             timeout=self.timeout, max_retries=0)
            return self._client

    @staticmethod
    def _transient(exc: BaseException) -> bool:
        import openai

        if isinstance(exc, openai.APIConnectionError):  # includes timeouts
            return True
        if isinstance(exc, openai.APIStatusError):
            return exc.status_code in RETRY_STATUSES or exc.status_code >= 500
        return False

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
            try:
                completion = client.chat.completions.create(
                    model=self.model, messages=[dict(m) for m in messages], **self.params
                )
                break
            except Exception as exc:  # noqa: BLE001 - classified below, re-raised redacted
                message = self._redact(f"{type(exc).__name__}: {exc}")
                if not self._transient(exc) or attempt >= self.max_retries:
                    tried = f" after {attempt + 1} attempts" if attempt else ""
                    raise JudgeError(
                        f"judge request to {self.model!r} at {self.base_url or 'OpenAI'} failed"
                        f"{tried} ({message}); request ending with {_describe(messages)}"
                    ) from None
                delay = min(self.backoff_s * 2**attempt, self.max_backoff_s)
                delay *= random.uniform(0.75, 1.25)
                attempt += 1
                log.warning("judge request failed (%s); retry %d/%d in %.1f s", message, attempt,
                            self.max_retries, delay)
                time.sleep(delay)
        if not completion.choices:
            raise JudgeError(f"judge {self.model!r} returned no choices for the request ending "
                             f"with {_describe(messages)}")
        choice = completion.choices[0]
        usage = completion.usage.model_dump() if completion.usage is not None else None
        return {
            "key": key,
            "model": self.model,
            "params": self.params,
            "messages": [dict(m) for m in messages],
            "response": choice.message.content or "",
            "finish_reason": choice.finish_reason,
            "usage": usage,
        }

    # ------------------------------------------------------------------ public API
    def complete(self, messages_list: Sequence[Sequence[Message]]) -> list[str]:
        """Return the judge's reply text to each conversation, in the order given.

        Identical conversations are sent once. Replies found in the cache are not requested again.
        Raises :class:`JudgeError` (or a subclass) if a request fails; replies that arrived before
        the failure are already in the cache.
        """
        return [rec["response"] for rec in self.complete_records(messages_list)]

    def complete_records(self, messages_list: Sequence[Sequence[Message]]) -> list[dict[str, Any]]:
        """Like :meth:`complete` but return the cache records (reply, finish_reason, usage, ...)."""
        keys = [self.key(m) for m in messages_list]
        todo: dict[str, Sequence[Message]] = {}
        for key, messages in zip(keys, messages_list):
            if key not in self._records and key not in todo:
                todo[key] = messages
        n_cached = len(set(keys)) - len(todo)
        log.info("judge %s: %d requests (%d distinct, %d from cache, %d to send)", self.model,
                 len(keys), len(set(keys)), n_cached, len(todo))
        if todo:
            self._run(todo)
        # redacted again on the way out: a cache recorded before replies were redacted (or by
        # another tool) may hold the key, and what is returned lands in judgments and logs
        return [self._redact_all(self._records[k]) for k in keys]

    def _run(self, todo: Mapping[str, Sequence[Message]]) -> None:
        if self.replay_only:  # fail before anything is sent, naming the first miss
            key, messages = next(iter(todo.items()))
            self._request(key, messages)
        self._openai()  # a missing key fails here, before any thread starts
        done = 0
        error: BaseException | None = None
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(self._request, k, m) for k, m in todo.items()]
            for fut in as_completed(futures):
                if fut.cancelled():
                    continue
                exc = fut.exception()
                if exc is not None:
                    if error is None:  # stop what has not started; keep what is in flight
                        error = exc
                        for other in futures:
                            other.cancel()
                    continue
                self._store(fut.result())
                done += 1
                if done % 50 == 0 or done == len(todo):
                    log.info("judge %s: %d/%d replies", self.model, done, len(todo))
        if error is not None:
            raise error
