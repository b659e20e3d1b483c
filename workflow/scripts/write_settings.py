"""Snakemake adapter of the rules that write a block of settings to a file (dicewf.io.
write_settings): experiment_config (an experiment's resolved config, YAML) and train_args (the
train block that train_launch.py reads, JSON). A `script:` job is one short Python process; a
`run:` block would be run by a whole Snakemake process that parses the workflow again."""

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from pathlib import Path
from typing import TYPE_CHECKING

from dicewf.io import write_settings

if TYPE_CHECKING:
    from snakemake.script import snakemake

line = write_settings(snakemake.params.settings, snakemake.output[0])
Path(snakemake.log[0]).write_text(line)
