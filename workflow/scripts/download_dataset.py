"""Snakemake adapter: download a hub dataset (hf://datasets/ORG/NAME[@REV]) into
resources/hub/datasets/."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import hub, logs

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
hub.download(
    snakemake.params.spec,
    snakemake.output.snapshot,
    allow_patterns=snakemake.params.get("allow_patterns"),
)
