"""Test doubles for AlpacaEval 2's hub data, shared by the unit tests and the workflow test.

``write_fake_lc_cache`` lays out a Hugging Face cache folder holding a made-up
``df_gamed.csv`` of ``tatsu-lab/alpaca_eval`` (the data of the length-controlled GLM), so that
the LC win rate is computed without any download.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def write_fake_lc_cache(root: Path, n: int) -> Path:
    """A Hugging Face cache at ``root`` holding a test double of tatsu-lab/alpaca_eval's
    df_gamed.csv for ``n`` instructions; returns ``root``.

    Rows: for each instruction, a "verbose" and a "concise" variant of the baseline compared with
    the baseline (not_gamed_baseline False); the verbose one wins with probability 0.8, the
    concise one with 0.2, so the double encodes a judge that likes length, as the real file does.
    """
    repo = root / "datasets--tatsu-lab--alpaca_eval"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    difficulty = np.random.default_rng(0).normal(size=n)
    rows = [
        {
            "model": f"gamed_{kind}",
            "index": i,
            "preference": p,
            "std_delta_len": d,
            "instruction_difficulty": difficulty[i],
            "not_gamed_baseline": False,
        }
        for kind, p, d in (("verbose", 0.8, -1.0), ("concise", 0.2, 1.0))
        for i in range(n)
    ]
    pd.DataFrame(rows).to_csv(snapshot / "df_gamed.csv", index=False)
    return root
