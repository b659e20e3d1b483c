"""dicewf.forkserver: a job script handed to a warm server runs in a child of it, as it would
have run in its own process (argv, directory, environment, streams, exit status, signals), and
runs where it is when there is no server, in a Slurm job, or from another environment. The
server here preloads nothing (the protocol is the same; what it imports only saves time). The
workflow's runs through it, against runs without it, are in test_workflow.py
(test_the_same_config_gives_the_same_files_with_and_without_the_warm_start) and
test_slurm.py (the local twin)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "workflow" / "scripts"
RUNNER = SCRIPTS / "forkserver.py"

# a job script as the workflow's start: hand off first, then report where and how it ran
JOB = """\
from dicewf.forkserver import handoff

handoff()

import json, os, sys, time
from dicewf import forkserver

action = sys.argv[1]
print(json.dumps({
    "argv": sys.argv, "cwd": os.getcwd(), "pid": os.getpid(), "ppid": os.getppid(),
    "var": os.environ.get("JOB_VAR"), "child": forkserver._child, "name": __name__,
}), flush=True)
print("to stderr", file=sys.stderr, flush=True)
if action == "exit":
    sys.exit(int(sys.argv[2]))
if action == "raise":
    raise RuntimeError("planted failure")
if action == "message":
    sys.exit("planted message")
if action == "atexit":
    import atexit, threading
    atexit.register(lambda: open(sys.argv[2], "a").write("atexit\\n"))
    threading.Thread(target=lambda: (time.sleep(0.3), open(sys.argv[2], "a").write("thread\\n"))).start()
if action == "sleep":
    open(sys.argv[2], "w").write(str(os.getpid()))
    time.sleep(60)
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SLURM_JOB_ID"}
    return {**env, "PYTHONPATH": str(SCRIPTS), **extra}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server that preloads nothing, on a socket in a fresh folder: (socket path, its pid)."""
    folder = tmp_path_factory.mktemp("fork")
    sock, ready = folder / "socket", folder / "ready"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from dicewf.forkserver import serve; "
            "serve(sys.argv[1], modules=(), ready=sys.argv[2])",
            str(sock),
            str(ready),
        ],
        env=_env(),
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield str(sock), proc.pid
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def job(tmp_path):
    path = tmp_path / "job.py"
    path.write_text(JOB)
    return path


def _run(job: Path, *args: str, python: str = sys.executable, **env: str):
    proc = subprocess.run(
        [python, str(job), *args],
        cwd=job.parent,
        env=_env(JOB_VAR="from the caller", **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(proc.stdout.splitlines()[0]) if proc.stdout else None
    return proc, report


def test_a_handed_off_job_runs_in_a_child_of_the_server_as_it_would_have_run_alone(server, job):
    sock, server_pid = server
    proc, report = _run(job, "exit", "0", DICEWF_FORKSERVER=sock)
    assert proc.returncode == 0, proc.stderr
    assert report["ppid"] == server_pid and report["child"] is True
    assert report["argv"] == [str(job), "exit", "0"]
    assert report["cwd"] == str(job.parent)
    assert report["var"] == "from the caller"
    assert report["name"] == "__main__"
    assert proc.stderr == "to stderr\n"  # the caller's own streams


@pytest.mark.parametrize(
    ("args", "status", "stderr"),
    [
        (("exit", "3"), 3, None),
        (("raise",), 1, "RuntimeError: planted failure"),
        (("message",), 1, "planted message"),
    ],
)
def test_the_job_exits_with_its_scripts_status(server, job, args, status, stderr):
    proc, report = _run(job, *args, DICEWF_FORKSERVER=server[0])
    assert report["child"] is True
    assert proc.returncode == status
    if stderr:
        assert stderr in proc.stderr


def test_the_job_ends_as_the_interpreter_ends_threads_joined_and_atexit_run(server, job, tmp_path):
    """vLLM and multiprocessing shut their processes down in atexit handlers."""
    marks = tmp_path / "marks"
    proc, report = _run(job, "atexit", str(marks), DICEWF_FORKSERVER=server[0])
    assert proc.returncode == 0 and report["child"] is True
    assert marks.read_text() == "thread\natexit\n"


def _wait_for(path: Path) -> str:
    """The text of ``path`` once a process has written it."""
    deadline = time.monotonic() + 30
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} was not written"
        time.sleep(0.05)
    return path.read_text().strip()


def _gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _start(job: Path, marker: Path, sock: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(job), "sleep", str(marker)],
        cwd=job.parent,
        env=_env(DICEWF_FORKSERVER=sock),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_sigterm_to_the_job_reaches_its_child(server, job, tmp_path):
    """Snakemake stops a job with SIGTERM: the child gets it and the job ends as it would."""
    client = _start(job, tmp_path / "pid", server[0])
    child = int(_wait_for(tmp_path / "pid"))
    assert child != client.pid
    client.send_signal(signal.SIGTERM)
    assert client.wait(timeout=30) == 128 + signal.SIGTERM
    assert _gone(child)


def test_a_killed_job_takes_its_child_with_it(server, job, tmp_path):
    """SIGKILL cannot be forwarded: the child sees its job's process gone and ends."""
    client = _start(job, tmp_path / "pid", server[0])
    child = int(_wait_for(tmp_path / "pid"))
    client.kill()
    client.wait(timeout=30)
    assert _gone(child)


def test_without_a_server_the_job_runs_where_it_is(job, tmp_path):
    proc, report = _run(job, "exit", "0", DICEWF_FORKSERVER=str(tmp_path / "none"))
    assert proc.returncode == 0
    assert report["child"] is False and report["ppid"] == os.getpid()
    assert f"no server at {tmp_path / 'none'}" in proc.stderr


def test_a_slurm_job_runs_where_it_is(server, job):
    proc, report = _run(job, "exit", "0", DICEWF_FORKSERVER=server[0], SLURM_JOB_ID="7")
    assert proc.returncode == 0
    assert report["child"] is False and report["ppid"] == os.getpid()
    assert proc.stderr == "to stderr\n"


def test_a_job_of_another_environment_is_refused_and_runs_where_it_is(server, job):
    """A rule with a conda env runs its script with that env's Python: not the server's."""
    other = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if other is None or Path(other).resolve() == Path(sys.executable).resolve():
        pytest.skip("no second Python environment here")
    probe = subprocess.run(
        [other, "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True
    )
    if probe.stdout.strip() == sys.prefix:
        pytest.skip("the system Python shares this environment")
    proc, report = _run(job, "exit", "0", python=other, DICEWF_FORKSERVER=server[0])
    assert proc.returncode == 0
    assert report["child"] is False
    assert "not handed to the server (the server runs in" in proc.stderr


def test_the_same_environment_reached_through_a_link_is_handed_off(server, job, tmp_path):
    """`ln -s /work/env .venv`: the link's interpreter is the server's environment."""
    link = tmp_path / "venv-link"
    link.symlink_to(Path(sys.prefix).resolve(), target_is_directory=True)
    python = link / "bin" / Path(sys.executable).name
    if not python.exists():
        pytest.skip(f"no {python.name} in {sys.prefix}/bin")
    proc, report = _run(job, "exit", "0", python=str(python), DICEWF_FORKSERVER=server[0])
    assert proc.returncode == 0, proc.stderr
    assert report["child"] is True and report["ppid"] == server[1]


def _runner(shell: str) -> list[str]:
    """The runner, preloading nothing, around one shell command."""
    return [sys.executable, str(RUNNER), "--no-preload", "--", "sh", "-c", shell]


def test_the_runner_serves_its_command_and_stops_with_it(tmp_path):
    """`forkserver.py -- CMD`: CMD sees the socket, its status is the runner's, and the
    server and its folder are gone after it."""
    proc = subprocess.run(
        _runner('test -S "$DICEWF_FORKSERVER" && echo "$DICEWF_FORKSERVER"; exit 5'),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 5, proc.stderr
    sock = Path(proc.stdout.strip())
    assert sock.name == "socket"
    assert not sock.parent.exists()


def test_the_runner_without_a_command_is_a_usage_error():
    proc = subprocess.run(
        [sys.executable, str(RUNNER)], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "usage: forkserver.py" in proc.stderr


def test_a_bad_request_is_dropped_and_the_server_goes_on(server, job):
    import socket

    for payload in (b"not json\n", b'{"script": "x"}\n', b""):  # no streams, or nothing at all
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bad:
            bad.connect(server[0])
            bad.sendall(payload)
            bad.shutdown(socket.SHUT_WR)
            assert bad.recv(100) == b""  # closed without an answer
    proc, report = _run(job, "exit", "0", DICEWF_FORKSERVER=server[0])
    assert proc.returncode == 0 and report["child"] is True


def test_ctrl_c_stops_the_command_then_the_server_without_a_traceback(tmp_path):
    """Ctrl-C goes to the terminal's whole process group: the runner waits for its command
    (Snakemake stops its jobs) and then stops the server, which ignored it."""
    marker = tmp_path / "ready"
    proc = subprocess.Popen(
        _runner(f'trap "exit 3" INT; echo "$DICEWF_FORKSERVER" > {marker}; sleep 30'),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    sock = Path(_wait_for(marker))
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr
    assert "Traceback" not in stderr
    assert not sock.parent.exists()  # the server stopped and its folder is gone


def test_a_job_of_another_copy_of_the_library_is_refused_and_runs_where_it_is(
    server, job, tmp_path
):
    """A Snakefile of another checkout: its jobs import their own dicewf, not the server's."""
    copy = tmp_path / "other" / "dicewf"
    shutil.copytree(SCRIPTS / "dicewf", copy, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run(
        [sys.executable, str(job), "exit", "0"],
        cwd=job.parent,
        env={**_env(DICEWF_FORKSERVER=server[0]), "PYTHONPATH": str(copy.parent)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[0])["child"] is False
    assert "not handed to the server (the server preloaded the library of" in proc.stderr
