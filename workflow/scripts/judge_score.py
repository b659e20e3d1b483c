"""Snakemake adapter: the policy judges its own sampled responses (LLM-as-a-Judge baseline)."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import jobs, llm_judge, logs
from dicewf.io import read_parquet, write_parquet

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
jobs.set_threads(snakemake.threads)  # torch's pool: the job's threads, logged
source = snakemake.input.samples
scores = llm_judge.judge(
    snakemake.input.policy,
    read_parquet(source, "samples"),
    # the template file is an input: a changed template reruns the job
    llm_judge.load_template(snakemake.input.template),
    snakemake.params.sampling,
    min_ratings=snakemake.params.min_ratings,
    max_prompt_tokens=snakemake.params.max_prompt_tokens,
    backend=snakemake.params.backend,
    engine=snakemake.params.engine,
    source=source,
    # drop_truncated, strip_whitespace, min_chars, max_chars (the score block's response filters)
    **snakemake.params.filters,
)
write_parquet(scores, snakemake.output.scores)
jobs.exit_now()  # outputs written: skip the interpreter's teardown of torch and vLLM
