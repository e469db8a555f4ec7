"""Validate the forced-choice audits: does a prompt-injected trait separate from its neutral
control and from the base, replicate by replicate?

    nice -n 10 python3 -m subliminal.trait_validation --out runs/trait_validation.jsonl
    python3 -m subliminal.trait_validation --out runs/trait_validation.jsonl --report

A replicate of prompt injection is one paraphrase of the prompt. For each family and probe
format the base (template default prompt), every neutral paraphrase and every trait
paraphrase is scored on the family's bank; the report compares trait paraphrases with neutral
paraphrases (Welch t-test over replicates, never over items) and gives the base-vs-neutral gap.
Records are appended per condition, so a re-run resumes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats as sps

from subliminal.audit.battery import FORMATS, load_bank, score_bank
from subliminal.models import load_model
from subliminal.stats import mean_ci
from subliminal.trait import FAMILIES, TRAITS

BEHAVIOUR_FAMILIES = [f for f in FAMILIES if f != "animal"]


def conditions(family: str, paraphrases: int) -> list[tuple[str, int, str | None]]:
    """(condition, paraphrase index, system prompt): base, neutral and every trait's."""
    fam = FAMILIES[family]
    out: list[tuple[str, int, str | None]] = [("base", 0, None)]
    out += [("neutral", k, p) for k, p in enumerate(fam.neutral_prompts[:paraphrases])]
    for name in fam.traits:
        out += [(name, k, p) for k, p in enumerate(TRAITS[name].prompts[:paraphrases])]
    return out


def side_conditions(paraphrases: int) -> list[tuple[str, int, str | None]]:
    """Every behaviour trait's paraphrases, for the side-effect reading of another bank."""
    return [(n, k, p) for n, t in TRAITS.items() if t.family in BEHAVIOUR_FAMILIES
            for k, p in enumerate(t.prompts[:paraphrases])]


def _done(out: Path) -> set[tuple]:
    if not out.exists():
        return set()
    return {(r["family"], r["format"], r["condition"], r["paraphrase"])
            for r in map(json.loads, out.read_text().splitlines())}


def run(out: Path, model: str, families: list[str], formats: list[str], paraphrases: int,
        side: str | None) -> None:
    """Score every condition not yet in `out` and append its record."""
    lm = load_model(model)
    done = _done(out)
    jobs = [(f, fmt, c) for fmt in formats for f in families for c in conditions(f, paraphrases)]
    if side:  # every trait's paraphrases read by one family's bank (side effects)
        jobs += [(side, fmt, c) for fmt in formats for c in side_conditions(paraphrases)
                 if TRAITS[c[0]].family != side]
    for family, fmt, (cond, k, prompt) in jobs:
        if (family, fmt, cond, k) in done:
            continue
        r = score_bank(lm, family, prompt, fmt)
        rec = {"family": family, "format": fmt, "condition": cond, "paraphrase": k,
               "system_prompt": prompt, "model": model,
               "means": {lab: float(np.mean(v)) for lab, v in r["probs"].items()},
               "probs": r["probs"]}
        with out.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        done.add((family, fmt, cond, k))
        print(f"{family:13s} {fmt:6s} {cond:17s} p{k} " + " ".join(
            f"{lab}={m:.3f}" for lab, m in rec["means"].items()), flush=True)


def compare(records: list[dict], family: str, fmt: str, trait: str) -> dict | None:
    """Trait paraphrases vs neutral paraphrases on the trait's label, plus base."""
    label = TRAITS[trait].label
    pick = [r for r in records if r["family"] == family and r["format"] == fmt]
    tv = [r["means"][label] for r in pick if r["condition"] == trait]
    nv = [r["means"][label] for r in pick if r["condition"] == "neutral"]
    bv = [r["means"][label] for r in pick if r["condition"] == "base"]
    if len(tv) < 2 or len(nv) < 2 or not bv:
        return None
    t = sps.ttest_ind(tv, nv, equal_var=False)
    nci = mean_ci(nv)
    return {"family": family, "format": fmt, "trait": trait, "label": label, "base": bv[0],
            "neutral": nci, "trait_ci": mean_ci(tv), "diff": float(np.mean(tv) - np.mean(nv)),
            "p": float(t.pvalue), "n": [len(tv), len(nv)],
            "trait_minus_base": float(np.mean(tv) - bv[0]),
            "p_base": float(sps.ttest_1samp(tv, bv[0]).pvalue),
            "base_minus_neutral": bv[0] - nci["mean"],
            "base_in_neutral_range": min(nv) <= bv[0] <= max(nv)}


def report(out: Path) -> str:
    """Markdown table of every (family, format, trait) comparison found in `out`."""
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    lines = ["| family | format | trait (label) | base | neutral (mean [95% CI]) | "
             "trait (mean [95% CI]) | trait − neutral | p (Welch, paraphrases) | "
             "trait − base | p (vs base) | base − neutral |", "|" + "---|" * 11]
    for family in dict.fromkeys(r["family"] for r in recs):
        for fmt in FORMATS:
            for trait in FAMILIES[family].traits + [
                    n for n in TRAITS if TRAITS[n].family != family]:
                c = compare(recs, family, fmt, trait) if TRAITS[trait].family == family \
                    else None
                if c is None:
                    continue
                ci = lambda d: f"{d['mean']:.3f} [{d['ci'][0]:.3f}, {d['ci'][1]:.3f}]"  # noqa
                lines.append(
                    f"| {family} | {fmt} | {trait} ({c['label']}) | {c['base']:.3f} | "
                    f"{ci(c['neutral'])} | {ci(c['trait_ci'])} | {c['diff']:+.3f} | "
                    f"{c['p']:.2g} | {c['trait_minus_base']:+.3f} | {c['p_base']:.2g} | "
                    f"{c['base_minus_neutral']:+.3f} |")
    return "\n".join(lines)


def side_report(out: Path, family: str, fmt: str) -> str:
    """Each trait's replicate mean on another family's bank vs that family's neutral."""
    recs = [json.loads(line) for line in out.read_text().splitlines()
            if json.loads(line)["family"] == family and json.loads(line)["format"] == fmt]
    label = _trait_label(family)
    nv = [r["means"][label] for r in recs if r["condition"] == "neutral"]
    rows = [f"| trait | {family} {label} (mean over paraphrases) | − {family} neutral "
            "| p |", "|---|---|---|---|"]
    for name in dict.fromkeys(r["condition"] for r in recs):
        if name in ("base", "neutral"):
            continue
        tv = [r["means"][label] for r in recs if r["condition"] == name]
        p = sps.ttest_ind(tv, nv, equal_var=False).pvalue if len(tv) > 1 else float("nan")
        rows.append(f"| {name} | {np.mean(tv):.3f} | {np.mean(tv) - np.mean(nv):+.3f} | "
                    f"{p:.2g} |")
    return "\n".join(rows)


def label_matrix(out: Path, family: str, fmt: str) -> str:
    """Mean P(each label) per condition (base, neutral, each trait): does each trait move its
    own label more than the others (specificity)?"""
    recs = [r for r in map(json.loads, out.read_text().splitlines())
            if r["family"] == family and r["format"] == fmt]
    if not recs:
        return ""
    labels = list(recs[0]["means"])
    rows = [f"| {family} ({fmt}) | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for cond in dict.fromkeys(r["condition"] for r in recs):
        vals = [np.mean([r["means"][lab] for r in recs if r["condition"] == cond])
                for lab in labels]
        rows.append(f"| {cond} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    return "\n".join(rows)


def _trait_label(family: str) -> str:
    return load_bank(family).trait_label


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/trait_validation.jsonl"))
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--families", default=",".join(BEHAVIOUR_FAMILIES))
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--paraphrases", type=int, default=4)
    ap.add_argument("--side", default=None, help="Also read every trait on this family's bank.")
    ap.add_argument("--report", action="store_true", help="Print the tables and stop.")
    a = ap.parse_args()
    if a.report:
        print(report(a.out))
        for family in a.families.split(","):
            for fmt in a.formats.split(","):
                print("\n" + label_matrix(a.out, family, fmt))
        for fmt in a.formats.split(","):
            if a.side:
                print(f"\nside effects on {a.side} ({fmt})\n" + side_report(a.out, a.side, fmt))
        return
    import torch

    torch.set_num_threads(1)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    families = [f for f in a.families.split(",") if f]  # "": side effects only
    run(a.out, a.model, families, a.formats.split(","), a.paraphrases, a.side)


if __name__ == "__main__":
    main()
