"""dicewf.jobtimes: per-rule times and the critical path of a run from Snakemake's records."""

import base64
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from dicewf import jobtimes

REPO = Path(__file__).resolve().parents[1]


def _record(metadata: Path, output: str, **rec) -> None:
    path = metadata / base64.urlsafe_b64encode(output.encode()).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))


def _job(rule, outputs, inputs, start, end, h):
    return {
        o: dict(rule=rule, input=inputs, starttime=start, endtime=end, job_hash=h) for o in outputs
    }


def test_records_grouped_into_jobs_by_hash_and_times_summed_per_rule(tmp_path):
    md = tmp_path / "metadata"
    recs = {
        **_job("a", ["a.txt"], [], 0.0, 1.0, 1),
        **_job("b", ["b.txt", "b2.txt"], ["a.txt"], 1.0, 4.0, 2),
        **_job("b", ["b3.txt"], ["a.txt"], 1.0, 2.0, 3),
        **_job("c", ["c.txt"], ["b.txt", "b3.txt"], 4.0, 4.5, 4),
    }
    for out, rec in recs.items():
        _record(md, out, **rec)
    _record(md, "half.txt", rule="d", input=[], starttime=5.0, endtime=None, incomplete=True)
    jobs = jobtimes.jobs_from_records(jobtimes.read_records(md))
    assert [(j.rule, j.outputs) for j in jobs] == [
        ("a", ("a.txt",)),
        ("b", ("b.txt", "b2.txt")),
        ("b", ("b3.txt",)),
        ("c", ("c.txt",)),
    ]
    rules = {r.rule: r for r in jobtimes.per_rule(jobs)}
    assert (rules["b"].jobs, rules["b"].total, rules["b"].mean, rules["b"].max) == (
        2,
        4.0,
        2.0,
        3.0,
    )
    assert [r.rule for r in jobtimes.per_rule(jobs)] == ["b", "a", "c"]  # largest sum first


def test_critical_path_is_the_longest_chain_not_the_longest_job():
    J = jobtimes.Job
    jobs = [
        J("a", ("a",), (), 0, 2),  # 2
        J("long", ("l",), (), 0, 5),  # 5, alone
        J("b", ("b",), ("a",), 2, 4),  # a -> b: 4
        J("c", ("out/c",), ("b",), 4, 6),  # a -> b -> c: 6 > 5
        J("d", ("d",), ("out/c/part.parquet", "l"), 6, 6.5),  # inside c's folder, and after long
    ]
    path = jobtimes.critical_path(jobs)
    assert [j.rule for j in path] == ["a", "b", "c", "d"]
    run = jobtimes.summary(jobs)
    assert run["critical_path_s"] == pytest.approx(6.5)
    assert run["wall_s"] == pytest.approx(6.5)
    assert run["job_time_s"] == pytest.approx(11.5)


def test_a_file_that_is_no_record_is_refused_naming_it(tmp_path):
    md = tmp_path / "metadata"
    md.mkdir()
    (md / "not base64!").write_text("{}")
    with pytest.raises(ValueError, match="not base64!"):
        jobtimes.read_records(md)
    with pytest.raises(FileNotFoundError, match="no Snakemake metadata"):
        jobtimes.read_records(tmp_path / "missing")


@pytest.mark.slow  # starts Snakemake
def test_the_benchmark_reads_a_real_snakemake_run(tmp_path):
    (tmp_path / "Snakefile").write_text(
        textwrap.dedent(
            """
            rule all:
                input: "c.txt"
            rule a:
                output: "a.txt"
                shell: "sleep 0.3; echo a > {output}"
            rule b:
                input: "a.txt"
                output: directory("b")
                shell: "sleep 0.6; mkdir -p {output}; touch {output}/x"
            rule c:
                input: "a.txt", "b"
                output: "c.txt"
                localrule: True
                shell: "sleep 0.2; touch {output}"
            """
        )
    )
    subprocess.run(
        [sys.executable, "-m", "snakemake", "-c1", "-q"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "time_per_rule.py"), "--out", "t.json"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    run = json.loads((tmp_path / "t.json").read_text())
    assert run["jobs"] == 3  # a, b (a directory) and the local job c; `all` writes nothing
    assert [s["rule"] for s in run["critical_path"]][:3] == ["a", "b", "c"]
    assert run["per_rule"][0]["rule"] == "b"
    assert "critical path" in out


def test_a_job_whose_end_is_recorded_before_its_start_took_no_time():
    job = jobtimes.Job("train_args", ("a.json",), (), 10.0, 9.99999)
    assert job.seconds == 0.0


def test_the_replicates_cost_is_the_time_of_their_jobs_alone():
    def job(output, seconds):
        return jobtimes.Job("train", (output,), (), 0.0, seconds)

    jobs = [
        job("results/dice/iter1/policy", 10.0),
        job("results/dice_rep2/iter1/policy", 20.0),
        job("results/eval/dice_rep3-iter2/metrics.json", 5.0),
        job("results/benchmarks/offline_dpo_rep2/iter1/train.tsv", 5.0),
        job("results/toy/models/sft", 40.0),  # shared by every replicate
        job("results/dice_report/iter1/policy", 20.0),  # a name that only starts like one
    ]
    assert [jobtimes.replicate_of(j) for j in jobs] == [1, 2, 3, 2, 1, 1]
    assert jobtimes.replicate_cost(jobs) == {
        "jobs": 3,
        "job_time_s": 30.0,
        "share": 0.3,
        "replicates": [2, 3],
    }
    assert jobtimes.summary(jobs)["replicates"]["jobs"] == 3


def test_a_targets_cost_counts_the_jobs_upstream_of_it_once_and_no_other():
    J = jobtimes.Job
    jobs = [
        J("world", ("w",), (), 0, 1),  # 1, shared by both tables
        J("train", ("out/m",), ("w",), 1, 5),  # 4
        J("other", ("o",), ("w",), 1, 3),  # 2: the second table's alone
        J("eval", ("e",), ("out/m/weights.safetensors",), 5, 6),  # 1, reads inside m's folder
        J("table1", ("t1",), ("e", "w"), 6, 6.5),  # 0.5
        J("table2", ("t2",), ("o",), 3, 3.5),  # 0.5
    ]
    assert [j.rule for j in jobtimes.upstream(jobs, ["t1"])] == [
        "world",
        "train",
        "eval",
        "table1",
    ]
    one = jobtimes.target_cost(jobs, ["t1"], cores=2)
    assert one["jobs"] == 4
    assert one["job_time_s"] == pytest.approx(6.5)
    assert one["critical_path_s"] == pytest.approx(6.5)  # a chain: more cores do not help
    assert one["least_wall_s"] == pytest.approx(6.5)
    both = jobtimes.target_cost(jobs, ["t1", "t2", "t1/"], cores=2)  # the world counted once
    assert (both["jobs"], both["job_time_s"]) == (6, pytest.approx(9.0))
    assert both["least_wall_s"] == pytest.approx(6.5)
    assert jobtimes.target_cost(jobs, ["t1", "t2"], cores=1)["least_wall_s"] == pytest.approx(9.0)
    with pytest.raises(ValueError, match="nothing.csv: no finished job"):
        jobtimes.upstream(jobs, ["t1", "nothing.csv"])
    with pytest.raises(ValueError, match="cores must be at least 1"):
        jobtimes.target_cost(jobs, ["t1"], cores=0)
