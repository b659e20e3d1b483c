"""Snakemake adapter: one model on one SeRA benchmark, judged (dicewf.sera_eval.evaluate).

Expected rule shape::

    input:  questions=".../sera/{bench}.parquet", responses=".../responses.parquet",
            sft=".../{setting}_sft/.../responses.parquet"   # absent for an SFT model
    output: judgments=..., metrics=..., judge_cache=...
    params: bench=..., judge={...} (dicewf.judge_client.ChatClient arguments), both_orders=...
"""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import logs, sera_eval
from dicewf.io import read_parquet, write_json, write_parquet
from dicewf.judge_client import finish_job, job_client

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
questions = read_parquet(snakemake.input.questions, "prompts")
responses = read_parquet(snakemake.input.responses, "samples")
sft = read_parquet(snakemake.input.sft, "samples") if "sft" in snakemake.input.keys() else None
client = job_client(snakemake.params.judge, snakemake.output.judge_cache)
judgments, metrics = sera_eval.evaluate(
    snakemake.params.bench,
    questions,
    responses,
    client,
    sft=sft,
    both_orders=snakemake.params.both_orders,
)
metrics |= {"judge": client.name, "responses": snakemake.input.responses}
write_parquet(judgments, snakemake.output.judgments)
write_json(metrics, snakemake.output.metrics)
finish_job(client, snakemake.output.judge_cache)
print(metrics)
