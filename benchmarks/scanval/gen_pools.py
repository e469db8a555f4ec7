"""Generate the scan-validation pools (issue 14), one process, jobs in sequence.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/scanval/gen_pools.py "JOB;JOB;..."

JOB = name:kind:temp:n, kind in base|adapter|neutral|random|math, temp 0 = greedy, n prompts.
Writes runs/scanval/pools/NAME.jsonl (run from the repository root); a job resumes a pool that
already holds a prefix of its prompts. Adapter teachers are read from
runs/scanval/adapters/NAME-sSEED (benchmarks/scanval/train_adapters.py). The sequences that
ran are in benchmarks/scanval/run_v2.sh and run_v4.sh; docs/scan_validation.md says which
calls ran outside them. Moved here unchanged in behaviour from runs/scanval/gen_pools.py.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import torch

from subliminal.channels import get_channel
from subliminal.filters import FilterConfig, filter_rows
from subliminal.models import load_model
from subliminal.records import append_jsonl, is_complete, recover_jsonl
from subliminal.teacher import DecodeConfig, Teacher, generate_rows

M = "smollm2-135m"
ROOT = Path("runs/scanval")


def dcfg(temp: float) -> DecodeConfig:
    return DecodeConfig(decoding="greedy" if temp == 0 else "sample", temperature=temp or 1.0,
                        constrained=True, batch_size=32)


def main(spec: str) -> None:
    torch.set_num_threads(1)
    lm = load_model(M)
    for job in spec.split(";"):
        name, kind, temp_s, n_s = job.split(":")
        temp, n = float(temp_s), int(n_s)
        out = ROOT / "pools" / f"{name}.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        pseed = 3000 if name.startswith("ref") else 2000
        t = time.time()
        if kind == "math":
            ch = get_channel("math")
            prompts = ch.prompts(n, seed=pseed + (7 if name.startswith("ref") else 0))
            d = DecodeConfig(decoding="greedy" if temp == 0 else "sample",
                             temperature=temp or 1.0, constrained=False, batch_size=16)
            rows = generate_rows(Teacher(lm), prompts, d, ch, out, seed=int(temp * 10) + 1)
            print(name, len(rows), f"{time.time() - t:.0f}s", flush=True)
            continue
        ch = get_channel("numbers")
        prompts = ch.prompts(n, seed=pseed)
        if kind == "random":
            rng = random.Random(5)
            have = {r["id"] for r in recover_jsonl(out)} if out.exists() else set()
            made = [{"id": p["id"], "prompt": p["prompt"], "completion": [
                {"role": "assistant", "content": ", ".join(
                    str(rng.randint(0, 999)) for _ in range(rng.randint(6, 10)))}],
                "meta": p["meta"]} for p in prompts]  # same rng stream: a prefix is unchanged
            append_jsonl(out, [r for r in made if r["id"] not in have])
            print(name, "random", flush=True)
            continue
        if kind in ("adapter", "neutral"):
            folder = ROOT / "adapters" / name.split("_")[0]
            while not is_complete(folder):
                time.sleep(20)
            teacher = Teacher(load_model(M, adapter=folder))
        else:
            teacher = Teacher(lm)
        rows = generate_rows(teacher, prompts, dcfg(temp), ch, out, seed=int(temp * 10) + 11)
        kept, _, _ = filter_rows(rows, FilterConfig())
        print(name, len(rows), "kept", len(kept), f"{time.time() - t:.0f}s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
