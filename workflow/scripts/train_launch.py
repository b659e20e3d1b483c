"""Command-line DPO/KTO training for `accelerate launch` (the `train` rule's multi-GPU entry point).

Snakemake's `script:` runs one process, so the `train` rule runs

    accelerate launch --config_file workflow/accelerate/<name>.yaml --num_processes <gpus> \\
        workflow/scripts/train_launch.py --model ... --pairs ... --out ... \\
        --args results/<exp>/iter<t>/train_args.json

Every process runs this file and calls :func:`dicewf.training.train_dpo`; only the main process
writes the outputs and the log lines of this script. Plain `python train_launch.py ...` is one
process. ``--args`` holds literal TRL config fields (``DPOConfig``, or ``KTOConfig`` with
``--trainer kto``), as a JSON string or the path of a JSON/YAML file (the rule passes the file
that its ``train_args`` job writes, so no hyperparameter is on the recorded command line; a
secret is refused, :mod:`dicewf.secrets`); ``save_steps: N`` turns on
resumable checkpoints in ``<out>.checkpoints/`` (``--checkpoint-dir`` overrides the folder).
``--length-penalty LAMBDA`` (> 0) trains length-regularised DPO (``loss_type`` sigmoid only).
``global_batch_size`` in ``--args`` (ours, not TRL's) sets ``gradient_accumulation_steps`` from
the number of launched processes (WORLD_SIZE); see :mod:`dicewf.batching`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

# `dicewf` lives next to this file; `accelerate launch` runs it as a plain file, not as a module
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dicewf import logs, model_files  # noqa: E402
from dicewf.io import read_parquet  # noqa: E402
from dicewf.training import TRAINERS  # noqa: E402  (imports neither torch nor TRL)


def load_args(value: str) -> dict[str, Any]:
    """TRL config fields from a JSON string, or from a JSON/YAML file when ``value`` is a path."""
    if os.path.isfile(value):
        import yaml

        # JSON through json: YAML 1.1 reads a float such as 5e-07 (no dot) as a string
        with open(value) as f:
            args = json.load(f) if value.endswith(".json") else yaml.safe_load(f)
        where = value
    else:
        try:
            args = json.loads(value)
        except json.JSONDecodeError as e:
            raise SystemExit(f"--args: neither a file nor valid JSON ({e}): {value!r}") from e
        where = "--args"
    if not isinstance(args, dict):
        raise SystemExit(
            f"{where}: expected a mapping of TRL config fields, got {type(args).__name__}"
        )
    return args


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--model", required=True, help="policy to train (folder or hub ID)")
    p.add_argument("--pairs", required=True,
                   help="preference pairs (parquet: prompt_id, prompt, chosen, rejected)")
    p.add_argument("--out", required=True, help="output model folder (written atomically)")
    p.add_argument("--metrics", help="training metrics JSON (log history and final values)")
    p.add_argument("--args", required=True, type=load_args,
                   help="DPOConfig (KTOConfig with --trainer kto) fields: a JSON string or a "
                        "JSON/YAML file")
    p.add_argument("--trainer", choices=TRAINERS, default="dpo",
                   help="dpo: TRL DPOTrainer, any loss_type (sigmoid, ipo, hinge, ...); kto: TRL "
                        "KTOTrainer on the unpaired pairs (default: %(default)s)")
    p.add_argument("--length-penalty", type=float, default=0.0, metavar="LAMBDA",
                   help="length-regularised DPO (Park et al. 2024): lambda per response token in "
                        "the DPO margin; 0 is plain DPO (default: %(default)s)")
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--ref", help="reference model (default: a frozen copy of --model)")
    p.add_argument("--checkpoint-dir",
                   help="resumable checkpoints (default: <out>.checkpoints next to --out)")
    p.add_argument("--log", help="log file of the main process (default: stderr)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    opts = parse(argv)
    # the launchers (torchrun, deepspeed) set RANK; a plain `python` run is rank 0
    main_process = os.environ.get("RANK", "0") == "0"
    if opts.log and main_process:
        logs.to_file(opts.log)
    else:
        logging.basicConfig(
            stream=sys.stderr, level=logging.INFO if main_process else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    from dicewf.training import train_dpo

    for role, path in (("--model", opts.model), ("--ref", opts.ref)):  # a model in each folder
        model_files.model_dir(path, f"{role} of train_launch.py")
    pairs = read_parquet(opts.pairs, "pairs")
    train_dpo(opts.model, pairs, opts.out, opts.args, seed=opts.seed, ref=opts.ref,
              metrics_path=opts.metrics, source=opts.pairs, checkpoint_dir=opts.checkpoint_dir,
              trainer=opts.trainer, length_penalty=opts.length_penalty)


if __name__ == "__main__":
    main()
