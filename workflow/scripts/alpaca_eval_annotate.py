"""Snakemake adapter: AlpacaEval 2 annotation of a model's responses (LC and raw win rates).

Expected rule shape::

    input:  responses=".../responses.parquet",      # samples schema, one response per prompt
            eval_set=".../alpaca_eval.parquet"       # prompt_id, prompt, reference,
                                                      # reference_generator, dataset
    output: metrics=".../alpaca_eval/metrics.json",
            annotations=directory(".../alpaca_eval/annotations")  # the package's files
    params: annotator={...},  # dicewf.alpacaeval.ANNOTATOR_KEYS; the key comes from api_key_env
            model_name="..."
"""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import alpacaeval, logs
from dicewf.io import read_parquet, write_json

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
responses = read_parquet(snakemake.input.responses, "samples")
eval_set = read_parquet(snakemake.input.eval_set, alpacaeval.EVAL_SET_COLUMNS)
metrics = alpacaeval.annotate(
    responses,
    eval_set,
    model_name=snakemake.params.model_name,
    annotator=dict(snakemake.params.annotator),
    out_dir=snakemake.output.annotations,
)
metrics["responses"] = snakemake.input.responses
write_json(metrics, snakemake.output.metrics)
print(metrics)
