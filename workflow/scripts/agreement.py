"""Snakemake adapter: Table 5's agreement rates of the IntlRM, any published reward models
(ERM) and the implicit reward (dicewf.agreement.table5), on tuples labelled by the gold judge or
an OpenAI-compatible one."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from functools import partial
from typing import TYPE_CHECKING

from dicewf import agreement, jobs, logs, toyworld
from dicewf.io import read_parquet, write_json, write_parquet
from dicewf.reward_model import external_reward_scores, reward_scores

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
jobs.set_threads(snakemake.threads)  # torch's pool: the job's threads, logged
params, source = snakemake.params, snakemake.input.scores
tuples = agreement.sample_tuples(read_parquet(source, "rewards"), params.n, params.seed, source)
if params.judge == "gold":
    tasks = toyworld.tasks_from_frame(read_parquet(snakemake.input.tasks))
    labels = agreement.gold_labels(tuples, tasks, toyworld.JudgeSpec.from_dict(params.gold_judge))
    judge_name = "gold judge (toy world)"
else:
    from dicewf.judge_client import finish_job, job_client

    client = job_client(params.judge, snakemake.output.judge_cache)
    labels = agreement.judge_labels(tuples, client)
    judge_name = params.judge["model"]
    agreement.check_labelled(labels, f"{client.name} (replies in {client.cache_path})")
batch = params.max_tokens_per_batch
external = snakemake.input.get("external", [])
external = [external] if isinstance(external, str) else list(external)
tuples, result = agreement.table5(
    tuples,
    labels,
    partial(reward_scores, snakemake.input.reward_model, max_tokens_per_batch=batch),
    [
        (
            spec["label"],
            partial(
                external_reward_scores,
                path,
                head=spec["head"],
                max_tokens_per_batch=batch,
                source=source,
            ),
        )
        for path, spec in zip(external, params.external, strict=True)
    ],
    judge=judge_name,
    setting=params.setting,
)
write_parquet(tuples, snakemake.output.tuples)
write_json(result, snakemake.output.agreement)
if params.judge != "gold":
    finish_job(client, snakemake.output.judge_cache)
print(result)
