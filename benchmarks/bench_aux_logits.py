"""Vectorised seeds against the same seeds one after another, for `reproduce aux-logits`.

    python benchmarks/bench_aux_logits.py            # the default config (~8 min on 2 cores)
    python benchmarks/bench_aux_logits.py --quick    # a cut-down config (~15 s)
    python benchmarks/bench_aux_logits.py --quick --repeats 3   # alternate sides, median ratio

Both sides run the same function, `experiment`, with the same config: once with all seeds
stacked into one model, then once per seed (a stack of one). Same machine, same process, one
run each. Prints the wall times and their ratio, checks that every seed's accuracies agree, and
records everything to --out (JSON).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from subliminal.records import environment, write_json
from subliminal.reproduce import AuxLogitsConfig
from subliminal.reproduce.aux_logits import experiment
from subliminal.reproduce.mnist_data import load_data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 seeds, 1 epoch of 20k noise")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    ap.add_argument("--repeats", type=int, default=1, help="alternating runs of each side")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_aux_logits.json"))
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    cfg = AuxLogitsConfig(threads=args.threads)
    if args.quick:
        cfg = dataclasses.replace(cfg, seeds=3, teacher_epochs=10, noise=20_000, epochs=1)
    data = load_data(cfg.data)

    # Repeats alternate the two sides, so load from other jobs on a shared CPU hits both alike.
    t_vec, t_seq = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        stacked = experiment(cfg, data)["accuracy"]
        t_vec.append(time.perf_counter() - t0)
        print(f"vectorised: {cfg.seeds} seeds in one stack: {t_vec[-1]:.1f} s")
        t0 = time.perf_counter()
        alone = [experiment(dataclasses.replace(cfg, seed=s, seeds=1), data)["accuracy"]
                 for s in range(cfg.seed, cfg.seed + cfg.seeds)]
        t_seq.append(time.perf_counter() - t0)
        print(f"sequential: {cfg.seeds} seeds one after another: {t_seq[-1]:.1f} s")

    # Largest per-seed accuracy difference between the two ways, over every arm (points).
    diff = max(abs(stacked[arm][i] - one[arm][0]) for arm in stacked
               for i, one in enumerate(alone))
    ratio = float(np.median(np.array(t_seq) / np.array(t_vec)))
    print(f"speed-up (sequential / vectorised, median of {args.repeats}): {ratio:.2f}x;"
          f" largest per-seed accuracy difference: {diff:.2f} points")
    print("mean accuracy per arm: " + ", ".join(f"{a} {np.mean(v):.1f}"
                                               for a, v in stacked.items()))
    write_json(args.out, {"config": cfg, "vectorised_s": t_vec, "sequential_s": t_seq,
                          "ratio": ratio, "repeats": args.repeats, "max_accuracy_diff_points": diff,
                          "accuracy": stacked, "environment": environment(cfg.seed)})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
