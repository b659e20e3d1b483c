"""Mutation score of core dicewf modules against their fast unit tests (mutmut 3.x).

Not part of CI: mutmut is not in requirements.txt (``python -m pip install mutmut``). For each
module a scratch copy of the project is made (the package as ``src/dicewf``, where mutmut looks
for it; the rule scripts, configs and schema some tests read; the module's test files and the
test helpers), mutmut mutates only that module and runs only its tests (``-m 'not slow'``), and
the score is killed / (killed + survived): mutants that time out count as killed, mutants no test
covers as survived. Figures go to benchmarks/results/mutation.json, written after each module.

    python benchmarks/mutation.py                    # alpha, mixing, agreement, arena
    python benchmarks/mutation.py mixing --max-children 2
    python benchmarks/mutation.py arena --keep       # keep the scratch folder to inspect survivors
                                                     # (cd there; mutmut results / mutmut show NAME)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "workflow" / "scripts" / "dicewf"
TESTS = ROOT / "tests"
# module -> its unit test files (the fast ones: slow tests are deselected)
MODULES = {
    "alpha": ["test_alpha.py"],
    "mixing": ["test_mixing.py"],
    "agreement": ["test_agreement.py"],
    "arena": ["test_arena.py"],
}
HELPERS = ["conftest.py", "fake_chat_server.py", "fakes_alpacaeval.py", "data"]
KILLED = {"killed", "timeout"}
SURVIVED = {"survived", "no tests"}

PYPROJECT = """\
[tool.pytest.ini_options]
pythonpath = ["tests"]  # mutmut puts the mutated src/ first on sys.path
testpaths = ["tests"]
markers = ["slow", "vllm", "gpu", "slurm"]
filterwarnings = ["ignore::DeprecationWarning"]

[tool.mutmut]
source_paths = ["src/dicewf"]
only_mutate = ["src/dicewf/{module}.py"]
also_copy = ["workflow", "config", "config.yaml", ".test"]  # what some tests read
pytest_add_cli_args = ["-m", "not slow", "-p", "no:cacheprovider"]
pytest_add_cli_args_test_selection = [{tests}]
"""


def scratch_project(module: str, where: Path) -> Path:
    """A minimal copy of the project in which mutmut mutates ``module`` only."""
    shutil.copytree(PACKAGE, where / "src" / "dicewf", ignore=shutil.ignore_patterns("__pycache__"))
    scripts = sorted(PACKAGE.parent.glob("*.py"))  # the rule adapters some tests run
    (where / "workflow" / "scripts").mkdir(parents=True)
    for script in scripts:
        shutil.copy2(script, where / "workflow" / "scripts" / script.name)
    # tests that run a rule script in a subprocess (PYTHONPATH=workflow/scripts) get the
    # unmutated package: they cannot kill a mutant, only pass
    shutil.copytree(
        PACKAGE,
        where / "workflow" / "scripts" / "dicewf",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copytree(ROOT / "workflow" / "schemas", where / "workflow" / "schemas")
    shutil.copytree(ROOT / "config", where / "config")
    shutil.copy2(ROOT / "config.yaml", where / "config.yaml")
    (where / ".test").mkdir()
    shutil.copy2(ROOT / ".test" / "config.yaml", where / ".test" / "config.yaml")
    (where / "tests").mkdir()
    for name in [*MODULES[module], *HELPERS]:
        src = TESTS / name
        if src.is_dir():
            shutil.copytree(src, where / "tests" / name)
        elif src.exists():
            shutil.copy2(src, where / "tests" / name)
    tests = ", ".join(f'"tests/{t}"' for t in MODULES[module])
    (where / "pyproject.toml").write_text(PYPROJECT.format(module=module, tests=tests))
    return where


def statuses(project: Path) -> Counter:
    """Counts of mutmut's result per mutant (``mutmut results --all true``: "name: status")."""
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return Counter(
        line.rsplit(":", 1)[1].strip() for line in out.splitlines() if ":" in line and line.strip()
    )


def run(module: str, max_children: int, keep: bool) -> dict:
    where = Path(tempfile.mkdtemp(prefix=f"mutation-{module}-"))
    try:
        project = scratch_project(module, where)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        done = subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode:
            sys.exit(
                f"{module}: mutmut run failed ({done.returncode}):\n"
                f"{(done.stdout + done.stderr)[-3000:]}"
            )
        counts = statuses(project)
    finally:
        if keep:
            print(f"{module}: scratch project kept in {where}", file=sys.stderr)
        else:
            shutil.rmtree(where, ignore_errors=True)
    killed = sum(n for s, n in counts.items() if s in KILLED)
    survived = sum(n for s, n in counts.items() if s in SURVIVED)
    score = killed / (killed + survived) if killed + survived else float("nan")
    return {
        "module": module,
        "mutants": sum(counts.values()),
        "killed": killed,
        "survived": survived,
        "other": sum(counts.values()) - killed - survived,
        "score": score,
        "statuses": dict(counts),
    }


def _mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "modules", nargs="*", metavar="MODULE", help=f"of {', '.join(MODULES)} (default: all)"
    )
    parser.add_argument(
        "--max-children", type=int, default=1, help="mutants tested in parallel (default 1)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch projects")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "mutation.json",
        help="where the figures go (JSON)",
    )
    args = parser.parse_args()
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown module(s) {unknown}; choose from {list(MODULES)}")
    results = []
    print(f"{'module':<10} {'mutants':>7} {'killed':>7} {'survived':>8} {'other':>6} {'score':>7}")
    for module in args.modules or list(MODULES):
        r = run(module, args.max_children, args.keep)
        print(
            f"{r['module']:<10} {r['mutants']:>7} {r['killed']:>7} {r['survived']:>8} "
            f"{r['other']:>6} {r['score']:>7.1%}",
            flush=True,
        )
        if r["other"]:
            print(f"           other statuses: {r['statuses']}", flush=True)
        results.append(r)
        args.out.parent.mkdir(parents=True, exist_ok=True)  # after each module: kept if stopped
        args.out.write_text(
            json.dumps({"mutmut": _mutmut_version(), "results": results}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
