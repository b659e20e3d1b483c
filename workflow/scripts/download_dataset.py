"""Snakemake adapter: download a hub dataset (hf://datasets/ORG/NAME[@REV]) into
resources/hub/datasets/."""

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
