"""The training entry point of the `train` and `toy_start_policy` rules (:mod:`dicewf.launch`).

The `train` rule runs it as one process where the job has at most one GPU (``--cpu`` where it
has none), and on every process of an `accelerate launch` where it has more
(:func:`dicewf.jobs.train_launcher` picks):

    python workflow/scripts/train_launch.py --config results/<exp>/iter<t>/train_args.json \\
        --model ... --pairs ... --ref ... --out ... --metrics ... --seed ... --threads 2 \\
        --trainer dpo
    accelerate launch --config_file workflow/accelerate/<name>.yaml --num_processes <gpus> \\
        workflow/scripts/train_launch.py --config ... (the same arguments)

with the TRL config fields (and ``global_batch_size``) in the ``--config`` file, parsed by TRL's
``TrlParser`` as in TRL's and alignment-handbook's scripts. The `toy_start_policy` rule runs it
as its `script:`, handing over its training block as that file would be read.
"""

import sys
from pathlib import Path

# `dicewf` lives next to this file; `accelerate launch` runs it as a plain file, not as a module
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dicewf.forkserver import handoff

handoff()  # a local run's warm start (dicewf.forkserver); returns at once in a Slurm job

from dicewf.jobs import exit_now
from dicewf.launch import main
from dicewf.training import launched_processes

if __name__ == "__main__":
    if "snakemake" in globals():  # Snakemake's script: (toy_start_policy)
        smk = globals()["snakemake"]
        main(
            [
                "--model",
                smk.input.model,
                "--pairs",
                smk.input.pairs,
                "--out",
                smk.output.model,
                "--metrics",
                smk.output.metrics,
                "--seed",
                str(smk.params.seed),
                "--log",
                smk.log[0],
                "--threads",
                str(smk.threads),
            ],
            config=smk.params.args,
        )
    else:  # the train rule's `python` or `accelerate launch` command
        main()
        if launched_processes() == 1:  # one process, no distributed state: skip the teardown
            exit_now()
