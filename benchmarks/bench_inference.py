"""bf16 against fp32 for one forward pass of the embedded model (audits, scans), side by side.

    python benchmarks/bench_inference.py [--threads 1] [--batch 16] [--tokens 60] [--repeats 5]

Three variants of the same model in one process: fp32 weights, fp32 weights under bf16
autocast, and bf16 weights. Repeats are interleaved (every variant once per round) so machine
load hits them alike; the report is the median time ratio to fp32 and the largest difference
in per-token log-probability from fp32 (what an audit or the scan reads). Prints a markdown
row per variant for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from subliminal.models import load_model


def timed(model, ids: torch.Tensor, autocast: bool) -> tuple[float, torch.Tensor]:
    """Seconds for one forward pass, and the per-token log-probs in fp32."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        t = time.perf_counter()
        logits = model(ids).logits
        seconds = time.perf_counter() - t
    return seconds, torch.log_softmax(logits.float(), -1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fp32 = load_model("smollm2-135m", device="cpu").model.eval()
    variants = {"fp32": (fp32, False), "bf16 autocast": (fp32, True),
                "bf16 weights": (copy.deepcopy(fp32).to(torch.bfloat16), False)}
    ids = torch.randint(100, 20000, (args.batch, args.tokens), generator=torch.Generator()
                        .manual_seed(0))
    times = {k: [] for k in variants}
    ref = None
    gaps = {}
    for _ in range(args.repeats + 1):  # the first round warms up and is dropped
        for name, (model, auto) in variants.items():
            s, logp = timed(model, ids, auto)
            times[name].append(s)
            ref = logp if name == "fp32" else ref
            gaps[name] = float((logp - ref).abs().max())
    base = statistics.median(times["fp32"][1:])
    for name in variants:
        med = statistics.median(times[name][1:])
        print(f"| {name} | {args.batch} x {args.tokens} | {med:.3f} s | {med / base:.2f}x | "
              f"{gaps[name]:.3g} |")


if __name__ == "__main__":
    main()
