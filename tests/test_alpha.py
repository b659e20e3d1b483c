"""Tests for dicewf.alpha: pairs from length-regularised rewards and the search for alpha*."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from dicewf.alpha import (
    LANDSCAPE_DENSE_SHARE,
    LANDSCAPE_WINDOW,
    AlphaResult,
    build_pairs,
    eligible,
    figure4_landscape,
    landscape,
    landscape_grid,
    objective,
    run_search,
    score_column,
    search_alpha,
)
from dicewf.io import DatasetError, write_json, write_parquet
from dicewf.seeds import with_seed
from test_bad_input import ALPHA

REPO = Path(__file__).resolve().parents[1]
BETA = 0.5  # reward = BETA * logratio in make_scores


def make_scores(
    rows: list[tuple[str, int, float, int]], tokens: list[int] | None = None
) -> pd.DataFrame:
    """Scores frame from (prompt_id, sample_idx, logratio, len_chars) rows."""
    frame = pd.DataFrame(rows, columns=["prompt_id", "sample_idx", "logratio", "len_chars"])
    frame["prompt"] = "prompt " + frame["prompt_id"]
    frame["response"] = frame["prompt_id"] + "/" + frame["sample_idx"].astype(str)
    frame["len_tokens"] = tokens if tokens is not None else frame["len_chars"] // 4
    frame["beta"] = BETA
    frame["reward"] = BETA * frame["logratio"]
    return frame


def random_tied_scores(seed: int, n_prompts: int = 30) -> pd.DataFrame:
    """Rewards on a 0.5 grid, small integer lengths, repeated (reward, length) rows, shuffled rows
    and gaps in sample_idx: many ties and many coinciding crossing points."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_prompts):
        lines = [
            (0.5 * int(rng.integers(-4, 5)), int(rng.integers(1, 12)))
            for _ in range(int(rng.integers(1, 7)))
        ]
        if rng.random() < 0.5:
            lines.append(lines[int(rng.integers(len(lines)))])
        for k, (reward, length) in enumerate(lines):
            rows.append((f"p{p:03d}", 3 * k + 1, reward, length))
    frame = make_scores(rows)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def random_scores(seed: int, n_prompts: int = 200, n_responses: int = 8, bias: float = 0.01):
    """Continuous log-ratios with a planted preference for length: quality + bias * len."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(20, 800, size=(n_prompts, n_responses))
    rewards = rng.normal(0.0, 1.0, size=lengths.shape) + bias * lengths
    rows = [
        (f"p{p:04d}", k, float(rewards[p, k]), int(lengths[p, k]))
        for p in range(n_prompts)
        for k in range(n_responses)
    ]
    return make_scores(rows)


def brute_force(scores: pd.DataFrame, lo: float, hi: float) -> tuple[float, float]:
    """alpha* by plain loops: lo, then the midpoint of each maximal run of elementary pieces
    (between consecutive distinct pairwise crossings) on which no winner or loser changes."""
    prompts = []
    for _, group in scores.groupby("prompt_id"):
        if len(group) >= 2:
            group = group.sort_values("sample_idx")
            prompts.append(list(zip(group["logratio"].tolist(), group["len_chars"].tolist())))
    crossings = set()
    for lines in prompts:
        for i, (r_i, l_i) in enumerate(lines):
            for r_j, l_j in lines[i + 1 :]:
                if l_i != l_j and lo < (r_i - r_j) / (l_i - l_j) < hi:
                    crossings.add((r_i - r_j) / (l_i - l_j))

    def assignment(alpha: float) -> tuple[tuple[int, int], ...]:
        picks = []
        for lines in prompts:
            shaped = [r - alpha * length for r, length in lines]
            picks.append((shaped.index(max(shaped)), shaped.index(min(shaped))))
        return tuple(picks)

    def value(picks: tuple[tuple[int, int], ...]) -> float:
        total = sum(prompts[p][w][1] - prompts[p][l][1] for p, (w, l) in enumerate(picks))
        return abs(total) / len(prompts)

    candidates = [(lo, value(assignment(lo)))]
    if hi > lo:
        edges = [lo, *sorted(crossings), hi]
        start, current = lo, None
        for a, b in zip(edges, edges[1:]):
            picks = assignment((a + b) / 2)
            if current is not None and picks != current:
                candidates.append(((start + a) / 2, value(current)))
                start = a
            current = picks
        candidates.append(((start + hi) / 2, value(current)))
    best = min(v for _, v in candidates)
    return next((a, v) for a, v in candidates if v == best)


# A hand-worked case. Prompt a: lines (1, 10), (2, 30), (2, 20); c: (3, 50), (1, 10), (1, 10);
# b: two identical responses (no preference at any alpha); d: a single response (dropped).
# Winner/loser lengths on each piece of [0, 0.2]:
#   alpha = 0      a: 30 - 10 (tie 2 = 2, first wins)   c: 50 - 10   sum  60
#   (0, 0.05)      a: 20 - 10                           c: 50 - 10   sum  50
#   (0.05, 0.1)    a: 20 - 30                           c: 10 - 50   sum -50
#   (0.1, 0.2)     a: 10 - 30                           c: 10 - 50   sum -60
HAND = make_scores(
    [
        ("c", 0, 3.0, 50),
        ("a", 2, 2.0, 20),
        ("d", 0, 9.0, 99),
        ("b", 0, 0.0, 5),
        ("a", 0, 1.0, 10),
        ("c", 2, 1.0, 10),
        ("b", 1, 0.0, 5),
        ("a", 1, 2.0, 30),
        ("c", 1, 1.0, 10),
    ]
)


def test_hand_case_pairs_follow_tie_rule():
    pairs = build_pairs(HAND, 0.0)
    assert pairs["prompt_id"].tolist() == ["a", "c"]
    assert pairs["chosen_sample_idx"].tolist() == [1, 0]  # a: first of the two maximal rewards
    assert pairs["rejected_sample_idx"].tolist() == [0, 1]  # c: first of the two minimal ones
    assert pairs["chosen"].tolist() == ["a/1", "c/0"]
    assert pairs["rejected"].tolist() == ["a/0", "c/1"]
    assert pairs["chosen_reward"].tolist() == [BETA * 2.0, BETA * 3.0]  # the reward column
    assert pairs["len_diff"].tolist() == [20, 40]
    assert pairs["prompt"].tolist() == ["prompt a", "prompt c"]
    assert (pairs["alpha"] == 0.0).all()
    assert pairs.attrs["n_degenerate"] == 1  # b
    assert pairs.attrs["n_dropped"] == 1  # d

    shaped = build_pairs(HAND, 0.075)
    assert shaped["chosen_sample_idx"].tolist() == [2, 1]
    assert shaped["rejected_sample_idx"].tolist() == [1, 0]
    assert shaped["len_diff"].tolist() == [-10, -40]
    assert shaped["rejected_reward"].tolist() == [BETA * 2.0, BETA * 3.0]  # unshaped


def test_hand_case_objective_and_exact_search():
    assert objective(HAND, 0.0) == 60 / 3
    assert objective(HAND, 0.01) == 50 / 3
    assert objective(HAND, 0.15) == 60 / 3
    result = search_alpha(HAND, "exact", bounds=(0.0, 0.2))
    assert result.alpha == 0.025  # midpoint of the first piece with the minimal objective
    assert result.objective == 50 / 3
    assert result.n_prompts == 3 and result.n_dropped == 1
    assert brute_force(HAND, 0.0, 0.2) == (0.025, 50 / 3)
    # Exactly at 0.05 all of c's responses tie (c contributes 0), a value no open piece has;
    # by design such points are not candidates of the exact search.
    assert objective(HAND, 0.05) == 10 / 3


def test_breakpoints_on_the_bounds():
    # x: +10 below its crossing at 0.1, -10 above; y: +10 below 0.3.
    scores = make_scores(
        [("x", 0, 0.0, 10), ("x", 1, 1.0, 20), ("y", 0, 0.0, 10), ("y", 1, 3.0, 20)]
    )
    # At 0.1 itself x's responses tie (x counts 0), but lo is the only closed-end candidate.
    assert objective(scores, 0.1) == 5.0
    result = search_alpha(scores, bounds=(0.0, 0.1))
    assert (result.alpha, result.objective, result.n_evaluations) == (0.0, 10.0, 2)
    result = search_alpha(scores, bounds=(0.1, 0.2))
    assert (result.alpha, result.objective) == ((0.1 + 0.2) / 2, 0.0)
    # lo is a candidate even where it sits on a tie: HAND at 0.05 (see above).
    result = search_alpha(HAND, bounds=(0.05, 0.2))
    assert (result.alpha, result.objective) == (0.05, 10 / 3)
    assert brute_force(HAND, 0.05, 0.2) == (0.05, 10 / 3)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("bounds", [(0.0, 1.0), (0.25, 2.0), (0.0, 5.0), (0.5, 0.5)])
def test_exact_matches_brute_force_with_ties(seed, bounds):
    scores = random_tied_scores(seed)
    result = search_alpha(scores, "exact", bounds=bounds)
    alpha, value = brute_force(scores, *bounds)
    assert result.objective == pytest.approx(value, abs=1e-12)
    assert result.alpha == pytest.approx(alpha, abs=1e-12)
    assert objective(scores, result.alpha) == pytest.approx(result.objective, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_gp_and_grid_never_beat_exact(seed):
    scores = random_scores(seed, bias=0.004 * (seed + 1))
    exact = search_alpha(scores, "exact", bounds=(0.0, 0.05))
    grid = search_alpha(scores, "grid", bounds=(0.0, 0.05), grid_step=0.001)
    gp = search_alpha(scores, "gp", bounds=(0.0, 0.05), n_calls=12, seed=seed)
    assert grid.n_evaluations == 51 and gp.n_evaluations == 12
    for other in (grid, gp):
        assert exact.objective <= other.objective + 1e-12
        assert objective(scores, other.alpha) == pytest.approx(other.objective, abs=1e-12)
    assert objective(scores, exact.alpha) == pytest.approx(exact.objective, abs=1e-12)


def test_planted_length_bias_is_removed():
    scores = random_scores(0, n_prompts=400, bias=0.02)
    at_zero = landscape(scores, [0.0])["mean_len_diff"].iloc[0]
    assert at_zero > 300
    result = search_alpha(scores, "exact", bounds=(0.0, 0.05))
    assert result.objective < 0.02 * at_zero
    assert 0.01 < result.alpha < 0.03
    pairs = build_pairs(scores, result.alpha)
    assert abs(pairs["len_diff"].mean()) < 0.02 * at_zero


def test_length_unit_tokens_uses_len_tokens():
    # chars: 1.0 - 0.05 * 10 = 0.5 beats 1.2 - 0.05 * 30 = -0.3
    # tokens: 1.0 - 0.05 * 5 = 0.75 loses to 1.2 - 0.05 * 4 = 1.0
    scores = make_scores([("a", 0, 1.0, 10), ("a", 1, 1.2, 30)], tokens=[5, 4])
    chars = build_pairs(scores, 0.05)
    tokens = build_pairs(scores, 0.05, length_unit="tokens")
    assert chars["chosen_sample_idx"].tolist() == [0]
    assert tokens["chosen_sample_idx"].tolist() == [1]
    assert tokens[["chosen_len", "rejected_len", "len_diff"]].iloc[0].tolist() == [4, 5, -1]
    assert objective(scores, 0.05, length_unit="tokens") == 1.0
    assert objective(scores, 0.05) == 20.0
    assert search_alpha(scores, bounds=(0.0, 1.0), length_unit="tokens").length_unit == "tokens"
    with pytest.raises(ValueError, match="length_unit"):
        objective(scores, 0.0, length_unit="words")


def test_eligibility_drops_prompts_with_few_responses():
    kept, dropped = eligible(HAND)
    assert dropped == 1 and set(kept["prompt_id"]) == {"a", "b", "c"}
    kept, dropped = eligible(HAND, min_responses=3)
    assert dropped == 2 and set(kept["prompt_id"]) == {"a", "c"}
    assert search_alpha(HAND, bounds=(0.0, 0.2), min_responses=3).n_prompts == 2
    with pytest.raises(ValueError, match="no prompt has at least 4 responses"):
        search_alpha(HAND, min_responses=4)
    with pytest.raises(ValueError, match="no prompt"):
        build_pairs(HAND[HAND["prompt_id"] == "d"], 0.0)


def test_bad_values_name_column_and_rows():
    scores = HAND.copy()
    scores.loc[4, "logratio"] = np.nan
    with pytest.raises(DatasetError, match=r"'logratio'.*\[4\]"):
        search_alpha(scores)
    scores = HAND.copy()
    scores["len_chars"] = scores["len_chars"].astype(float)
    scores.loc[7, "len_chars"] = np.inf
    with pytest.raises(DatasetError, match=r"'len_chars'.*\[7\]"):
        objective(scores, 0.0, source="scores.parquet")
    with pytest.raises(DatasetError, match="empty"):
        search_alpha(HAND.iloc[:0])
    with pytest.raises(DatasetError, match="repeated"):
        objective(pd.concat([HAND, HAND.iloc[:1]], ignore_index=True), 0.0)


def test_all_equal_lengths_returns_lo():
    scores = random_tied_scores(3)
    scores["len_chars"] = 7
    for bounds in [(0.0, 1.0), (0.01, 0.05)]:
        result = search_alpha(scores, "exact", bounds=bounds)
        assert result.alpha == bounds[0] and result.objective == 0.0


def test_landscape_agrees_with_objective():
    scores = random_tied_scores(5)
    alphas = np.linspace(0.0, 2.0, 81)  # hits many crossing points exactly
    frame = landscape(scores, alphas)
    assert frame.columns.tolist() == ["alpha", "objective", "mean_len_diff"]
    for alpha, value, mean in frame.itertuples(index=False):
        assert value == objective(scores, alpha)
        assert abs(mean) == value


def test_search_arguments_and_result():
    with pytest.raises(ValueError, match=r"'exact', 'gp', 'grid'"):
        search_alpha(HAND, method="random")
    with pytest.raises(ValueError, match="lo <= hi"):
        search_alpha(HAND, bounds=(0.2, 0.1))
    with pytest.raises(ValueError, match="grid_step"):
        search_alpha(HAND, method="grid", grid_step=0.0)
    result = search_alpha(HAND, method="grid", bounds=(0.0, 0.2), grid_step=0.03)
    assert result.n_evaluations == 7
    assert result.alpha == 0.03  # 0.0 gives 20, (0, 0.05) gives 50 / 3
    assert isinstance(result, AlphaResult)
    as_dict = result.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert {type(as_dict[k]) for k in ("alpha", "objective", "seconds")} == {float}
    assert {type(as_dict[k]) for k in ("n_prompts", "n_evaluations", "n_dropped")} == {int}


# --- the log-ratio scale and the config's own settings ------------------------------------------


def planted_scores(n_prompts: int, n_responses: int, bias: float, beta: float, seed: int = 0):
    """Implicit-reward scores with a planted length bias on the log-ratio scale:
    logratio = quality + bias * len_chars and reward = beta * logratio. Shaping with alpha = bias
    leaves the quality alone, which does not depend on length, so alpha* ~ bias."""
    rng = np.random.default_rng(seed)
    typical = rng.lognormal(np.log(1200.0), 0.5, size=(n_prompts, 1))
    lengths = np.maximum(1, rng.normal(typical, 0.3 * typical, (n_prompts, n_responses)))
    lengths = lengths.round().astype(np.int64)
    logratio = rng.normal(0.0, 5.0, size=lengths.shape) + bias * lengths
    ids = np.array([f"p{i:05d}" for i in range(n_prompts)], dtype=object)
    return pd.DataFrame(
        {
            "prompt_id": np.repeat(ids, n_responses),
            "prompt": np.repeat(ids, n_responses),
            "sample_idx": np.tile(np.arange(n_responses), n_prompts),
            "response": "",
            "finish_reason": "stop",
            "logratio": logratio.ravel(),
            "beta": beta,
            "reward": beta * logratio.ravel(),
            "len_chars": lengths.ravel(),
            "len_tokens": (lengths // 4).ravel(),
        }
    )


def config_alpha(path: str) -> tuple[dict, float, int]:
    """The defaults.alpha block (with the config's one seed, as the rule passes it), train.beta
    and Figure 4's point count of a config file."""
    config = yaml.safe_load((REPO / path).read_text())
    defaults, points = config["defaults"], config["report"]["figure4"]["points"]
    alpha = with_seed(defaults["alpha"], config["seed"], "min_responses")
    return alpha, float(defaults["train"]["beta"]), points


# the paper's alpha* = 0.023 (Zephyr, beta 0.01); the toy world's is about 0.05 (beta 0.1)
@pytest.mark.parametrize(
    "path,bias", [("config/paper.yaml", 0.023), ("config.yaml", 0.05), (".test/config.yaml", 0.05)]
)
def test_config_settings_find_a_planted_log_ratio_alpha(path, bias):
    params, beta, points = config_alpha(path)
    scores = planted_scores(3000, 16, bias, beta)
    out = run_search(scores, params, source=path)
    r = out.result
    assert r["mean_len_diff_alpha0"] > 1000  # D(0) prefers long responses by ~1,250 characters
    assert r["alpha"] == pytest.approx(bias, rel=0.02)  # log-ratio units, not beta * bias
    assert abs(r["mean_len_diff"]) < 0.5  # exact: 0.13; gp (seed 0) 0.54, grid 3.7 here
    assert r["objective"] == pytest.approx(abs(r["mean_len_diff"]))
    assert r["score"] == "logratio" and r["beta"] == beta
    assert r["alpha_reward"] == pytest.approx(beta * r["alpha"])
    assert r["zero_gap_in_bounds"] is True
    assert (out.pairs["alpha"] == r["alpha"]).all()
    land = figure4_landscape(scores, r, params, points=points, source=path)
    assert len(land) == points
    assert r["alpha"] in land["alpha"].tolist()


def test_log_ratio_and_reward_scales_give_the_same_pairs():
    scores = random_scores(1, bias=0.01)
    on_logratio = search_alpha(scores, bounds=(0.0, 0.05))
    on_reward = search_alpha(scores, bounds=(0.0, BETA * 0.05), score="reward")
    assert on_logratio.score == "logratio" and on_reward.score == "reward"
    assert on_reward.alpha == pytest.approx(BETA * on_logratio.alpha, rel=1e-9)
    assert on_reward.objective == pytest.approx(on_logratio.objective, abs=1e-9)
    pd.testing.assert_frame_equal(
        build_pairs(scores, on_logratio.alpha).drop(columns="alpha"),
        build_pairs(scores, BETA * on_logratio.alpha, score="reward").drop(columns="alpha"),
    )


def alpha_params(**overrides) -> dict:
    """An experiment's alpha block (exact search on [0, 0.2], test_bad_input's) with ``overrides``."""
    return {**ALPHA, **overrides}


def test_judge_ratings_are_shaped_on_the_reward_and_unrated_rows_dropped():
    judged = HAND.drop(columns=["logratio", "beta"])
    judged.loc[len(judged)] = {**judged.iloc[4].to_dict(), "sample_idx": 9, "reward": np.nan}
    assert score_column(judged) == "reward" and score_column(HAND) == "logratio"
    params = alpha_params(bounds=[0.0, 0.1], fixed=0.0)
    out = run_search(judged, params)
    r = out.result
    assert (r["method"], r["alpha"], r["alpha_searched"]) == ("fixed", 0.0, None)
    assert r["score"] == "reward" and r["beta"] is None and r["alpha_reward"] is None
    assert r["n_unrated"] == 1 and r["n_pairs"] == 2
    assert out.pairs["chosen_reward"].tolist() == [BETA * 2.0, BETA * 3.0]
    land = figure4_landscape(judged, r, params, points=7)
    assert land["alpha"].iloc[0] == 0.0 and len(land) == 7
    assert land["objective"].iloc[0] == objective(judged.dropna(), 0.0, score="reward")


def test_scale_multiplies_alpha_star_and_the_landscape_centres_on_alpha_star():
    params = alpha_params(scale=2.0)
    out = run_search(HAND, params)
    r = out.result
    assert r["alpha_searched"] == 0.025 and r["alpha"] == 0.05
    assert r["alpha_reward"] == pytest.approx(BETA * 0.05)
    assert r["objective"] == objective(HAND, 0.05)
    assert 0.025 in figure4_landscape(HAND, r, params, points=11)["alpha"].tolist()
    assert set(out.length_diffs["dataset"]) == {"D(0)", "D(alpha*)"}


def test_mixed_betas_are_refused():
    scores = HAND.copy()
    scores.loc[0, "beta"] = 0.1
    params = alpha_params()
    with pytest.raises(DatasetError, match=r"scores.parquet: column 'beta' holds 2"):
        run_search(scores, params, source="scores.parquet")


def test_a_box_below_alpha_star_is_reported(caplog):
    scores = random_scores(0, bias=0.02)
    params = alpha_params(bounds=[0.0, 0.005], grid_step=0.001)
    with caplog.at_level(logging.WARNING, logger="dicewf.alpha"):
        out = run_search(scores, params, source="s.parquet")
    assert out.result["zero_gap_in_bounds"] is False
    assert "alpha* may lie outside" in caplog.text and "s.parquet" in caplog.text
    params["bounds"] = [0.0, 0.05]
    assert run_search(scores, params).result["zero_gap_in_bounds"] is True


@pytest.mark.parametrize("centre", [0.023, 0.0, 0.1, 0.5])
def test_landscape_grid_is_dense_around_alpha_star(centre):
    lo, hi, points = 0.0, 0.1, 200
    grid = landscape_grid(lo, hi, centre, points)
    assert len(grid) == points and grid[0] == lo and grid[-1] == hi
    assert (np.diff(grid) > 0).all()
    if centre <= hi:
        assert centre in grid
    half = LANDSCAPE_WINDOW * (hi - lo)
    near = (grid >= centre - half) & (grid <= centre + half)
    window = min(hi, centre + half) - max(lo, centre - half)
    if window > 0:
        # the window holds its share of the points and is denser than the rest of the box
        assert near.sum() >= LANDSCAPE_DENSE_SHARE * points
        assert near.sum() / window > 4 * (points - near.sum()) / (hi - lo - window)
    else:
        np.testing.assert_allclose(np.diff(grid), (hi - lo) / (points - 1))
    # the paper's case: steps near alpha* are a small fraction of alpha* itself
    if centre == 0.023:
        assert np.diff(grid[near]).max() < 0.01 * centre
    assert len(landscape_grid(lo, hi, centre, 2)) == 2
    with pytest.raises(ValueError, match="points"):
        landscape_grid(lo, hi, centre, 0)


def test_schema_defaults_the_method_to_exact_on_defaults_only():
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    del config["defaults"]["alpha"]["method"]
    config["experiments"]["dice_alpha2x"] = {"iterations": 1, "alpha": {"scale": 2.0}}
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    assert config["defaults"]["alpha"]["method"] == "exact"
    # an experiment's partial alpha block stays partial, so it inherits the defaults' method
    assert config["experiments"]["dice_alpha2x"]["alpha"] == {"scale": 2.0}


# stands in for Snakemake's script object (a test double): named input/output/params and log
FAKE_SNAKEMAKE_DRIVER = """
import json, runpy, sys
from types import SimpleNamespace
spec = json.loads(open(sys.argv[2]).read())
fake = SimpleNamespace(**{k: SimpleNamespace(**spec[k]) for k in ("input", "output", "params")},
                       log=[spec["log"]])
runpy.run_path(sys.argv[1], init_globals={"snakemake": fake})
"""


def run_adapter(tmp_path, script: str, inputs: dict, outputs: dict, params: dict) -> None:
    spec = {
        "input": inputs,
        "output": outputs,
        "params": params,
        "log": str(tmp_path / f"{script}.log"),
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "driver.py").write_text(FAKE_SNAKEMAKE_DRIVER)
    done = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "driver.py"),
            str(REPO / "workflow" / "scripts" / script),
            str(tmp_path / "spec.json"),
        ],
        env={"PYTHONPATH": str(REPO / "workflow" / "scripts"), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr + (tmp_path / f"{script}.log").read_text()


def test_search_alpha_adapter_writes_log_ratio_alpha(tmp_path):
    params, beta, _ = config_alpha("config/paper.yaml")
    write_parquet(planted_scores(300, 8, 0.023, beta), tmp_path / "scores.parquet")
    outputs = {
        k: str(tmp_path / f"{k}.{ext}")
        for k, ext in (("alpha", "json"), ("pairs", "parquet"), ("length_diffs", "parquet"))
    }
    run_adapter(
        tmp_path,
        "search_alpha.py",
        {"scores": str(tmp_path / "scores.parquet")},
        outputs,
        {"alpha": params, "ref_logps": None},
    )
    result = json.loads((tmp_path / "alpha.json").read_text())
    assert result["score"] == "logratio" and result["method"] == "exact"
    assert result["alpha"] == pytest.approx(0.023, rel=0.1)
    assert result["alpha_reward"] == pytest.approx(beta * result["alpha"])
    assert len(pd.read_parquet(outputs["pairs"])) == result["n_pairs"] == 300


def test_figure4_landscape_is_its_own_job_from_the_cached_scores(tmp_path):
    # the search writes no landscape: Figure 4's point count is no setting of the search
    params, beta, _ = config_alpha(".test/config.yaml")
    scores = planted_scores(300, 8, 0.05, beta)
    write_parquet(scores, tmp_path / "scores.parquet")
    out = run_search(scores, params)
    assert not hasattr(out, "landscape")
    write_json(out.result, tmp_path / "alpha.json")
    run_adapter(
        tmp_path,
        "alpha_landscape.py",
        {"scores": str(tmp_path / "scores.parquet"), "alpha": str(tmp_path / "alpha.json")},
        {"landscape": str(tmp_path / "landscape.parquet")},
        {"alpha": params, "points": 30},
    )
    land = pd.read_parquet(tmp_path / "landscape.parquet")
    assert len(land) == 30 and out.result["alpha_searched"] in land["alpha"].tolist()
    assert (land["alpha"].iloc[0], land["alpha"].iloc[-1]) == tuple(params["bounds"])
    at_star = land.loc[land["alpha"] == out.result["alpha_searched"], "objective"].iloc[0]
    assert at_star == pytest.approx(out.result["objective"])


# --- edge cases pinned for the mutation benchmark (benchmarks/mutation.py alpha) ----------------


def test_landscape_grid_places_points_by_the_hand_computed_density():
    # box [2, 4], centre 3: window [2.8, 3.2]; density 0.5 / 2 outside, 0.25 + 0.5 / 0.4 = 1.5
    # inside, so the cdf is 0, 0.2, 0.8, 1 at 2, 2.8, 3.2, 4: quantiles 0.25 / 0.75 fall inside
    grid = landscape_grid(2.0, 4.0, 3.0, 5)
    assert grid.tolist() == pytest.approx([2.0, 2.8 + 0.4 / 12, 3.0, 3.2 - 0.4 / 12, 4.0])
    # box [0, 2], centre 0.1: the window [-0.1, 0.3] is clipped to [0, 0.3]; density
    # 0.25 + 0.5 / 0.3 there, cdf 0.575 at 0.3; the point nearest 0.1 becomes 0.1
    grid = landscape_grid(0.0, 2.0, 0.1, 5)
    assert grid.tolist() == pytest.approx([0.0, 0.1, 0.5 / 0.575 * 0.3, 1.0, 2.0])
    # 201 points on [2, 4]: quantiles 0.2 ... 0.8 (121 of them) land in the window
    grid = landscape_grid(2.0, 4.0, 3.0, 201)
    assert ((grid >= 2.8 - 1e-12) & (grid <= 3.2 + 1e-12)).sum() == 121


def test_landscape_grid_with_few_points_or_an_empty_box_is_evenly_spaced():
    assert landscape_grid(0.0, 0.1, 0.023, 1).tolist() == [0.0]
    assert landscape_grid(0.0, 0.1, 0.023, 2).tolist() == [0.0, 0.1]  # centre replaces nothing
    # three points already follow the density: the middle quantile (0.0275) becomes alpha*
    assert landscape_grid(0.0, 0.1, 0.023, 3).tolist() == [0.0, 0.023, 0.1]
    assert landscape_grid(0.1, 0.1, 0.1, 5).tolist() == [0.1] * 5
    with pytest.raises(ValueError, match=r"^landscape points must be at least 1, got 0$"):
        landscape_grid(0.0, 0.1, 0.0, 0)


def test_figure4_landscape_names_its_source_in_errors():
    result = {"alpha_searched": None, "alpha": 0.05}
    broken = HAND.copy()
    broken.loc[4, "logratio"] = np.nan
    with pytest.raises(DatasetError, match=r"^<scores>: 1 of 9 implicit rewards"):
        figure4_landscape(broken, result, alpha_params(), points=5)
    with pytest.raises(DatasetError, match=r"^s\.parquet: 1 of 9 implicit rewards"):
        figure4_landscape(broken, result, alpha_params(), points=5, source="s.parquet")
    negative = HAND.copy()
    negative.loc[4, "len_chars"] = -1
    with pytest.raises(DatasetError, match=r"^s\.parquet: column 'len_chars' has negative"):
        figure4_landscape(negative, result, alpha_params(), points=5, source="s.parquet")


def test_figure4_landscape_follows_the_alpha_block_and_centres_on_the_used_alpha():
    params = alpha_params(length_unit="tokens", min_responses=3, fixed=0.05)
    result = {"alpha_searched": None, "alpha": 0.05}  # a fixed alpha: nothing was searched
    land = figure4_landscape(HAND, result, params, points=7)
    assert 0.05 in land["alpha"].tolist()
    expected = [objective(HAND, a, "tokens", min_responses=3) for a in land["alpha"]]
    assert land["objective"].tolist() == expected
    # with min_responses 2 and chars (b counts, other lengths) the values differ
    assert expected != [objective(HAND, a) for a in land["alpha"]]
    searched = figure4_landscape(HAND, {"alpha_searched": 0.03, "alpha": 0.06}, params, points=7)
    assert 0.03 in searched["alpha"].tolist() and 0.06 not in searched["alpha"].tolist()


def test_mixed_betas_message_lists_the_first_five():
    scores = make_scores([("a", k, float(k), 10 + k) for k in range(7)])
    scores["beta"] = [float(k + 1) for k in range(7)]
    with pytest.raises(DatasetError) as caught:
        run_search(scores, alpha_params(), source="s.parquet")
    fives = ", ".join(f"np.float64({k + 1}.0)" for k in range(5))
    assert str(caught.value) == (
        f"s.parquet: column 'beta' holds 7 distinct values ([{fives}]); one scoring run has one beta"
    )


def test_non_finite_implicit_rewards_are_refused_naming_rows_and_prompts():
    scores = HAND.copy()
    scores.loc[[4, 7], "logratio"] = [np.nan, np.inf]  # the reward column stays finite
    scores.loc[0, "reward"] = -np.inf
    with pytest.raises(DatasetError) as caught:
        run_search(scores, alpha_params(), source="s.parquet")
    assert str(caught.value) == (
        "s.parquet: 3 of 9 implicit rewards (logratio/reward) are NaN or infinite, at rows "
        "[0, 4, 7] (prompt ids ['c', 'a']): a NaN log-probability means a broken policy or "
        "reference model; rescore with working models"
    )


def _na_in_nullable_floats(scores):
    scores["logratio"] = scores["logratio"].astype("Float64")
    scores.loc[4, "logratio"] = pd.NA


def _unparsable_text(scores):
    scores["logratio"] = scores["logratio"].astype(object)
    scores.loc[4, "logratio"] = "n/a"


def _nan_without_prompt_ids(scores):
    scores.loc[4, "logratio"] = np.nan
    del scores["prompt_id"]


@pytest.mark.parametrize(
    "spoil,ids",
    [
        (_na_in_nullable_floats, "['a']"),
        (_unparsable_text, "['a']"),
        (_nan_without_prompt_ids, "[]"),
    ],
)
def test_missing_or_unparsable_implicit_rewards_are_refused(spoil, ids):
    scores = HAND.copy()
    spoil(scores)
    with pytest.raises(DatasetError) as caught:
        run_search(scores, alpha_params(), source="s.parquet")
    assert str(caught.value).startswith(
        f"s.parquet: 1 of 9 implicit rewards (logratio/reward) are NaN or infinite, at rows [4] "
        f"(prompt ids {ids}): "
    )


def test_run_search_result_on_the_hand_case_holds_every_figure():
    out = run_search(HAND, alpha_params())
    result = dict(out.result)
    assert isinstance(result.pop("seconds"), float)
    # pieces of (0, 0.2): (0, 0.05), (0.05, 0.1), (0.1, 0.2), plus lo: 4 evaluations; at 0.025
    # a: 20 - 10 and c: 50 - 10 (mean 25), at 0: a: 30 - 10 and c: 50 - 10 (mean 30)
    assert result == {
        "alpha": 0.025,
        "alpha_searched": 0.025,
        "objective": 50 / 3,
        "objective_alpha0": 20.0,
        "method": "exact",
        "n_prompts": 3,
        "n_evaluations": 4,
        "n_dropped": 1,
        "n_prompts_dropped": 1,
        "length_unit": "chars",
        "score": "logratio",
        "beta": BETA,
        "alpha_reward": BETA * 0.025,
        "scale": 1.0,
        "bounds": [0.0, 0.2],
        "zero_gap_in_bounds": True,
        "n_pairs": 2,
        "n_degenerate": 1,
        "mean_len_diff": 25.0,
        "mean_len_diff_alpha0": 30.0,
        "n_unrated": 0,
    }
    expected = pd.DataFrame(
        {
            "dataset": ["D(0)", "D(0)", "D(alpha*)", "D(alpha*)"],
            "prompt_id": ["a", "c", "a", "c"],
            "len_diff": np.array([20, 40, 10, 40], dtype="int64"),
        }
    )
    pd.testing.assert_frame_equal(out.length_diffs, expected, check_dtype=False)
    assert out.length_diffs["len_diff"].dtype == "int64"
    assert out.pairs["chosen_sample_idx"].tolist() == [2, 0]


def test_a_fixed_alpha_that_breaks_every_tie_of_d0_reports_nulls_not_nan():
    # at alpha = 0 both responses score 1.0 (D(0) is empty); at 0.01 the shorter one wins
    scores = make_scores([("a", 0, 1.0, 10), ("a", 1, 1.0, 20)])
    out = run_search(scores, alpha_params(fixed=0.01))
    assert out.result == {
        "method": "fixed",
        "alpha_searched": None,
        "alpha": 0.01,
        "score": "logratio",
        "beta": BETA,
        "alpha_reward": BETA * 0.01,
        "scale": 1.0,
        "bounds": [0.0, 0.2],
        "length_unit": "chars",
        "objective": 10.0,
        "objective_alpha0": 0.0,
        "zero_gap_in_bounds": True,  # the mean is 0 at lo
        "n_pairs": 1,
        "n_degenerate": 0,
        "n_prompts_dropped": 0,
        "mean_len_diff": -10.0,
        "mean_len_diff_alpha0": None,
        "n_unrated": 0,
    }
    assert out.length_diffs.to_dict("list") == {
        "dataset": ["D(alpha*)"],
        "prompt_id": ["a"],
        "len_diff": [-10],
    }


def test_no_preference_pair_at_all_is_refused_with_the_counts():
    scores = make_scores([("a", 0, 1.0, 10), ("a", 1, 1.0, 10), ("d", 0, 1.0, 5)])
    with pytest.raises(ValueError) as caught:
        run_search(scores, alpha_params(fixed=0.01))
    assert str(caught.value) == (
        "<scores>: no preference pair at alpha = 0.01: the responses of all 1 prompt(s) with at "
        "least 2 responses tie on the shaped 'logratio' (winner and loser score the same; 1 "
        "prompt(s) had too few responses), so D(alpha) would be empty. Check the scores: rewards "
        "that all tie usually mean identical policy and reference models, or identical responses"
    )


def test_a_box_that_keeps_the_sign_is_warned_about_unless_alpha_is_fixed(caplog):
    # HAND's mean length difference is 60 / 3 at 0 and 50 / 3 on (0, 0.05): one sign on [0, 0.04]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dicewf.alpha"):
        out = run_search(HAND, alpha_params(bounds=[0.0, 0.04]), source="s.parquet")
    assert out.result["zero_gap_in_bounds"] is False
    assert caplog.messages == [
        "s.parquet: the mean length difference is 20 at alpha = 0 and 16.67 at 0.04: it keeps "
        "its sign over the bounds, so alpha* may lie outside them"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dicewf.alpha"):
        fixed = run_search(HAND, alpha_params(bounds=[0.0, 0.04], fixed=0.03))
    assert fixed.result["zero_gap_in_bounds"] is False and caplog.messages == []


def test_unrated_judge_rows_are_logged_and_left_out(caplog):
    judged = HAND.drop(columns=["logratio", "beta"])
    judged.loc[[0, 3], "reward"] = np.nan  # c/0 and b/0
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dicewf.alpha"):
        out = run_search(judged, alpha_params(fixed=0.0), source="j.parquet")
    assert caplog.messages == ["j.parquet: 2 of 9 responses have no reward (unparsed rating)"]
    r = out.result
    # b and d have one rated response left; c's two left tie (degenerate): only a's pair is left
    assert (r["n_unrated"], r["n_pairs"], r["n_degenerate"], r["n_prompts_dropped"]) == (2, 1, 1, 2)
    assert out.pairs[["prompt_id", "chosen_sample_idx"]].values.tolist() == [["a", 1]]


def test_build_pairs_carries_the_reused_reference_log_probs_of_chosen_and_rejected():
    scores = HAND.copy()
    scores["ref_lp"] = -100.0 - scores["sample_idx"] - 10 * (scores["prompt_id"] == "c")
    pairs = build_pairs(scores, 0.0, ref_logps="ref_lp")
    # a: a/1 over a/0; c: c/0 over c/1 (see test_hand_case_pairs_follow_tie_rule)
    assert pairs["ref_chosen_logps"].tolist() == [-101.0, -110.0]
    assert pairs["ref_rejected_logps"].tolist() == [-100.0, -111.0]
    assert pairs["ref_chosen_tokens"].tolist() == [30 // 4, 50 // 4]
    assert pairs["ref_rejected_tokens"].tolist() == [10 // 4, 10 // 4]
    assert pairs["ref_chosen_logps"].dtype == "float64"
    assert pairs["ref_rejected_logps"].dtype == "float64"
    assert pairs["ref_chosen_tokens"].dtype == "int64"
    assert pairs["ref_rejected_tokens"].dtype == "int64"
    assert "ref_chosen_logps" not in build_pairs(scores, 0.0).columns
    with pytest.raises(DatasetError, match=r"^s\.parquet: missing column\(s\) \['ref_other'\]"):
        build_pairs(scores, 0.0, ref_logps="ref_other", source="s.parquet")
    scores["len_tokens"] = scores["len_tokens"] + 0.5
    with pytest.raises(DatasetError, match=r"^s\.parquet: column 'len_tokens' should hold int"):
        build_pairs(scores, 0.0, ref_logps="ref_lp", source="s.parquet")


def test_defaults_are_chars_logratio_two_responses_and_the_box_up_to_a_tenth():
    # at 0.03 on the log-ratio a: 20 - 10 and c: 50 - 10 (+50 over 3 prompts, b counting 0); on
    # the reward column (half the log-ratio) a: 20 - 30 and c: 10 - 50 (-50)
    assert landscape(HAND, [0.03])["mean_len_diff"].tolist() == [50 / 3]
    assert objective(HAND, 0.03) == 50 / 3
    pairs = build_pairs(HAND, 0.03)
    assert pairs.attrs == {
        "n_degenerate": 1,
        "n_dropped": 1,
        "length_unit": "chars",
        "score": "logratio",
    }
    assert pairs["chosen_sample_idx"].tolist() == [2, 0]
    exact = search_alpha(HAND)  # pieces (0, 0.05) and (0.05, 0.1), plus lo
    assert (exact.method, exact.alpha, exact.n_evaluations) == ("exact", 0.025, 3)
    assert (exact.length_unit, exact.score, exact.n_prompts) == ("chars", "logratio", 3)
    grid = search_alpha(HAND, "grid")  # 0, 0.001, ..., 0.1; at 0.05 c ties (10 / 3)
    assert (grid.n_evaluations, grid.alpha, grid.objective) == (101, 0.05, 10 / 3)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: objective(s, 0.0),
        lambda s: build_pairs(s, 0.0),
        lambda s: landscape(s, [0.0]),
        lambda s: search_alpha(s),
    ],
)
def test_bad_scores_are_named_with_the_default_source(call):
    negative = HAND.copy()
    negative.loc[[4, 7], "len_chars"] = [-1, -2]
    with pytest.raises(DatasetError) as caught:
        call(negative)
    assert str(caught.value) == "<scores>: column 'len_chars' has negative lengths at rows [4, 7]"
    repeated = pd.concat([HAND, HAND.iloc[[2, 5]]], ignore_index=True)
    with pytest.raises(DatasetError) as caught:
        call(repeated)
    assert str(caught.value) == "<scores>: repeated (prompt_id, sample_idx) at rows [9, 10]"
    with pytest.raises(DatasetError, match=r"^<scores>: column 'logratio' has NaN"):
        call(HAND.assign(logratio=np.nan))


def test_too_few_responses_everywhere_is_refused_with_the_counts():
    with pytest.raises(ValueError) as caught:
        objective(HAND, 0.0, min_responses=4, source="s.parquet")
    assert str(caught.value) == (
        "s.parquet: no prompt has at least 4 responses (4 prompt(s) dropped); cannot build "
        "preference pairs"
    )
    with pytest.raises(ValueError, match=r"^min_responses must be at least 1, got 0$"):
        eligible(HAND, min_responses=0)
    kept, dropped = eligible(HAND, min_responses=1)
    assert (len(kept), dropped) == (9, 0)


def test_judge_ratings_ignore_a_beta_column_and_leftover_index_columns():
    # judge scores with a leftover beta column and the "index" and "level_0" columns that two
    # reset_index() calls leave: ratings carry no beta, and the rows are renumbered in place
    judged = HAND.drop(columns=["logratio"]).assign(index=range(9), level_0=range(9))
    judged.loc[3, "reward"] = np.nan  # b/0: b is left with one response
    r = run_search(judged, alpha_params(fixed=0.0)).result
    assert (r["score"], r["beta"], r["alpha_reward"]) == ("reward", None, None)
    assert (r["n_unrated"], r["n_pairs"], r["n_prompts_dropped"]) == (1, 2, 2)


def test_run_search_passes_grid_step_n_calls_and_seed_on():
    grid = run_search(HAND, alpha_params(method="grid", grid_step=0.03)).result
    assert (grid["method"], grid["n_evaluations"], grid["alpha_searched"]) == ("grid", 7, 0.03)
    gp = run_search(HAND, alpha_params(method="gp", n_calls=2, seed=1)).result
    seeded = search_alpha(HAND, "gp", (0.0, 0.2), n_calls=2, seed=1)
    assert (gp["method"], gp["n_evaluations"], gp["alpha_searched"]) == ("gp", 2, seeded.alpha)
    assert search_alpha(HAND, "gp", (0.0, 0.2), n_calls=2, seed=0).alpha != seeded.alpha


def test_run_search_uses_the_blocks_length_unit_min_responses_and_ref_logps():
    # tokens (len_chars // 4), a: (1, 2) (2, 7) (2, 5), c: (3, 12) (1, 2) (1, 2); b dropped
    # (min 3): at 0 a: 7 - 2, c: 12 - 2; on (0, 0.2) a: 5 - 2 (the tie breaks), c: 12 - 2
    scores = HAND.assign(ref_lp=-1.0)
    params = alpha_params(length_unit="tokens", min_responses=3)
    out = run_search(scores, params, ref_logps="ref_lp")
    r = out.result
    assert (r["alpha_searched"], r["objective"], r["objective_alpha0"]) == (0.1, 6.5, 7.5)
    assert (r["n_prompts"], r["n_evaluations"], r["n_prompts_dropped"]) == (2, 2, 2)
    assert out.length_diffs["len_diff"].tolist() == [5, 10, 3, 10]
    assert out.pairs["ref_chosen_logps"].tolist() == [-1.0, -1.0]


def test_zero_gap_in_bounds_counts_a_zero_at_either_end_and_only_a_sign_change():
    # one prompt, crossing at 0.1: +10 below, 0 exactly at 0.1 (a tie), -10 above
    crossing = make_scores([("a", 0, 0.0, 10), ("a", 1, 1.0, 20)])
    assert run_search(crossing, alpha_params(bounds=[0.0, 0.1])).result["zero_gap_in_bounds"]
    # two prompts: a prefers its longer response by 1 up to alpha = 1, b's lengths are equal;
    # the mean is +0.5 at both ends of [0, 0.5] (a product of 0.25): no zero in between
    one_sign = make_scores(
        [("a", 0, 0.0, 10), ("a", 1, 1.0, 11), ("b", 0, 1.0, 5), ("b", 1, 0.0, 5)]
    )
    result = run_search(one_sign, alpha_params(bounds=[0.0, 0.5])).result
    assert result["zero_gap_in_bounds"] is False and result["mean_len_diff_alpha0"] == 0.5


def test_grid_reaches_hi_despite_rounding_and_evaluates_it_exactly():
    # the responses tie (objective 0) exactly at alpha = 3 / 10 = 0.3 and nowhere else; in
    # floating point 0.3 / 0.1 = 2.9999999999999996 and 0 + 3 * 0.1 = 0.30000000000000004
    scores = make_scores([("a", 0, 0.0, 10), ("a", 1, 3.0, 20)])
    result = search_alpha(scores, "grid", (0.0, 0.3), grid_step=0.1)
    assert (result.alpha, result.objective, result.n_evaluations) == (0.3, 0.0, 4)
    # on [0.2, 0.3]: 0.09999999999999998 / 0.05 = 1.9999999999999996, yet 3 points
    result = search_alpha(scores, "grid", (0.2, 0.3), grid_step=0.05)
    assert (result.alpha, result.objective, result.n_evaluations) == (0.3, 0.0, 3)
    with pytest.raises(ValueError, match=r"^grid_step must be positive, got -0.1$"):
        search_alpha(scores, "grid", (0.0, 0.3), grid_step=-0.1)


def test_gp_search_hands_the_box_budget_and_seed_to_skopt(monkeypatch):
    import warnings

    import skopt

    calls = {}

    def fake_gp_minimize(func, dimensions, **kwargs):
        calls.update(kwargs, dimensions=dimensions, value=func([0.075]))
        warnings.warn("The objective has been evaluated at point [0.075] before", UserWarning)
        warnings.warn("the GP fit did not converge", UserWarning)
        return SimpleNamespace(x=[0.075], fun=calls["value"], func_vals=[1.0, 2.0, 3.0])

    monkeypatch.setattr(skopt, "gp_minimize", fake_gp_minimize)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = search_alpha(HAND, "gp", (0.0, 0.2), n_calls=12, seed=7)
    # skopt's repeated-point warning is silenced, other warnings are not
    assert [str(w.message) for w in caught] == ["the GP fit did not converge"]
    assert calls == {
        "dimensions": [(0.0, 0.2)],
        "n_calls": 12,
        "n_initial_points": 10,
        "random_state": 7,
        "value": objective(HAND, 0.075),
    }
    assert (result.alpha, result.objective, result.n_evaluations) == (0.075, 50 / 3, 3)
    with pytest.warns(UserWarning, match="did not converge"):
        search_alpha(HAND, "gp", (0.0, 0.2), n_calls=4)
    assert (calls["n_calls"], calls["n_initial_points"], calls["random_state"]) == (4, 4, 0)
    with pytest.warns(UserWarning, match="did not converge"):
        search_alpha(HAND, "gp")  # the defaults: 30 calls on [0, 0.1]
    assert (calls["n_calls"], calls["n_initial_points"], calls["dimensions"]) == (
        30,
        10,
        [(0.0, 0.1)],
    )


def test_landscape_of_integer_alphas_is_a_float_column():
    frame = landscape(HAND, [0, 1])
    assert frame["alpha"].dtype == "float64" and frame["alpha"].tolist() == [0.0, 1.0]
    assert frame["mean_len_diff"].tolist() == [20.0, -20.0]  # 60 / 3 and -60 / 3


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("bounds", [(1.0, 3.0), (0.05, 0.4)])
def test_exact_matches_brute_force_on_boxes_away_from_zero(seed, bounds):
    scores = random_tied_scores(seed + 10, n_prompts=20)
    result = search_alpha(scores, "exact", bounds=bounds)
    alpha, value = brute_force(scores, *bounds)
    assert (result.alpha, result.objective) == pytest.approx((alpha, value), abs=1e-12)


def test_exact_follows_every_winner_change_of_the_widest_prompt():
    # a's winner falls 40 -> 30 -> 20 -> 10 at 0.1, 0.2, 0.3 (all four lines on the envelope)
    # and its loser rises 10 -> 40 at 0.2; b is +26 throughout: sums 56, 46, 6, -4 on the
    # pieces of (0, 0.4), so alpha* is the midpoint of the last piece
    lines = {"a": [(6.0, 40), (5.0, 30), (3.0, 20), (0.0, 10)], "b": [(20.0, 36), (0.0, 10)]}
    scores = make_scores(
        [(p, k, r, length) for p, rows in lines.items() for k, (r, length) in enumerate(rows)]
    )
    result = search_alpha(scores, bounds=(0.0, 0.4))
    assert (result.alpha, result.objective, result.n_evaluations) == (0.35, 2.0, 5)


def test_exact_search_raises_no_floating_point_warning():
    import warnings

    scores = random_tied_scores(1)  # equal lengths and repeated lines: 0 / 0 and x / 0 inside
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = search_alpha(scores, bounds=(0.0, 2.0))
    assert result.objective == pytest.approx(brute_force(scores, 0.0, 2.0)[1], abs=1e-12)


def test_a_crossing_that_rounds_onto_lo_is_no_breakpoint():
    # a's lines cross at (0.4 - 0) / (5 - 1) = 0.1 = lo exactly, yet in floating point at 0.1
    # the longer one still scores higher (-0.09999999999999998 > -0.1): at lo a counts +4, just
    # above it -4; b counts +2 throughout. lo gives (4 + 2) / 2 = 3, (0.1, 0.5) gives 1.
    scores = make_scores([("a", 0, 0.0, 1), ("a", 1, 0.4, 5), ("b", 0, 2.0, 12), ("b", 1, 0.0, 10)])
    assert (objective(scores, 0.1), objective(scores, 0.3)) == (3.0, 1.0)
    result = search_alpha(scores, bounds=(0.1, 0.5))
    assert (result.alpha, result.objective, result.n_evaluations) == (0.3, 1.0, 2)


@pytest.mark.parametrize("method", ["exact", "grid", "gp"])
def test_an_empty_box_is_one_evaluation_at_lo(method):
    result = search_alpha(HAND, method, bounds=(0.05, 0.05))  # at 0.05 c's responses tie
    assert (result.alpha, result.objective, result.n_evaluations) == (0.05, 10 / 3, 1)
    assert result.method == method


def test_search_seconds_lie_within_the_call():
    import time

    before = time.perf_counter()
    result = search_alpha(HAND, bounds=(0.0, 0.2))
    assert 0.0 <= result.seconds <= time.perf_counter() - before


def test_eligible_names_the_default_source():
    with pytest.raises(DatasetError, match=r"^<scores>: missing column\(s\) \['prompt_id'\]"):
        eligible(pd.DataFrame({"sample_idx": [0, 1]}))


def test_an_empty_response_of_length_zero_is_allowed():
    scores = make_scores([("a", 0, 1.0, 0), ("a", 1, 0.0, 10)])
    assert objective(scores, 0.0) == 10.0  # the empty response wins: 0 - 10
    assert build_pairs(scores, 0.0)["len_diff"].tolist() == [-10]


def test_a_prompt_id_with_two_prompt_texts_is_refused():
    scores = HAND.copy()
    scores.loc[4, "prompt"] = "another prompt"  # a/0
    with pytest.raises(DatasetError, match=r"^s\.parquet: 1 prompt_id value\(s\) carry more"):
        objective(scores, 0.0, source="s.parquet")


def test_bad_rows_are_named_up_to_five_and_repeats_go_by_prompt_and_sample_only():
    scores = make_scores([("a", k, float(k), 10 + k) for k in range(8)])
    negative = scores.assign(len_chars=-1)
    with pytest.raises(DatasetError) as caught:
        objective(negative, 0.0, source="s.parquet")
    assert str(caught.value) == (
        "s.parquet: column 'len_chars' has negative lengths at rows [0, 1, 2, 3, 4]"
    )
    repeated = pd.concat([scores, scores.assign(response="other")], ignore_index=True)
    with pytest.raises(DatasetError) as caught:
        objective(repeated, 0.0, source="s.parquet")
    assert str(caught.value) == (
        "s.parquet: repeated (prompt_id, sample_idx) at rows [8, 9, 10, 11, 12]"
    )
