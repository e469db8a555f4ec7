"""bf16 autocast against fp32 for one LoRA training step on the embedded model, side by side.

    python benchmarks/bench_training.py [--threads 1] [--rows 8] [--repeats 5] [--mode sft]

Both sides run `training.train_step` (the shared loop's forward + backward over one optimizer
step's micro-batches, the lab's own loss) on the same LoRA student and the same examples, in
one process, interleaved A-B-B-A so drifting machine load hits both sides alike; no optimizer
update is applied, so every repeat sees the same weights. Reports the median time ratio
bf16 / fp32 (ratios, not absolute times: the CPU is shared) and how far the bf16 loss and
gradients are from fp32's. Prints a markdown table row for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from subliminal.channels import get_channel
from subliminal.distill import DistillConfig, batch_loss, build_examples, make_student
from subliminal.models import load_model
from subliminal.training import LoopConfig, accelerator, train_step, trainable


def rows_for(n: int) -> list[dict]:
    """Number prompts with fixed 10-value answers (the default chain's row shape)."""
    prompts = get_channel("numbers").prompts(n, 0)
    return [{**p, "completion": [{"role": "assistant", "content": ", ".join(
        str(100 + 37 * (i + j) % 900) for j in range(10))}]} for i, p in enumerate(prompts)]


def one_step(model, examples, loss_fn, params, acc, precision: str) -> tuple[float, float,
                                                                             list]:
    """(seconds, loss, gradients) of one train_step at `precision`."""
    cfg = LoopConfig(batch_size=len(examples), grad_accum=1, mixed_precision=precision)
    for p in params:
        p.grad = None
    t = time.perf_counter()
    loss = train_step(model, examples, list(range(len(examples))), loss_fn, params, acc, cfg)
    seconds = time.perf_counter() - t
    return seconds, loss, [p.grad.detach().clone() for p in params]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, default=8, help="rows per step (one micro-batch)")
    ap.add_argument("--repeats", type=int, default=5, help="A-B-B-A rounds")
    ap.add_argument("--mode", default="sft", help="sft (logits needs stored teacher rows)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lm = load_model("smollm2-135m")
    cfg = DistillConfig(mode=a.mode)
    torch.manual_seed(0)
    model = make_student(lm, cfg)
    model.train()
    # LoRA B starts at zero, so A gets no gradient on the first step; give B a small value.
    with torch.no_grad():
        for name, p in trainable(model).items():
            if "lora_B" in name:
                p.normal_(0, 1e-3)
    examples = build_examples(lm, rows_for(a.rows), cfg)
    pad = lm.tokenizer.pad_token_id
    params = list(trainable(model).values())
    acc = accelerator()

    def loss_fn(m, b):
        return batch_loss(m, b, cfg.mode, pad, lm.device)

    one_step(model, examples, loss_fn, params, acc, "no")  # warm-up (allocations, kernels)
    one_step(model, examples, loss_fn, params, acc, "bf16")
    times: dict[str, list[float]] = {"no": [], "bf16": []}
    ratios, loss_gap, grad_gap = [], 0.0, 0.0
    for r in range(a.repeats):
        order = ["no", "bf16"] if r % 2 == 0 else ["bf16", "no"]
        got = {p: one_step(model, examples, loss_fn, params, acc, p) for p in order}
        for p in got:
            times[p].append(got[p][0])
        ratios.append(got["bf16"][0] / got["no"][0])
        loss_gap = max(loss_gap, abs(got["bf16"][1] - got["no"][1]) / abs(got["no"][1]))
        num = sum((g1 - g2).norm() ** 2 for g1, g2 in zip(got["bf16"][2], got["no"][2],
                                                           strict=True)) ** 0.5
        den = sum(g.norm() ** 2 for g in got["no"][2]) ** 0.5
        grad_gap = max(grad_gap, float(num / den))
    tokens = sum(len(e.ids) for e in examples)
    print(f"examples {len(examples)}, tokens {tokens}, threads {a.threads}, repeats "
          f"{a.repeats}; fp32 s {[round(t, 2) for t in times['no']]}; bf16 s "
          f"{[round(t, 2) for t in times['bf16']]}")
    print("| step | bf16 / fp32 time (median of pairs) | pair ratios | loss rel. diff | "
          "grad rel. diff |")
    print("|---|---|---|---|---|")
    print(f"| LoRA r=8, {a.mode}, {len(examples)} rows, {tokens} tokens | "
          f"**{statistics.median(ratios):.2f}x** | {', '.join(f'{x:.2f}' for x in ratios)} | "
          f"{loss_gap:.1e} | {grad_gap:.1e} |")


if __name__ == "__main__":
    main()
