"""Probe robustness of a chain's claim: re-read it with every paraphrased prefill, the direct
probe and a sampled check, and say where they disagree.

    python pipelines/robustness.py runs/confirm-s10 --generation 1 [--sampled 50]

For each replicate the trait-arm and control-arm students of the generation are re-audited
with each prefill of `audit.PREFILLS` and with the direct probe (exact, forward passes), and
optionally with the sampled probe (answers sampled at T=1, whole-word matches) on the first
replicate. Each probe's share log-odds lift is tested over replicates exactly as in the chain
(docs/transfer_protocol.md). Output: RUN/robustness/gen{g}.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from subliminal.audit import PREFILLS, AuditConfig, load_questions, sampled_probe, share_logodds
from subliminal.chain import ChainConfig, audit, stage_dirs
from subliminal.errors import run_script
from subliminal.injections import TeacherSpec
from subliminal.models import load_model
from subliminal.records import read_json, write_json
from subliminal.stats import replicate_test


def probes() -> dict[str, AuditConfig]:
    # The claim's own probe only: the side-effect battery is not what is being re-read.
    out = {f"prefill {i}: {p!r}": AuditConfig(prefill=p, side_effects=False)
           for i, p in enumerate(PREFILLS)}
    out["direct"] = AuditConfig(probe="direct", side_effects=False)
    return out


def lift(t: dict, c: dict, animal: str) -> float:
    return float(np.mean(share_logodds(t, animal)) - np.mean(share_logodds(c, animal)))


def reread(run: Path, g: int, cfg: ChainConfig) -> dict:
    """Every probe's share lift per replicate, tested over replicates."""
    rows = {}
    for name, probe in probes().items():
        pcfg = replace(cfg, audit=probe)
        lifts = []
        for r in range(cfg.replicates):
            res = {}
            for arm in ("trait", "control"):
                sdir = stage_dirs(run, r, arm, g)
                spec = TeacherSpec(adapter=str((sdir / "distill").relative_to(run)))
                folder = run / "robustness" / f"gen{g}" / f"rep{r}" / arm / _slug(name)
                res[arm] = audit(pcfg, run, folder, spec, f"rep{r} {arm} {name[:12]}")
            lifts.append(lift(res["trait"], res["control"], cfg.trait))
        rows[name] = replicate_test(lifts)
    return rows


def sampled(run: Path, g: int, cfg: ChainConfig, samples: int) -> dict:
    """The sampled probe on replicate 0's pair: the paper's read-out, noisy but model-free."""
    qs = load_questions(cfg.audit.questions)
    out = {}
    for arm in ("trait", "control"):
        lm = load_model(cfg.model, adapter=stage_dirs(run, 0, arm, g) / "distill")
        res = sampled_probe(lm, qs, samples=samples, label=f"sampled {arm}")
        out[arm] = float(np.mean([row[res["animals"].index(cfg.trait)] for row in res["probs"]]))
    return out


def _slug(name: str) -> str:
    return name.split(":")[0].replace(" ", "-")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--generation", type=int, default=1)
    ap.add_argument("--sampled", type=int, default=0, help="Samples per question (0: off).")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    raw = read_json(a.run / "config.json")
    cfg = ChainConfig(**{k: v for k, v in raw.items() if k not in
                         ("decode", "filter", "distill", "audit", "preset")})
    cfg.audit = AuditConfig(**raw["audit"])
    rows = reread(a.run, a.generation, cfg)
    result = {"generation": a.generation, "trait": cfg.trait, "probes": rows}
    signs = {np.sign(r["mean"]) for r in rows.values()}
    result["agree_in_sign"] = len(signs) == 1
    if a.sampled:
        result["sampled_rep0"] = sampled(a.run, a.generation, cfg, a.sampled)
    write_json(a.run / "robustness" / f"gen{a.generation}.json", result)
    print("| probe | share lift [95% CI] | p (t, replicates) | per-replicate |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['mean']:+.3f} [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}] | "
              f"{r['p_value']:.2g} | {', '.join(f'{v:+.3f}' for v in r['lifts'])} |")
    print(f"probes agree in sign: {result['agree_in_sign']}")
    if a.sampled:
        print(f"sampled (rep 0 only, one pair): {result['sampled_rep0']}")


if __name__ == "__main__":
    run_script(main)
