"""Snakemake adapter: Arena-Hard judging against the baseline answers, score with a 95 % CI.

Expected rule shape::

    input:  responses=".../responses.parquet",   # samples schema, one response per question
            questions=".../arena_hard.parquet"    # prompt_id, prompt, reference (gpt-4-0314)
    output: judgments=".../arena_hard/judgments.parquet",
            metrics=".../arena_hard/metrics.json",
            judge_cache=".../arena_hard/judge_cache.jsonl"   # the replies (written at the end;
                                  # judge_cache.partial.jsonl beside it while the job runs)
    params: judge={...},        # dicewf.judge_client.ChatClient arguments (base_url, model,
                                # api_key_env, max_tokens, concurrency, timeout, budget_s, ...)
            n_bootstrap=100, seed=0,
            prompt={}           # optional: system_prompt, prompt_template, follow_ups
"""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import arena, logs
from dicewf.io import read_parquet, write_json, write_parquet
from dicewf.judge_client import finish_job, job_client

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
responses = read_parquet(snakemake.input.responses, "samples")
questions = read_parquet(snakemake.input.questions, "eval_prompts")
client = job_client(snakemake.params.judge, snakemake.output.judge_cache)
judgments, metrics = arena.judge_and_score(
    questions,
    responses,
    client,
    judge_kwargs=dict(snakemake.params.get("prompt") or {}),
    n_bootstrap=snakemake.params.n_bootstrap,
    seed=snakemake.params.seed,
)
metrics["responses"] = snakemake.input.responses
write_parquet(judgments, snakemake.output.judgments)
write_json(metrics, snakemake.output.metrics)
finish_job(client, snakemake.output.judge_cache)
print(metrics)
