"""FakeHub: a test double of the Hugging Face Hub's HTTP API, serving local folders.

A ``ThreadingHTTPServer`` on 127.0.0.1 (a free port) answers what ``huggingface_hub``'s
``snapshot_download`` and ``hf_hub_download`` ask, for the repositories it was given (each a local
folder, served read-only at one commit):

* ``GET /api/{models|datasets}/ORG/NAME[/revision/REV]``: the repository's info (its commit);
* ``GET /api/{models|datasets}/ORG/NAME/tree/REV[/PATH]``: every file, recursively;
* ``HEAD`` / ``GET /[datasets/]ORG/NAME/resolve/REV/PATH``: a file, with the hub's headers.

Anything else, and any repository or file it was not given, is a 404 with the hub's error code.
Point ``HF_ENDPOINT`` at ``endpoint`` (and leave ``HF_HUB_OFFLINE`` unset or 0); every request
is recorded in ``requests`` (method and path) so a test can check what was downloaded.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_PART = r"[A-Za-z0-9_.-]+"
_API = re.compile(
    rf"/api/(?P<kind>models|datasets)/(?P<repo>{_PART}/{_PART})"
    rf"(?:/(?P<what>revision|tree)/(?P<rev>[^/]+)(?P<path>/.*)?)?"
)
_RESOLVE = re.compile(
    rf"/(?P<dataset>datasets/)?(?P<repo>{_PART}/{_PART})/resolve/"
    rf"(?P<rev>[^/]+)/(?P<path>.+)"
)


def _blob_id(data: bytes) -> str:
    """The git blob hash, which the hub gives as a file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """A local Hugging Face Hub serving ``repos``: ``{"ORG/NAME": folder}`` for models and
    ``{"datasets/ORG/NAME": folder}`` for datasets."""

    def __init__(self, repos: Mapping[str, str | Path]) -> None:
        self.repos = {key: Path(folder) for key, folder in repos.items()}
        self.requests: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def files(self, key: str) -> list[str]:
        root = self.repos[key]
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    def _answer(self, method: str, url: str) -> tuple[int, dict[str, str], bytes]:
        path = unquote(urlsplit(url).path)
        if m := _API.fullmatch(path):
            key = m["repo"] if m["kind"] == "models" else f"datasets/{m['repo']}"
            if key not in self.repos:
                return _error(404, "RepoNotFound", f"Repository {key} not found")
            if m["what"] == "tree":
                root, under = self.repos[key], (m["path"] or "/").strip("/")
                body = [
                    {
                        "type": "file",
                        "oid": _blob_id((root / f).read_bytes()),
                        "size": (root / f).stat().st_size,
                        "path": f,
                    }
                    for f in self.files(key)
                    if f.startswith(under)
                ]
            else:
                body = {
                    "id": m["repo"],
                    "sha": COMMIT,
                    "private": False,
                    "siblings": [{"rfilename": f} for f in self.files(key)],
                }
            return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()
        if m := _RESOLVE.fullmatch(path):
            key = f"{m['dataset'] or ''}{m['repo']}"
            if key not in self.repos:
                return _error(404, "RepoNotFound", f"Repository {key} not found")
            file = self.repos[key] / m["path"]
            if m["path"] not in self.files(key):
                return _error(404, "EntryNotFound", f"{m['path']} not in {key}")
            data = file.read_bytes()
            headers = {
                "X-Repo-Commit": COMMIT,
                "ETag": f'"{_blob_id(data)}"',
                "Content-Length": str(len(data)),
                "Content-Type": "application/octet-stream",
            }
            return 200, headers, b"" if method == "HEAD" else data
        return _error(404, "EntryNotFound", f"no route {path}")

    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _reply(self, method: str) -> None:
                with hub._lock:
                    hub.requests.append({"method": method, "path": self.path})
                status, headers, body = hub._answer(method, self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if method == "GET":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                self._reply("GET")

            def do_HEAD(self) -> None:
                self._reply("HEAD")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    return (
        status,
        {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message},
        json.dumps({"error": message}).encode(),
    )
