"""Train (or take from the machine cache) the scan-validation adapters (issue 14): the
scanner's trait and control adapters and the held-out teachers.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/scanval/train_adapters.py \\
        "owl:0;dolphin:0;eagle:0;elephant:0;wolf:0;cat:0;neutral:1;neutral:2;eagle:1;..."

JOB = animal:seed (or neutral:seed for a control); writes runs/scanval/adapters/NAME-sSEED
(run from the repository root). Moved here unchanged in behaviour from
runs/scanval/train_adapters.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from subliminal.injections.adapter import trait_adapter
from subliminal.trait import CATALOGUE

M = "smollm2-135m"
ROOT = Path("runs/scanval/adapters")


def main(spec: str) -> None:
    torch.set_num_threads(1)
    for job in spec.split(";"):
        name, seed_s = job.split(":")
        seed = int(seed_s)
        t = time.time()
        neutral = name == "neutral"
        tr = CATALOGUE["owl" if neutral else name]
        p = trait_adapter(M, tr, ROOT / f"{name}-s{seed}", seed=seed, neutral=neutral)
        print(name, seed, p, f"{time.time() - t:.0f}s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
