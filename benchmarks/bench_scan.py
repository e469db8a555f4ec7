"""`subliminal scan` throughput: rows/s of the static checks and of the likelihood ranking.

    python benchmarks/bench_scan.py --model smollm2-135m --static-rows 10000 --rows 32
    python benchmarks/bench_scan.py --injection adapter --traits owl,dolphin,eagle,elephant \
        --modes mixed-base,mixed-exact,separate-exact --rows 16

Rows are number-channel prompts (the project's own grammar) with random 10-value answers:
the shape of a real numbers dataset. Static checks run on `--static-rows` rows; the
likelihood part scores `--rows` rows under every condition (BASE + each trait's adapter), for
each context, batch size and mode given, and projects the time for 10,000 rows. Modes:
`mixed-base` (the default: one mixed-adapter pass per batch on BASE's cached prompt states),
`mixed-exact` (one mixed pass, every condition reads the prompt too), `separate-exact` (one
pass per condition: the scan before issue 14). `--end-to-end N` times
the whole default scan (`run_scan`: load, static on all N rows, likelihood on the default
random sample of rows) of an N-row JSONL file.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from itertools import product
from pathlib import Path

import torch

from subliminal.channels import get_channel
from subliminal.models import load_model
from subliminal.scan import ScanConfig, run_scan
from subliminal.scan.likelihood import LikelihoodConfig, conditions, score_rows
from subliminal.scan.static import static_report


def number_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    prompts = get_channel("numbers").prompts(n, seed)
    return [{"id": p["id"], "prompt": p["prompt"],
             "completion": [{"role": "assistant", "content": ", ".join(
                 str(rng.randint(0, 999)) for _ in range(10))}], "meta": {}} for p in prompts]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--static-rows", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--batch-sizes", default="8")
    ap.add_argument("--modes", default="mixed-base")
    ap.add_argument("--contexts", default="full")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--injection", default="adapter", choices=("prompt", "adapter"))
    ap.add_argument("--traits", default=None, help="Comma-separated (default: catalogue).")
    ap.add_argument("--end-to-end", type=int, default=0, help="Rows of a whole-scan run.")
    ap.add_argument("--adapters", default="", help="TRAIT=FOLDER,... given adapters; the "
                    "others are trained or taken from the machine cache.")
    args = ap.parse_args()
    traits = args.traits.split(",") if args.traits else None
    torch.set_num_threads(args.threads)
    out = {"model": args.model, "threads": args.threads, "injection": args.injection,
           "traits": traits}
    rows = number_rows(args.static_rows)
    t = time.perf_counter()
    static_report(rows)
    s = time.perf_counter() - t
    out["static"] = {"rows": len(rows), "seconds": round(s, 3), "rows_per_s": round(len(rows) / s)}
    lm = load_model(args.model)
    # Adapters are trained once per machine (cached); their training is not timed here.
    given = dict(x.split("=") for x in args.adapters.split(",") if x)
    conds = conditions(traits, args.injection, args.model,
                       Path(tempfile.mkdtemp(prefix="bench-adapters-")), adapters=given)
    out["likelihood"] = []
    for context in args.contexts.split(","):
        for bs, mode in product(map(int, args.batch_sizes.split(",")), args.modes.split(",")):
            how, states = mode.split("-")
            cfg = LikelihoodConfig(batch_size=bs, context=context, mixed=how == "mixed",
                                   prompt_states="base" if states == "base" else "condition")
            res = score_rows(lm, rows[: args.rows], cfg, conds)
            out["likelihood"].append({
                "context": context, "batch_size": bs, "rows": args.rows, "mode": mode,
                "conditions": len(res["conditions"]), "seconds": round(res["seconds"], 2),
                "rows_per_s": round(res["rows_per_s"], 3),
                "tokens_per_row": round(res["tokens_per_row"], 1),
                "forward_tokens_per_s": round(res["forward_tokens"] / res["seconds"]),
                "projected_10k_rows_min": round(10_000 / res["rows_per_s"] / 60, 1)})
            print(json.dumps(out["likelihood"][-1]), flush=True)
    if args.end_to_end:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "rows.jsonl"
            data.write_text("".join(json.dumps(r) + "\n" for r in number_rows(args.end_to_end)))
            cfg = ScanConfig(model=args.model, out=Path(tmp) / "scan")
            cfg.likelihood = LikelihoodConfig(context=args.contexts.split(",")[0],
                                              injection=args.injection, traits=traits,
                                              adapters=given)
            t = time.perf_counter()
            rep = run_scan(str(data), cfg, lm=lm)
            out["end_to_end"] = {
                "rows": args.end_to_end, "seconds": round(time.perf_counter() - t, 1),
                "rows_scored": rep["likelihood"]["rows_scored"],
                "context": cfg.likelihood.context, "verdict": rep["verdict"]}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
