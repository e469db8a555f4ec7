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
    """One row per stage folder that recorded its costs, finished at or after `since` (an
    ISO time), in finishing order: a teacher adapter reused from the machine cache carries the
    costs of the run that trained it, which this run did not spend."""
    rows = []
    for path in run.rglob("complete.json"):
        rec = json.loads(path.read_text())
        if "cpu_s" not in rec or rec["finished"] < since:
            continue
        where = path.parent.relative_to(run)
        kind = where.name if where.name != "teacher" else "teacher adapter"
        rate = rec["gflop"] / rec["cpu_s"] if rec["cpu_s"] > 0 else 0.0
        rows.append({"stage": str(where), "kind": kind, "finished": rec["finished"],
                     **{k: rec[k] for k in ("wall_s", "cpu_s", "positions", "head_positions",
                                            "gflop")},
                     "gflop_per_cpu_s": round(rate, 1), "of_peak": round(rate / peak, 3)})
    return sorted(rows, key=lambda r: r["finished"])


def table(rows: list[dict]) -> str:
    """Markdown: each stage, then the totals."""
    head = ("| stage | wall s | CPU s | positions | GFLOP | GFLOP/CPU-s | of peak |\n"
            "|---|---|---|---|---|---|---|\n")
    body = "".join(f"| {r['stage']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['positions']} "
                   f"| {r['gflop']:.0f} | {r['gflop_per_cpu_s']:.1f} | {r['of_peak']:.0%} |\n"
                   for r in rows)
    cpu, flop = sum(r["cpu_s"] for r in rows), sum(r["gflop"] for r in rows)
    return head + body + f"| **all stages** | | **{cpu:.0f}** | | **{flop:.0f}** | " \
                         f"{flop / max(cpu, 1e-9):.1f} | |\n"


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
    print(table(rows))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
