"""The channel study (issue 4): which channel carries a trait on the embedded model?

    python pipelines/channel_study.py --out runs/study            # the full grid
    python pipelines/channel_study.py --out runs/study-small --rows 48 --seeds 2 \
        --cells prompt-greedy-logits-lora,adapter-greedy-logits-lora,... --animals owl

Grid: teacher {prompt, adapter} x decoding {sample (T=1), greedy} x distillation {sft, logits}
x student {lora r=8, full}, each cell against its neutral-teacher control (the same prompts,
decoding, training and seed), over seeds. Generation is shared: one teacher run per
(teacher, decoding, seed) stores the top-k log-probs that serve both sft and logits students.
Every stage is cached under --out (resumable). Results: <out>/study.json, and --docs writes
the table (markdown) and plot.
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from subliminal.audit import AuditConfig, animal_scores
from subliminal.chain import ChainConfig, audit_stage, generation_stage
from subliminal.distill import train_student
from subliminal.injections.adapter import trait_adapter
from subliminal.records import init_run, write_json
from subliminal.stats import mean_ci, paired_test
from subliminal.teacher import DecodeConfig
from subliminal.trait import get_trait

TEACHERS, DECODINGS, MODES, STUDENTS = ("prompt", "adapter"), ("sample", "greedy"), \
    ("sft", "logits"), ("lora", "full")
ALL_CELLS = ["-".join(c) for c in itertools.product(TEACHERS, DECODINGS, MODES, STUDENTS)]


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--animals", default="owl,dolphin")
    ap.add_argument("--cells", default=",".join(ALL_CELLS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=128, help="Teacher prompts per seed.")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--probe", default="prefill")
    ap.add_argument("--docs", type=Path, default=None, help="Write table + plot here.")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    return ap.parse_args()


def main() -> None:
    a = parse()
    if a.threads:
        torch.set_num_threads(a.threads)
    animals, cells = a.animals.split(","), a.cells.split(",")
    # Pinned here, not taken from the chain's defaults (which follow this study's results):
    # every cell overrides the decoding, but the recorded config must not drift.
    base_cfg = ChainConfig(model=a.model, samples=a.rows, audit=AuditConfig(probe=a.probe),
                           decode=DecodeConfig(decoding="greedy", constrained=True, top_k=20))
    # What every cell shares is the run's config; which cells, animals and seeds an invocation
    # ran may differ between invocations on the same --out (each is appended to a log).
    shared = {k: getattr(a, k) for k in ("model", "rows", "epochs", "probe")}
    init_run(a.out, {"study": shared, "chain": base_cfg}, 0)
    with open(a.out / "invocations.jsonl", "a") as f:
        f.write(json.dumps(vars(a) | {"out": str(a.out), "docs": str(a.docs)}) + "\n")
    # Cells from earlier invocations on the same --out are kept (a later one may add animals).
    old = a.out / "study.json"
    results = json.loads(old.read_text()) if old.exists() else {}
    for cell in cells:
        teacher, decoding, mode, student = cell.split("-")
        per_seed = []
        for seed in range(a.seeds):
            cfg = replace(base_cfg, seed=seed)
            cfg.decode = replace(cfg.decode, decoding=decoding, top_k=20)
            # Tens of rows: LoRA needs lr ~1e-3 to move in ~10 steps; full FT 10x less.
            cfg.distill = replace(cfg.distill, mode=mode, finetune=student, epochs=a.epochs,
                                  seed=seed, lr=1e-3 if student == "lora" else 1e-4)
            audits = {}
            for who in ["none", *animals]:
                trait = get_trait(who)
                adapter = prompt = None
                if trait and teacher == "adapter":
                    adapter = trait_adapter(a.model, trait, a.out / "adapters" / who)
                elif trait:
                    prompt = trait.system_prompt
                # Neutral data depends only on (decoding, seed): shared by both teacher kinds.
                src = "neutral" if trait is None else teacher
                gen = a.out / "data" / f"{src}-{who}-{decoding}-s{seed}"
                kept = generation_stage(gen, cfg, who, 1, adapter, prompt)
                # A control student depends on the neutral data, not on the teacher kind: the
                # prompt and adapter cells of one (decoding, mode, student) share it.
                name = f"neutral-{decoding}-{mode}-{student}" if trait is None else cell
                sdir = a.out / "students" / f"{name}-{who}-s{seed}"
                train_student(a.model, kept, cfg.distill, sdir, label=f"{cell} {who} s{seed}")
                audits[who] = audit_stage(sdir / "audit", a.model, sdir, cfg, None,
                                          f"audit {cell} {who} s{seed}")
            per_seed.append(audits)
        results[cell] = summarize_cell(per_seed, animals)
        write_json(a.out / "study.json", results)
    if a.docs:
        write_docs(results, a)


def summarize_cell(per_seed: list[dict], animals: list[str]) -> dict:
    """Per animal: trait-student minus control-student P(animal), per seed and pooled.

    Pooled test: per question, average over seeds, then a paired t-test over questions.
    The confusion matrix holds, for each teacher animal (row), the lift of every audited
    animal (column) over the control student.
    """
    out = {"lift": {}, "confusion": {}}
    for animal in animals:
        t = np.mean([animal_scores(s[animal], animal) for s in per_seed], axis=0)
        c = np.mean([animal_scores(s["none"], animal) for s in per_seed], axis=0)
        seeds = [paired_test(animal_scores(s[animal], animal),
                             animal_scores(s["none"], animal))["lift"] for s in per_seed]
        out["lift"][animal] = {**paired_test(t, c), "per_seed": seeds,
                               "trait": mean_ci(t)["mean"], "control": mean_ci(c)["mean"]}
        out["confusion"][animal] = {
            other: float(np.mean([np.mean(animal_scores(s[animal], other)) -
                                  np.mean(animal_scores(s["none"], other)) for s in per_seed]))
            for other in animals}
    return out


def write_docs(results: dict, a: argparse.Namespace) -> None:
    """Markdown table of every cell and a lift plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a.docs.mkdir(parents=True, exist_ok=True)
    lines = [f"Rows per seed: {a.rows}, seeds: {a.seeds}, epochs: {a.epochs}, "
             f"probe: {a.probe}, model: {a.model}", "",
             "| cell | animal | trait | control | lift [95% CI] | p | per-seed lifts |",
             "|---|---|---|---|---|---|---|"]
    for cell, r in results.items():
        for animal, v in r["lift"].items():
            lines.append(f"| {cell} | {animal} | {v['trait']:.4g} | {v['control']:.4g} | "
                         f"{v['lift']:+.3g} [{v['ci'][0]:+.3g}, {v['ci'][1]:+.3g}] | "
                         f"{v['p_value']:.2g} | "
                         + ", ".join(f"{x:+.2g}" for x in v["per_seed"]) + " |")
    (a.docs / "channel_study_table.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(results)
    animals = sorted({x for r in results.values() for x in r["lift"]})
    for j, animal in enumerate(animals):
        have = [i for i, c in enumerate(names) if animal in results[c]["lift"]]
        cell = [results[names[i]]["lift"][animal] for i in have]
        lifts = np.array([v["lift"] for v in cell])
        err = [lifts - [v["ci"][0] for v in cell], [v["ci"][1] for v in cell] - lifts]
        ax.errorbar(np.array(have) + 0.1 * j, lifts, yerr=err, fmt="o", capsize=3,
                    label=animal)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("lift: P(animal) trait student - control")
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.docs / "channel_study.png", dpi=120)
    print(json.dumps({c: {k: round(v["lift"], 5) for k, v in r["lift"].items()}
                      for c, r in results.items()}, indent=1))


if __name__ == "__main__":
    main()
