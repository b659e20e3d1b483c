"""Every command README.md and the pages of docs/ show, run as a user types it, in a copy of the
repository.

The Snakemake commands of the pages' ``bash`` blocks run as dry runs (``-n`` added where the
command has none; cluster commands are checked this way too: nothing is submitted) and their
DAGs are checked against the configuration the command names: the paper's DAG holds no toy-world
job, a test config plans only its own experiments, and a job count that a comment states is the
count planned. Make targets are checked with ``make -n``. The rest of the shell lines
(``apt-get``, ``sudo tests/slurm/start.sh``, ``squeue``, ...) are Slurm set-up that
tests/test_slurm.py runs for real. Every page of docs/ is linked from README.md, and every
relative link of the pages names a file of the repository (and a heading of it).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dicewf import config as wfconfig
from test_workflow import REPO, SNAKEMAKE, expected_jobs, load

SNAKEMAKE_PROGRAMS = ("snakemake", ".venv/bin/snakemake")
# `make run`'s runner (dicewf.forkserver): a Snakemake command after its `--`
RUNNER = (".venv/bin/python", "workflow/scripts/forkserver.py", "--")
# what the copy leaves out: the environment and anything a run wrote
NOT_COPIED = (
    ".git",
    ".venv",
    "results",
    "resources",
    "logs",
    ".snakemake",
    ".pytest_cache",
    "__pycache__",
)


def readme_commands(text: str) -> list[str]:
    """The logical command lines of a page's ``bash`` blocks: continuations joined, comments
    and blank lines dropped. An indented comment line under a command's comment continues it
    (``make run   # ...`` over two lines)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        line, commented = "", False
        for raw in block.splitlines():
            line += raw
            if line.endswith("\\"):
                line = line[:-1]
                continue
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.strip())
                commented = bool(split_comment(commands[-1])[1])
            elif commented and line[:1].isspace() and line.lstrip().startswith("#"):
                commands[-1] += " " + line.strip().lstrip("#").strip()
            else:
                commented = False
            line = ""
    return commands


def split_comment(command: str) -> tuple[str, str]:
    """(command, comment) of a line ``command   # comment``."""
    m = re.match(r"(.*?)\s+#\s?(.*)$", command)
    return (m[1], m[2]) if m else (command, "")


def job_stats(output: str) -> dict[str, int]:
    """Snakemake's "Job stats" table of a dry run: rule -> jobs."""
    stats: dict[str, int] = {}
    table = output.split("Job stats:", 1)[1]
    for line in table.splitlines():
        m = re.fullmatch(r"\s*([a-z_0-9]+)\s+(\d+)\s*", line)
        if m:
            stats[m[1]] = int(m[2])
            if m[1] == "total":
                break
    return stats


def configfiles(argv: list[str]) -> list[str]:
    """The files given to ``--configfile`` (several may follow one flag)."""
    files, taking = [], False
    for arg in argv:
        if arg in ("--configfile", "--configfiles"):
            taking = True
        elif taking and not arg.startswith("-"):
            files.append(arg)
        else:
            taking = False
    return files


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A copy of the repository as a fresh clone has it, without environment or results."""
    dest = tmp_path_factory.mktemp("readme") / "repo"
    shutil.copytree(REPO, dest, symlinks=True, ignore=shutil.ignore_patterns(*NOT_COPIED))
    return dest


# the front page and the pages it links to: each shows commands a user types
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMANDS = [c for page in PAGES for c in readme_commands(page.read_text())]
SNAKEMAKE_COMMANDS = [
    c
    for c in COMMANDS
    if c.split()[0] in SNAKEMAKE_PROGRAMS
    or (tuple(c.split()[:3]) == RUNNER and c.split()[3] in SNAKEMAKE_PROGRAMS)
]
RULE_NAMES = {
    name
    for smk in (REPO / "workflow" / "rules").glob("*.smk")
    for name in re.findall(r"^rule (\w+):", smk.read_text(), flags=re.MULTILINE)
}
MAKE_COMMANDS = [c for c in COMMANDS if c.split()[0] == "make"]


def links(page: Path) -> list[tuple[str, str]]:
    """The relative links of a markdown page: (file, anchor or "")."""
    targets = re.findall(r"\]\(([^)\s]+)\)", page.read_text())
    return [
        (t.partition("#")[0], t.partition("#")[2])
        for t in targets
        if not re.match(r"[a-z]+:", t) and not t.startswith("#")
    ]


def anchors(page: Path) -> set[str]:
    """The anchors of a markdown page's headings, as GitHub makes them."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)  # `# comments` in code
    return {
        re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+\s+(.*)$", text, flags=re.MULTILINE)
    }


def test_readme_shows_the_commands_these_tests_run():
    # the two set-up commands on the front page; the paper's dry run, the DAG inspection and the
    # cluster runs on the pages it links to
    front = readme_commands((REPO / "README.md").read_text())
    assert {"make run", "make test"} <= {split_comment(c)[0] for c in front}
    assert any("--configfile config/paper.yaml" in c and " -n" in c for c in SNAKEMAKE_COMMANDS)
    assert any("--profile slurm" in c for c in SNAKEMAKE_COMMANDS)
    assert len(SNAKEMAKE_COMMANDS) >= 6
    # a job count stated in a comment is checked below: at least one page states one
    assert any(re.search(r"\d[\d,]* jobs", split_comment(c)[1]) for c in SNAKEMAKE_COMMANDS)


def test_every_docs_page_is_linked_from_the_front_page_and_every_link_resolves():
    docs = {p.relative_to(REPO).as_posix() for p in PAGES[1:]}
    assert docs, "no pages under docs/"
    linked = {target for target, _ in links(REPO / "README.md")}
    assert docs <= linked, docs - linked
    for page in PAGES:
        for target, anchor in links(page):
            where = f"{page.relative_to(REPO)}: {target}#{anchor}"
            assert (page.parent / target).exists(), where
            if anchor:
                assert anchor in anchors(page.parent / target), where


@pytest.mark.slow
@pytest.mark.parametrize("command", SNAKEMAKE_COMMANDS)
def test_each_snakemake_command_of_the_readme_runs_as_written(command, clone):
    line, comment = split_comment(command)
    line = line.split("|")[0]  # `--rulegraph | dot ...`: Snakemake's part (dot may be missing)
    words = shlex.split(line)
    runner = tuple(words[:3]) == RUNNER  # Snakemake under make run's fork server, as written
    argv = words[4:] if runner else words[1:]
    if any(a.startswith("--profile") for a in argv) and importlib_missing(
        "snakemake_executor_plugin_slurm"
    ):
        pytest.skip("the Slurm executor plugin is not installed")
    graph = "--rulegraph" in argv or "--dag" in argv
    if not graph and "-n" not in argv and "--dry-run" not in argv:
        # a dry run: after `--` (targets) the flag must come first
        argv = ["-n", *argv]
    proc = snakemake(argv, clone, runner=runner)
    assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
    if graph:
        assert proc.stdout.lstrip().startswith("digraph"), proc.stdout[:200]
        return
    stats = job_stats(proc.stdout + proc.stderr)
    files = configfiles(argv)
    cfg: dict = {}
    for name in files or ["config.yaml"]:  # --configfile replaces config.yaml, never merges
        cfg = wfconfig.deep_merge(cfg, load(clone / name))
    toy_jobs = sorted(rule for rule in stats if rule.startswith("toy_"))
    if "world" in cfg:
        assert toy_jobs, (command, stats)
    else:
        assert not toy_jobs, f"{command} plans toy-world jobs {toy_jobs}"
    # output files, or a target rule by name (`sera_paper`)
    targets = [a for a in argv if a.startswith("results/") or a in RULE_NAMES]
    want = expected_jobs(cfg)["train"]
    # the whole configuration, or a target's part of it: never a run the config does not have
    assert (stats.get("train", 0) == want) if not targets else (stats.get("train", 0) <= want)
    m = re.search(r"(\d[\d,]*) jobs", comment)
    if m:  # a count a page states is the count planned
        assert stats["total"] == int(m[1].replace(",", "")), (command, stats["total"])


@pytest.mark.slow
@pytest.mark.parametrize("command", MAKE_COMMANDS)
def test_each_make_target_of_the_readme_exists(command, clone):
    target = shlex.split(split_comment(command)[0])[1:]
    proc = subprocess.run(
        ["make", "-n", *target], cwd=clone, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
    m = re.search(r"(\d[\d,]*) jobs", split_comment(command)[1])
    if m:  # a count a page states is what the target's Snakemake command plans
        # the Snakemake command, alone or after its runner's `--` (make run)
        found = (
            re.search(r"(?:^|\s--\s)(\S*snakemake\s.*)", line) for line in proc.stdout.splitlines()
        )
        runs = [f[1] for f in found if f]
        assert len(runs) == 1, f"{command}: no one snakemake command in\n{proc.stdout}"
        dry = snakemake(["-n", *shlex.split(runs[0])[1:]], clone)
        assert dry.returncode == 0, f"{runs[0]}\n{dry.stdout}\n{dry.stderr}"
        assert job_stats(dry.stdout + dry.stderr)["total"] == int(m[1].replace(",", "")), command


def snakemake(argv: list[str], cwd: Path, runner: bool = False) -> subprocess.CompletedProcess:
    """Snakemake with ``argv`` in ``cwd``, offline and with no Slurm controller in reach
    (conftest's no_slurm_controller); ``runner``: under the fork server's runner, as make run
    starts it."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    wrap = [sys.executable, str(cwd / RUNNER[1]), "--"] if runner else []
    return subprocess.run(
        [*wrap, *SNAKEMAKE, *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def importlib_missing(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None


def test_the_mutation_table_is_what_the_benchmark_prints():
    """README's table of mutation scores is the output of the command it names,
    `python benchmarks/mutation.py --table` (the figures of benchmarks/results/mutation.json)."""
    printed = subprocess.run(
        [sys.executable, "benchmarks/mutation.py", "--table"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    readme = (REPO / "README.md").read_text()
    assert "`python benchmarks/mutation.py --table`" in readme
    assert printed.startswith("| module |") and printed in readme
