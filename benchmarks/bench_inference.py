"""bf16 against fp32 for one forward pass of the embedded model (audits, scans), side by side.

    python benchmarks/bench_inference.py [--threads 1] [--batch 16] [--tokens 60] [--repeats 5]

Three variants of the same model in one process: fp32 weights, fp32 weights under bf16
autocast, and bf16 weights. Repeats are interleaved (every variant once per round) so machine
load hits them alike. The input is real chat text: the numbers channel's prompts with a
comma-separated answer, tokenised and cut to --tokens. Reported per variant: the median time
ratio to fp32; the largest difference from fp32 in a row's mean log-probability of its own next
tokens (what an audit or the scan reads); and, for scale only, the largest per-token
difference in that realised-token log-probability. Prints a markdown row per variant.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from subliminal.models import load_model


def timed(model, ids: torch.Tensor, autocast: bool) -> tuple[float, torch.Tensor]:
    """Seconds for one forward pass, and each realised next token's log-prob in fp32."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        t = time.perf_counter()
        logits = model(ids).logits
        seconds = time.perf_counter() - t
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    return seconds, logp.gather(-1, ids[:, 1:, None])[..., 0]


def real_rows(lm, batch: int, tokens: int) -> torch.Tensor:
    """Number-channel chats (prompt + a 10-number answer), tokenised, cut to `tokens`."""
    from subliminal.channels import get_channel

    gen = torch.Generator().manual_seed(0)
    out = []
    for p in get_channel("numbers").prompts(batch, 0):
        answer = ", ".join(str(int(x)) for x in torch.randint(0, 1000, (10,), generator=gen))
        chat = [*p["prompt"], {"role": "assistant", "content": answer}]
        ids = lm.chat_ids(chat, add_generation_prompt=False)
        out.append(torch.tensor(ids[-tokens:]))
    n = min(len(x) for x in out)
    return torch.stack([x[-n:] for x in out])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model("smollm2-135m", device="cpu")
    fp32 = lm.model.eval()
    variants = {"fp32": (fp32, False), "bf16 autocast": (fp32, True),
                "bf16 weights": (copy.deepcopy(fp32).to(torch.bfloat16), False)}
    ids = real_rows(lm, args.batch, args.tokens)
    times = {k: [] for k in variants}
    ref = None
    gaps = {}
    for _ in range(args.repeats + 1):  # the first round warms up and is dropped
        for name, (model, auto) in variants.items():
            s, logp = timed(model, ids, auto)
            times[name].append(s)
            ref = logp if name == "fp32" else ref
            gaps[name] = (float((logp.mean(1) - ref.mean(1)).abs().max()),
                          float((logp - ref).abs().max()))
    base = statistics.median(times["fp32"][1:])
    for name in variants:
        med = statistics.median(times[name][1:])
        print(f"| {name} | {tuple(ids.shape)} | {med:.3f} s | {med / base:.2f}x | "
              f"{gaps[name][0]:.3g} | {gaps[name][1]:.3g} |")


if __name__ == "__main__":
    main()
