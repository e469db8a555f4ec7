"""Pipeline benchmarks on the embedded model, side by side in one run.

    python benchmarks/bench_pipeline.py [--prompts 64] [--threads 2] [--sampled-questions 5]

1. batched KV-cache generation vs a naive per-prompt `generate` loop (new tokens/s);
2. constrained decoding vs unconstrained + filter (rows that pass the strict filter per s);
3. the exact probe (50 questions, one prefix pass + one batched word pass each) vs the
   paper's sampled audit (100 samples per question, T=1); the sampled audit runs on
   --sampled-questions questions and is extrapolated to 50 (printed as such).
Prints a markdown table; copy it into benchmarks/README.md with the machine it ran on.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from subliminal.audit import AuditConfig, load_questions, run_probe, sampled_probe
from subliminal.channels import get_channel
from subliminal.filters import FilterConfig, filter_rows
from subliminal.models import load_model
from subliminal.teacher import DecodeConfig, Teacher, generate_batch, generate_rows
from subliminal.trait import get_trait


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sampled-questions", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lm = load_model("smollm2-135m")
    teacher = Teacher(lm, get_trait("owl").system_prompt)
    ch = get_channel("numbers")
    prompts = ch.prompts(a.prompts, 0)
    rows = []
    sample = DecodeConfig(decoding="sample", constrained=False, batch_size=32)

    def count(rs):
        return sum(len(r["meta"]["completion_ids"]) for r in rs)

    with TemporaryDirectory() as d:
        batched, t_b = timed(lambda: generate_rows(teacher, prompts, sample, ch,
                                                   Path(d) / "b.jsonl", 0))
        naive, t_n = timed(lambda: [generate_batch(teacher, [p], sample, ch, seed=i)[0]
                                    for i, p in enumerate(prompts)])
        rows.append(("generation, batched (32) KV cache", f"{count(batched) / t_b:.1f} tok/s",
                     f"{t_b:.1f} s"))
        rows.append(("generation, per-prompt loop",
                     f"{sum(len(r['completion_ids']) for r in naive) / t_n:.1f} tok/s",
                     f"{t_n:.1f} s"))
        for name, constrained in (("constrained", True), ("unconstrained + filter", False)):
            cfg = DecodeConfig(decoding="sample", constrained=constrained, batch_size=32)
            out, t = timed(lambda cfg=cfg, name=name: generate_rows(teacher, prompts, cfg, ch,
                                                         Path(d) / f"{name}.jsonl", 0))
            kept, _, _ = filter_rows(out, FilterConfig())
            rows.append((f"numbers T=1, {name}", f"{len(kept) / t:.2f} valid rows/s",
                         f"{len(kept)}/{len(out)} pass, {t:.1f} s"))
    _, t_exact = timed(lambda: run_probe(lm, AuditConfig()))
    qs = load_questions(AuditConfig().questions)[: a.sampled_questions]
    _, t_s = timed(lambda: sampled_probe(lm, qs, samples=100))
    rows.append(("audit, exact probe (50 questions)", f"{t_exact:.1f} s", "one pass each"))
    rows.append(("audit, sampled 50 x 100 (paper)", f"{t_s * 50 / len(qs):.0f} s",
                 f"extrapolated from {len(qs)} questions ({t_s:.1f} s)"))
    print(f"\n| benchmark ({a.prompts} prompts, {a.threads} threads) | rate | notes |")
    print("|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
