"""Snakemake adapter: download a hub model (hf://ORG/NAME[@REV]) into resources/hub/."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from typing import TYPE_CHECKING

from dicewf import hub, logs

if TYPE_CHECKING:
    from snakemake.script import snakemake

logs.to_file(snakemake.log[0])
hub.download(snakemake.params.spec, snakemake.output.model)
