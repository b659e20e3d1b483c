"""A warm start for local jobs: one process that has imported torch, transformers, TRL and vLLM
forks a child per job, so a job does not pay those imports again.

A toy job spends most of its time starting: an evaluation job imports vLLM for about 6 s to do
about 1 s of work (docs/benchmarks.md). Under ``python workflow/scripts/forkserver.py -- CMD``
(``make run``), a server preloads :data:`PRELOAD`, listens on a Unix socket and runs ``CMD``
(Snakemake) with ``DICEWF_FORKSERVER`` naming the socket. A job script's first statement,
:func:`handoff`, then sends the server what a fresh interpreter would have run: the script's
path, ``sys.argv``, ``sys.path``, the working directory, the environment and its standard
streams (as file descriptors). The server forks; the child takes them over and runs the script
as ``__main__``; the job's process waits for the child's exit status, forwards SIGINT and
SIGTERM to it and exits with that status. Without the variable (Snakemake run directly), in a
Slurm job or a process of a distributed launch, for another Python environment or another copy
of this library (the server refuses those), or where no server answers, :func:`handoff` returns
and the job runs as before: the same script, the same code path.

The server itself only imports: it computes nothing, so no thread pool of torch or OpenMP has
started when it forks (the state PyTorch's own forked DataLoader workers rely on).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

VAR = "DICEWF_FORKSERVER"
# what a model job imports (vLLM's LLM pulls in torch's compiler stack and transformers' image
# processors), and the library's own modules on top
PRELOAD = (
    "torch",
    "pyarrow.parquet",
    "pandas",
    "transformers",
    "trl",
    "vllm",
    "dicewf.launch",
    "dicewf.sampling",
    "dicewf.scoring",
    "dicewf.training",
    "dicewf.reflogps",
    "dicewf.toyeval",
    "dicewf.llm_judge",
)
_child = False  # set in a forked child: handoff() is then a no-op


def preload(modules=PRELOAD) -> list[str]:
    """Import ``modules`` (those installed); returns the names imported."""
    done = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        done.append(name)
    if "vllm" in done:  # vLLM's LLM is imported on first use: the heavy part of vLLM
        _ = sys.modules["vllm"].LLM
    return done


def _send(conn: socket.socket, message: dict) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def _recv(conn: socket.socket) -> dict | None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    return json.loads(data)


def _watch(pid: int) -> None:
    """In the child: end it if the job's process (the client) is gone (killed with SIGKILL)."""
    while True:
        time.sleep(0.5)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)


def _run_child(request: dict, fds: list[int]) -> None:
    """Become the job: its streams, directory, environment, argv and path; run its script."""
    global _child
    _child = True
    for fd, target in zip(fds, (0, 1, 2), strict=True):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = request["argv"]
    sys.path[:] = request["path"]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_watch, args=(request["client"],), daemon=True).start()
    import runpy

    try:
        runpy.run_path(request["script"], run_name="__main__")
        code = 0
    except SystemExit as e:  # as the interpreter ends: a number, None (0), else printed and 1
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
        if not isinstance(e.code, int | None):
            print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - an uncaught exception: traceback on stderr, status 1
        sys.excepthook(*sys.exc_info())
        code = 1
    # the interpreter's exit, then the process's end: non-daemon threads joined, atexit
    # handlers run (vLLM's and multiprocessing's shutdown of their processes, logging's flush)
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a stream the job closed
            stream.flush()
    os._exit(code)


def _read_request(sock: socket.socket) -> tuple[dict | None, list[int]]:
    """A job's request and its three standard streams; (None, fds) for anything else, read
    within 10 s so that a silent client cannot hold the server."""
    fds: list[int] = []
    try:
        sock.settimeout(10)
        data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, 3)
        while data and not data.endswith(b"\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
        sock.settimeout(None)
        request = json.loads(data)
    except (OSError, ValueError):
        return None, fds
    return (request if len(fds) == 3 and isinstance(request, dict) else None), fds


def serve(path: str | os.PathLike, modules=PRELOAD, ready: str | None = None) -> None:
    """Preload ``modules``, then fork a child per request on the Unix socket ``path`` until
    SIGTERM. ``ready``: a file written once the socket listens. Ctrl-C reaches the command's
    whole process group: the server ignores it (its runner stops it once the command has
    stopped its jobs); the children take Python's default back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    preload(modules)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(os.fspath(path))
    listener.listen(64)
    if ready:
        Path(ready).write_text(str(os.getpid()))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    children: dict[int, socket.socket] = {}
    clients: list[socket.socket] = []
    while not stop:
        try:
            readable, _, _ = select.select([listener, *clients], [], [], 0.1)
        except InterruptedError:
            continue
        for sock in readable:
            if sock is listener:
                conn, _ = listener.accept()
                clients.append(conn)
                continue
            clients.remove(sock)
            request, fds = _read_request(sock)
            if request is None:
                for fd in fds:
                    os.close(fd)
                sock.close()
                continue
            refused = _refusal(request)
            if refused:
                for fd in fds:
                    os.close(fd)
                with contextlib.suppress(OSError):
                    _send(sock, {"refused": refused})
                sock.close()
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                listener.close()
                for other in [*clients, *children.values()]:
                    other.close()
                sock.close()
                _run_child(request, fds)
            for fd in fds:
                os.close(fd)
            children[pid] = sock
            with contextlib.suppress(OSError):  # a job gone already: its child ends itself
                _send(sock, {"pid": pid})
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = children.pop(pid, None)
            if conn is not None:
                try:
                    _send(conn, {"exit": os.waitstatus_to_exitcode(status)})
                except OSError:
                    pass
                conn.close()
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    listener.close()


def _library() -> str:
    """The folder of the ``dicewf`` this process imported."""
    return str(Path(__file__).resolve().parent)


def _refusal(request: dict) -> str | None:
    """Why the server will not run a job: another Python environment (a rule's conda env) or
    another copy of the library (a Snakefile of another checkout) than it preloaded."""
    if request.get("prefix") != _prefix():
        return f"the server runs in {_prefix()}"
    if request.get("library") != _library():
        return f"the server preloaded the library of {_library()}"
    return None


def _prefix() -> str:
    """This interpreter's environment, links resolved (a venv reached through a link is the
    same environment)."""
    return os.path.realpath(sys.prefix)


def handoff() -> None:
    """A job script's first statement: run the rest of this script in a child of the server
    named by ``DICEWF_FORKSERVER`` and exit with its status; return (run here, as before) where
    the variable is unset, in the child itself, or where no server answers."""
    path = os.environ.get(VAR)
    if _child or not path:
        return
    # a Slurm job runs where Slurm put it; a process of a distributed launch stays with its peers
    if any(v in os.environ for v in ("SLURM_JOB_ID", "LOCAL_RANK", "WORLD_SIZE")):
        return
    main = sys.modules["__main__"]
    # Snakemake's `script:` runs a copy with its preamble and points __file__ at the original
    script = getattr(main, "__real_file__", getattr(main, "__file__", None))
    if script is None:
        return
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
    except OSError as e:
        print(f"dicewf.forkserver: no server at {path} ({e}); running here", file=sys.stderr)
        return
    request = {
        "script": os.path.abspath(script),
        "argv": sys.argv,
        "path": sys.path,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "client": os.getpid(),
        "prefix": _prefix(),
        "library": _library(),
    }
    sys.stdout.flush()
    sys.stderr.flush()
    socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
    reply = _recv(conn)
    if reply is None or "refused" in reply:
        why = reply["refused"] if reply else "it closed the connection"
        print(f"dicewf.forkserver: not handed to the server ({why}); running here", file=sys.stderr)
        conn.close()
        return
    child = reply["pid"]

    def forward(signum, _frame):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    reply = _recv(conn)
    if reply is None:  # the server went away: the child's fate is unknown
        print("dicewf.forkserver: the server ended before the job", file=sys.stderr)
        os._exit(1)
    code = reply["exit"]
    os._exit(code if code >= 0 else 128 - code)


def main(argv: list[str] | None = None) -> int:
    """``forkserver.py [--no-preload] -- COMMAND ...``: run COMMAND (Snakemake) with a server for
    its jobs, and stop the server when it ends; COMMAND's exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        print("usage: forkserver.py [--no-preload] -- COMMAND ...", file=sys.stderr)
        return 2
    options, command = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    modules = () if "--no-preload" in options else PRELOAD
    with tempfile.TemporaryDirectory(prefix="dicewf-fork-") as folder:
        sock, ready = os.path.join(folder, "socket"), os.path.join(folder, "ready")
        started = time.monotonic()
        server = subprocess.Popen(
            [sys.executable, "-c", _SERVE, sock, ready, json.dumps(modules)],
            env={**os.environ, "PYTHONPATH": _pythonpath()},
        )
        try:
            while not os.path.exists(ready):
                if server.poll() is not None:
                    print("dicewf.forkserver: the server failed to start", file=sys.stderr)
                    return 1
                time.sleep(0.1)
            print(
                f"dicewf.forkserver: local jobs start from a process that imported "
                f"{len(modules)} modules in {time.monotonic() - started:.1f} s",
                file=sys.stderr,
            )
            proc = subprocess.Popen(command, env={**os.environ, VAR: sock})
            while True:
                try:
                    return proc.wait()
                except KeyboardInterrupt:  # the command got the same Ctrl-C: wait for it
                    continue
        except KeyboardInterrupt:  # Ctrl-C before the command started
            return 130
        finally:
            server.terminate()
            server.wait()


def _pythonpath() -> str:
    here = str(Path(__file__).resolve().parents[1])
    return os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)


_SERVE = (
    "import json, sys; from dicewf.forkserver import serve; "
    "serve(sys.argv[1], modules=json.loads(sys.argv[3]), ready=sys.argv[2])"
)
