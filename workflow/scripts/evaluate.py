"""Snakemake adapter: generate on held-out prompts, judge them against the references with the
gold judge and score both toy benchmarks (dicewf.toyeval.evaluate)."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import jobs, logs, toyeval, toyworld
from dicewf.io import read_parquet, write_json, write_parquet
from dicewf.sampling import sample

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
jobs.set_threads(snakemake.threads)  # torch's pool: the job's threads, logged
params, source = snakemake.params, snakemake.input.prompts
prompts = read_parquet(source, "eval_prompts")
samples = sample(
    snakemake.input.policy,
    prompts[["prompt_id", "prompt"]],
    params.sampling,
    backend=params.backend,
    engine=params.engine,
    source=source,
)
responses, judged, metrics = toyeval.evaluate(
    prompts,
    samples,
    toyworld.JudgeSpec.from_dict(params.judge),
    l2=params.l2,
    n_bootstrap=params.arena["n_bootstrap"],
    seed=params.arena["seed"],
    policy=snakemake.input.policy,
    intervals=params.intervals,
)
write_parquet(responses, snakemake.output.responses)
write_parquet(judged, snakemake.output.judgements)
write_json(metrics, snakemake.output.metrics)
print(metrics)
jobs.exit_now()  # outputs written: skip the interpreter's teardown of torch and vLLM
