"""Mutation score of core dicewf modules against their fast unit tests (mutmut 3.x).

Not part of CI: mutmut is not in requirements.txt (``python -m pip install mutmut``). For each
module a scratch copy of the project is made (the package as ``src/dicewf``, where mutmut looks
for it; the rule scripts, configs and schema some tests read; the tests folder), mutmut mutates
only that module and runs only its tests (``-m 'not slow'``).
Mutants that time out count as killed, mutants no test covers as survived. The raw score is
killed / (killed + survived); survivors judged equivalent (no input tells them from the code:
benchmarks/mutation_equivalent.json, mutant name -> reason) are then set aside, and the score the
goal of issue 14 is about is killed / (killed + survived - equivalent). Figures go to
benchmarks/results/mutation.json, merged per module and written after each one; the survivors
not judged equivalent are listed there by name.

    python benchmarks/mutation.py                    # every module of MODULES (hours)
    python benchmarks/mutation.py mixing --max-children 2
    python benchmarks/mutation.py arena --keep       # keep the scratch folder to inspect survivors
                                                     # (cd there; mutmut results / mutmut show NAME)
    python benchmarks/mutation.py arena --reuse DIR  # after adding tests: rerun the survivors only
    python benchmarks/mutation.py --table            # the recorded figures as a markdown table
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
EQUIVALENT = Path(__file__).with_name("mutation_equivalent.json")
# module -> its unit test files (the fast ones: slow tests are deselected); "training" and
# "checkpoints" are the training helpers (fingerprints, configs, unpaired data, checkpoints):
# every function of both is mutated, train_resumable, train_dpo and train_sft included, which the
# fast tests run with test doubles for TRL's trainers and the models (no training)
MODULES = {
    "mixing": ["test_mixing.py"],
    "agreement": ["test_agreement.py"],
    "sharding": ["test_sharding.py"],
    "io": ["test_io.py"],
    "lcwinrate": ["test_lcwinrate.py"],
    "config": ["test_config.py", "test_sharing.py", "test_sera_workflow.py"],
    "judge_client": ["test_judge_client.py"],
    "llm_judge": ["test_llm_judge.py"],
    "rewards": ["test_rewards.py"],
    "reflogps": ["test_ref_reuse.py"],
    "scoring": ["test_scoring.py", "test_scoring_memory.py"],
    "checkpoints": ["test_training.py"],
    "training": ["test_training.py", "test_training_variants.py"],
    "alpha": ["test_alpha.py"],
    "arena": ["test_arena.py"],
    "sera": ["test_sera.py", "test_sera_workflow.py", "test_sera_figures.py"],
    "sera_eval": ["test_sera_eval.py"],
}
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
# what some tests read; schemas/ is workflow/schemas seen from src/dicewf (judge_client's defaults)
also_copy = ["workflow", "schemas", "config", "config.yaml", ".test"]
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
    shutil.copytree(ROOT / "workflow" / "prompts", where / "workflow" / "prompts")  # llm_judge's
    shutil.copytree(ROOT / "workflow" / "schemas", where / "schemas")
    shutil.copytree(ROOT / "config", where / "config")
    shutil.copy2(ROOT / "config.yaml", where / "config.yaml")
    (where / ".test").mkdir()
    shutil.copy2(ROOT / ".test" / "config.yaml", where / ".test" / "config.yaml")
    # the whole tests folder: test files import helpers from each other (test_workflow,
    # test_paper, conftest, fakes); only the module's test files are run
    shutil.copytree(TESTS, where / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    tests = ", ".join(f'"tests/{t}"' for t in MODULES[module])
    (where / "pyproject.toml").write_text(PYPROJECT.format(module=module, tests=tests))
    return where


def statuses(project: Path) -> dict[str, str]:
    """mutmut's result per mutant (``mutmut results --all true``: "name: status")."""
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {
        name.strip(): status.strip()
        for name, status in (line.rsplit(":", 1) for line in out.splitlines() if ":" in line)
    }


def equivalent(module: str) -> dict[str, str]:
    """The survivors of ``module`` judged equivalent: mutant name -> why no input tells them."""
    if not EQUIVALENT.exists():
        return {}
    return json.loads(EQUIVALENT.read_text()).get(module, {})


def score(module: str, status: dict[str, str]) -> dict:
    """Counts, the raw score and the score over non-equivalent mutants of one module."""
    counts = Counter(status.values())
    killed = sum(n for s, n in counts.items() if s in KILLED)
    survivors = sorted(name for name, s in status.items() if s in SURVIVED)
    judged = equivalent(module)
    stale = sorted(set(judged) - set(survivors))  # killed now, or renamed by a code change
    if stale:
        print(f"{module}: listed as equivalent but not surviving: {stale}", file=sys.stderr)
    equiv = [name for name in survivors if name in judged]
    tested = killed + len(survivors)
    return {
        "module": module,
        "mutants": len(status),
        "killed": killed,
        "survived": len(survivors),
        "equivalent": len(equiv),
        "other": len(status) - tested,
        "raw_score": round(killed / tested, 4) if tested else None,
        "score": round(killed / (tested - len(equiv)), 4) if tested > len(equiv) else None,
        "statuses": dict(counts),
        "survivors": [name for name in survivors if name not in judged],
    }


def run(module: str, max_children: int, keep: bool, reuse: Path | None = None) -> dict:
    """Mutate ``module`` in a fresh scratch project, or in ``reuse`` (a kept one): there its
    test files are refreshed and only the mutants that survived are run again."""
    where = reuse or Path(tempfile.mkdtemp(prefix=f"mutation-{module}-"))
    names: list[str] = []
    try:
        if reuse:
            for name in MODULES[module]:
                shutil.copy2(TESTS / name, reuse / "tests" / name)
            names = sorted(n for n, s in statuses(reuse).items() if s in SURVIVED)
        else:
            scratch_project(module, where)
        # mutmut forks each mutant's test run from a process that ran the tests once; torch's
        # OpenMP thread pool does not survive a fork, so a child that computes with torch
        # hangs until mutmut's CPU limit and counts as a timeout (killed): one thread, no pool
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        done = subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *names],
            cwd=where,
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode:
            sys.exit(
                f"{module}: mutmut run failed ({done.returncode}):\n"
                f"{(done.stdout + done.stderr)[-3000:]}"
            )
        status = statuses(where)
    finally:
        if keep or reuse:
            print(f"{module}: scratch project kept in {where}", file=sys.stderr)
        else:
            shutil.rmtree(where, ignore_errors=True)
    return score(module, status)


def _commit() -> str:
    """The checked-out commit (with "+" when the working tree differs from it)."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "workflow", "tests"])
    return head.stdout.strip() + ("+" if dirty.returncode else "")


def _mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def table(results: list[dict]) -> str:
    """The recorded figures as markdown rows (README's mutation table)."""
    rows = [
        "| module | mutants | killed | survived | judged equivalent | raw score "
        "| score (non-equivalent) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    order = list(MODULES)
    for r in sorted(results, key=lambda r: order.index(r["module"])):
        raw, score = r.get("raw_score"), r.get("score")
        rows.append(
            f"| {r['module']} | {r['mutants']} | {r['killed']} | {r['survived']} "
            f"| {r.get('equivalent', '-')} | {f'{raw:.1%}' if raw is not None else '-'} "
            f"| {f'{score:.1%}' if score is not None else '-'}"
            f"{' (' + r['note'] + ')' if r.get('note') else ''} |"
        )
    return "\n".join(rows)


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
        "--reuse",
        type=Path,
        metavar="DIR",
        help="a kept scratch project of the one MODULE given: refresh its tests, rerun survivors",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "mutation.json",
        help="where the figures go (JSON)",
    )
    parser.add_argument(
        "--table", action="store_true", help="print the figures in --out as markdown and stop"
    )
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.out.read_text())["results"]))
        return
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown module(s) {unknown}; choose from {list(MODULES)}")
    if args.reuse and len(args.modules) != 1:
        parser.error("--reuse takes the one module whose scratch project it is")
    print(
        f"{'module':<12} {'mutants':>7} {'killed':>7} {'survived':>8} {'equiv.':>6} "
        f"{'other':>6} {'raw':>6} {'score':>6}"
    )
    for module in args.modules or list(MODULES):
        r = run(module, args.max_children, args.keep, args.reuse)
        print(
            f"{r['module']:<12} {r['mutants']:>7} {r['killed']:>7} {r['survived']:>8} "
            f"{r['equivalent']:>6} {r['other']:>6} {r['raw_score']:>6.1%} {r['score']:>6.1%}",
            flush=True,
        )
        if r["other"]:
            print(f"             other statuses: {r['statuses']}", flush=True)
        r["commit"] = _commit()
        # read now, not at the start: the figures of other modules, kept, may have been written
        # meanwhile by another run of this script (one module an hour is common)
        data = json.loads(args.out.read_text()) if args.out.exists() else {}
        results = [old for old in data.get("results", []) if old["module"] != module] + [r]
        data.update(mutmut=_mutmut_version(), results=results)
        args.out.parent.mkdir(parents=True, exist_ok=True)  # after each module: kept if stopped
        args.out.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
