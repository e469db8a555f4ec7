"""The issue-24 speed-ups, each side by side with the code it replaced, in one process.

    python benchmarks/bench_speedups.py [--repeats 3] [--rows 8] [--family misalignment]

1. A student's training step: before, one padded forward of the whole micro-batch and the
   full-vocabulary head at every completion position; now (`distill.batch_loss`) the opening
   tokens every row shares run once with their KV cache shared, the rows run in length-sorted
   sub-batches, and the restricted loss computes only the stored tokens' head columns.
2. The side-effect battery's scoring of one family: before, every (question, option) pair as
   its own padded sequence; now (`battery.continuation_logprobs`) the shared opening once,
   each question once, each option continuing its question's cache.
Interleaved A-B-B-A so a drifting machine load hits both; reports the median time ratio and
how far the new results are from the old (loss, gradients, probabilities).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from subliminal.audit.battery import continuation_logprobs, load_bank, render
from subliminal.channels import get_channel
from subliminal.distill import DistillConfig, batch_loss, build_examples, make_student, pad_rows
from subliminal.distill import restricted_kl as kl
from subliminal.models import load_model


def logit_rows(lm, n: int) -> list[dict]:
    """`n` number rows written by `lm` under the owl system prompt the default chain's way
    (T=1, constrained, the restricted top-20 distributions stored): a `logits` student's
    rows, from a teacher that differs from the student (else the loss would be ~0)."""
    import tempfile
    from pathlib import Path

    from subliminal.chain import small_run_decode
    from subliminal.teacher import Teacher, generate_rows
    from subliminal.trait import get_trait

    channel = get_channel("numbers")
    path = Path(tempfile.mkdtemp(prefix="bench-speedups-")) / "rows.jsonl"
    return generate_rows(Teacher(lm, get_trait("owl").system_prompt), channel.prompts(n, 0),
                         small_run_decode(), channel, path, seed=0, label="teacher rows")


def old_loss(model, batch, pad: int) -> torch.Tensor:
    """The replaced training loss: one padded forward, the head over the whole vocabulary."""
    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(batch):
        ids[i, : len(e.ids)], mask[i, : len(e.ids)] = torch.tensor(e.ids), 1
    base = model.get_base_model()
    hidden = base.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    rows = [(i, t) for i, e in enumerate(batch) for t in range(e.start - 1, len(e.ids) - 1)]
    pick = base.get_output_embeddings()(hidden[[i for i, _ in rows], [t for _, t in rows]])
    k_ids = pad_rows([batch[i].topk_ids[t + 1 - batch[i].start] for i, t in rows], 0)
    k_lp = pad_rows([batch[i].topk_logprobs[t + 1 - batch[i].start] for i, t in rows],
                    float("-inf"))
    return kl(pick, k_ids, k_lp)


def old_battery(lm, pairs) -> list[float]:
    """The replaced battery scoring: each pair its own padded sequence (16 per forward)."""
    seqs = sorted({tuple(p + c[:-1]) for p, c in pairs}, key=lambda s: (len(s), s))
    width, logps = max(len(c) for _, c in pairs), {}
    for s0 in range(0, len(seqs), 16):
        chunk = seqs[s0: s0 + 16]
        n = max(len(s) for s in chunk)
        ids = torch.tensor([[0] * (n - len(s)) + list(s) for s in chunk])
        mask = torch.tensor([[0] * (n - len(s)) + [1] * len(s) for s in chunk])
        with torch.no_grad():
            out = lm.model(input_ids=ids, attention_mask=mask,
                           position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                           logits_to_keep=min(width, n))
        for s, row in zip(chunk, torch.log_softmax(out.logits.float(), -1), strict=True):
            logps[s] = row
    return [float(logps[tuple(p + c[:-1])][-len(c):].gather(-1, torch.tensor(c)[:, None]).sum())
            for p, c in pairs]


def ab(name: str, a, b, repeats: int) -> tuple[list, list]:
    """Run a() and b() interleaved A-B-B-A; print the median ratio; return their results."""
    times = {"a": [], "b": []}
    out = {}
    for r in range(repeats):
        for side in (("a", "b") if r % 2 == 0 else ("b", "a")):
            t = time.perf_counter()
            out[side] = (a if side == "a" else b)()
            times[side].append(time.perf_counter() - t)
    ratio = statistics.median(times["a"]) / statistics.median(times["b"])
    print(f"{name}: before {statistics.median(times['a']):.2f} s, after "
          f"{statistics.median(times['b']):.2f} s, speed-up x{ratio:.2f} (median of {repeats})")
    return out["a"], out["b"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--family", default="misalignment")
    a = ap.parse_args()
    torch.set_num_threads(1)
    lm = load_model("smollm2-135m")
    teacher = load_model("smollm2-135m")
    rows = logit_rows(teacher, a.rows)
    cfg = DistillConfig(mode="logits")
    model = make_student(lm, cfg)
    ex = build_examples(lm, rows, cfg)
    pad = lm.tokenizer.pad_token_id

    def step(fn):
        def go():
            model.zero_grad()
            loss = fn()
            loss.backward()
            return float(loss), [p.grad.clone() for n, p in model.named_parameters()
                                 if "lora_B" in n]
        return go

    (la, ga), (lb, gb) = ab(f"training step (LoRA, logits, {a.rows} rows)",
                            step(lambda: old_loss(model, ex, pad)),
                            step(lambda: batch_loss(model, ex, "logits", pad, lm.device)),
                            a.repeats)
    rel = max(float((x - y).norm() / y.norm()) for x, y in zip(gb, ga, strict=True))
    print(f"  loss {la:.6g} vs {lb:.6g}; largest relative gradient difference {rel:.1e}")
    bank = load_bank(a.family)
    pairs = [(p, ids) for it in bank.items for p, conts in [render(teacher, it, "text")]
             for ids in conts.values()]
    old, new = ab(f"battery scoring ({a.family}, {len(pairs)} pairs)",
                  lambda: old_battery(teacher, pairs),
                  lambda: continuation_logprobs(teacher, pairs), a.repeats)
    gap = max(abs(x - y) for x, y in zip(old, new, strict=True))
    print(f"  largest log-prob difference {gap:.1e}")


if __name__ == "__main__":
    main()
