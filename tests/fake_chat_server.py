"""FakeChatServer: a test double of an OpenAI-compatible chat-completions server.

A ``ThreadingHTTPServer`` on 127.0.0.1 (a free port) answers ``POST /v1/chat/completions`` in a
background thread. What it answers is decided by the test's ``reply`` function, which receives the
parsed request body and returns one of:

* a string: sent as the assistant message, in a well-formed chat completion;
* a ``dict`` with a ``"status"`` (int) key: sent as an error response with that HTTP status and
  the dict's ``"error"`` body (used to simulate rate limits and server errors);
* a ``dict`` with a ``"raw"`` (str) key: sent as the body as it is, with HTTP status
  ``"raw_status"`` (default 200) and ``"content_type"`` (default ``text/html``): a proxy's error
  page, a truncated body;
* a ``dict`` with a ``"body"`` key: that JSON as the whole response body with status 200 (a
  completion without ``choices``, say);
* any other ``dict``: a partial choice merged into the completion's first choice (e.g.
  ``{"message": {...}, "logprobs": {...}}``), for annotators that read log-probabilities.

A slow or hanging server is a ``reply`` that sleeps before it returns.

Every request is recorded (``requests``: path, body and headers, header names in lower case) so
tests can check what was sent, e.g. the ``authorization`` header. Use it as a context manager;
``base_url`` is the ``/v1`` address.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[dict[str, Any]], "str | dict[str, Any]"]


class FakeChatServer:
    """A local OpenAI-compatible chat-completions server whose replies come from ``reply``."""

    def __init__(self, reply: Reply, model: str | None = None) -> None:
        self.reply = reply
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FakeChatServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                headers = {k.lower(): v for k, v in self.headers.items()}
                with fake._lock:
                    fake.requests.append({"path": self.path, "body": body, "headers": headers})
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                answer = fake.reply(body)
                if isinstance(answer, dict) and "status" in answer:
                    self._send(
                        answer["status"],
                        {"error": answer.get("error", {})},
                        answer.get("headers", {}),
                    )
                    return
                if isinstance(answer, dict) and "raw" in answer:
                    self._send_raw(
                        answer.get("raw_status", 200),
                        answer["raw"].encode(),
                        answer.get("content_type", "text/html"),
                    )
                    return
                if isinstance(answer, dict) and "body" in answer:
                    self._send(200, answer["body"])
                    return
                self._send(200, fake._completion(body, answer))

            def _send(
                self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                self._send_raw(status, json.dumps(payload).encode(), "application/json", headers)

            def _send_raw(
                self,
                status: int,
                data: bytes,
                content_type: str,
                headers: dict[str, str] | None = None,
            ) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout test)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # a short poll interval: shutdown() returns at once, not after up to 0.5 s
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _completion(self, body: dict[str, Any], answer: str | dict[str, Any]) -> dict[str, Any]:
        choice: dict[str, Any] = {
            "index": 0,
            "finish_reason": "stop",
            "logprobs": None,
            "message": {"role": "assistant", "content": None},
        }
        if isinstance(answer, str):
            choice["message"]["content"] = answer
        else:
            choice.update({k: v for k, v in answer.items() if k != "message"})
            choice["message"].update(answer.get("message", {}))
        prompt_chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
        completion_chars = len(choice["message"]["content"] or "")
        return {
            "id": f"chatcmpl-fake-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model or body.get("model", "fake"),
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_chars // 4,
                "completion_tokens": completion_chars // 4,
                "total_tokens": (prompt_chars + completion_chars) // 4,
            },
        }
