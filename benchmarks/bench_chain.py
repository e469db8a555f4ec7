"""Where a replicate's time goes: one replicate of the default cell, stage by stage.

    python benchmarks/bench_chain.py --out runs/bench-chain [--replicates 1] [--workers 1]
        [--generations 1] [--fresh-cache] [--samples N] [--no-side-effects]
        [--json benchmarks/records/bench_chain.json]

Runs `subliminal chain` (the default cell: adapter teacher and its control twin, numbers
sampled at T=1 under the format constraint, restricted-logit LoRA students, the exact probe
and the side-effect battery on teachers and last students) through the same code as the
command, then reads what every stage recorded in its `complete.json` (subliminal.meter):
wall and CPU seconds, model positions processed and estimated matmul GFLOP. It measures this
CPU's fp32 matmul peak at the model's own shapes (one thread) and reports each stage's
achieved GFLOP per CPU-second against it: the physical limit, and how close each stage is.
`--fresh-cache` uses an empty machine cache (the embedded model is converted and the teacher
adapters trained as on a fresh clone); without it, cached adapters are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from subliminal import costs
from subliminal.costs import rate

PEAK_SHAPES = ((512, 576, 576), (512, 576, 1536), (512, 1536, 576), (128, 576, 49152))


def matmul_peak(seconds: float = 1.0) -> float:
    """Best fp32 GFLOP/s of one thread over the model's own matmul shapes."""
    torch.set_num_threads(1)
    best = 0.0
    for m, k, n in PEAK_SHAPES:
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            a @ b
        t, it = time.perf_counter(), 0
        while time.perf_counter() - t < seconds:
            a @ b
            it += 1
        best = max(best, 2 * m * k * n * it / (time.perf_counter() - t) / 1e9)
    return best


def stage_rows(run: Path, peak: float, since: str = "") -> list[dict]:
    """The run's stages that finished at or after `since` (subliminal.costs), each with its
    GFLOP per CPU-second and fraction of `peak`."""
    return [{**r, "gflop_per_cpu_s": round(rate(r), 1), "of_peak": round(rate(r) / peak, 3)}
            for r in costs.stage_rows(run, since)[0]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-chain"))
    ap.add_argument("--replicates", type=int, default=1)
    ap.add_argument("--generations", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--fresh-cache", action="store_true")
    ap.add_argument("--samples", type=int, default=None,
                    help="Prompts per generation (default: the chain's); smaller units show "
                         "the fan-out's own overhead more, so a --workers ratio is conservative.")
    ap.add_argument("--no-side-effects", action="store_true", help="Skip the battery.")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    if a.fresh_cache:
        os.environ["SUBLIMINAL_CACHE"] = tempfile.mkdtemp(prefix="subliminal-cache-")
    from subliminal.chain import ChainConfig, run_chain
    from subliminal.fanout import FanOut

    peak = matmul_peak()
    cfg = ChainConfig(generations=a.generations, replicates=a.replicates)
    if a.samples:
        cfg.samples = a.samples
    cfg.audit.side_effects = not a.no_side_effects
    since = time.strftime("%Y-%m-%dT%H:%M:%S%z")  # the format complete.json is stamped in
    t, c = time.perf_counter(), time.process_time()
    run_chain(cfg, a.out, plan=FanOut(workers=a.workers, threads=1))
    wall, driver_cpu = time.perf_counter() - t, time.process_time() - c
    rows = stage_rows(a.out, peak, since)
    record = {"date": time.strftime("%Y-%m-%d"), "peak_gflop_s_1thread": round(peak, 1),
              "workers": a.workers, "replicates": a.replicates, "generations": a.generations,
              "fresh_cache": a.fresh_cache, "samples": cfg.samples,
              "side_effects": cfg.audit.side_effects, "wall_s": round(wall, 1),
              "stage_cpu_s": round(sum(r["cpu_s"] for r in rows), 1),
              "driver_cpu_s": round(driver_cpu, 1), "stages": rows}
    print(f"fp32 matmul peak, 1 thread: {peak:.1f} GFLOP/s; wall {wall:.0f} s; "
          f"stage CPU {record['stage_cpu_s']:.0f} s")
    print(costs.table(rows, peak))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
