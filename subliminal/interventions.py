"""Interventions at audit time, and teacher strength against each injection's own control.

    subliminal intervene vector --trait owl --layer 15 --out owl.safetensors
    subliminal intervene steer --vector owl.safetensors --coef -4 --audit animal [--adapter DIR]
    subliminal intervene calm-down --trait owl --adapter TEACHER [--dpo SUPPRESSOR]
    subliminal intervene sweep --trait owl --layers 5,10,15,20 --coefs 2,4,8
    subliminal intervene strength --injection steering --trait owl --seeds 5

`steer` adds (or, negative coefficient, subtracts) a trait's vector on any teacher or student
and audits it beside the same model unsteered. `calm-down` puts the prompt baseline ("calm
down": a system prompt asking for no strong feeling or preference) beside a DPO suppressor
trained to prefer the neutral answer, on the same audit. `sweep` is the layer x coefficient
grid behind the steering default: audit lift and the numbers channel's unconstrained pass rate.
`strength` builds an injection's trait teacher and its control twin for several replicate
seeds and tests the trait's audit at the replicate level (the unit of evidence).

This module holds the experiments and their statistics; the `intervene` commands, which parse
the flags, call them and print the results, are in subliminal/interventions_cli.py.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from subliminal.audit import AuditConfig, bank_path, load_questions, run_probe
from subliminal.audit.battery import audit_family, trait_score
from subliminal.chain import ChainConfig
from subliminal.channels import get_channel
from subliminal.errors import SubliminalError
from subliminal.filters import FilterConfig, filter_rows
from subliminal.injections import InjectionContext, build_teacher, load_teacher
from subliminal.injections.dpo import preference_pairs, train_dpo
from subliminal.injections.steering import STEERING, build_vector, resolve_layer
from subliminal.models import attach_adapter, load_model
from subliminal.records import read_json, to_jsonable, write_json
from subliminal.stats import mean_ci, paired_test
from subliminal.teacher import DecodeConfig, Teacher, generate_batch
from subliminal.trait import get_trait
from subliminal.vectors import (
    add_vector,
    attach,
    contrast_questions,
    load_vector,
    save_vector,
    trait_vector,
)

CALM_DOWN = ("Calm down. You are calm and even-tempered. You have no strong feelings and no "
             "favorites. Answer plainly and neutrally.")


@dataclass
class SweepConfig:
    """The layer x coefficient grid of the steering sweep."""

    trait: str = field(default="owl", metadata={"help": "Catalogue trait whose vector is swept."})
    layers: tuple[int, ...] = field(default=(5, 10, 15, 20, 25), metadata={
        "help": "Decoder layers to steer at."})
    coefs: tuple[float, ...] = field(default=(2.0, 4.0, 8.0), metadata={
        "help": "Multiples of the difference-of-means vector."})
    format_prompts: int = field(default=8, metadata={
        "help": "Numbers-channel prompts generated per cell to read the format pass rate."})
    questions: int | None = field(default=None, metadata={
        "help": "Screen on the first N questions of the animal bank (None: all); a screen "
                "picks a setting, the replicate test (`strength`) then uses the whole bank."})
    seed: int = field(default=0, metadata={"help": "Vector prompt draw and decoding seed."})


def audit_target(lm, trait, audit: str | None = None, system_prompt: str | None = None,
                 cfg=None) -> dict:
    """Run a family's audit (default: the trait's own; `cfg`, an AuditConfig, swaps the
    animal probe's question bank) and summarise it for `trait`: per-item score of its label
    and the mean of every label (the panel, for specificity)."""
    audit = audit or trait.audit
    if cfg is not None and audit == "animal":
        r = run_probe(lm, cfg, system_prompt, label="animal audit")
        result = {"family": "animal", "labels": r["animals"],
                  "probs": {a: [row[j] for row in r["probs"]] for j, a in
                            enumerate(r["animals"])}}
    else:
        result = audit_family(lm, audit, system_prompt)
    target = trait_score(result, trait)
    panel = {k: sum(v) / len(v) for k, v in result["probs"].items()}
    return {"audit": audit, "target": trait.label, "per_question": target,
            "mean": sum(target) / len(target), "panel": panel, "result": result}


def compare(a: dict, b: dict) -> dict:
    """Audit `a` against `b` on the same questions: target ratio, paired question-level test
    (descriptive: questions are not replicates) and specificity (target's log-ratio minus the
    other animals' mean log-ratio)."""
    import math

    logr = {k: math.log(a["panel"][k] / b["panel"][k]) for k in a["panel"]}
    others = [v for k, v in logr.items() if k != a["target"]]
    return {"target": a["target"], "mean": a["mean"], "reference_mean": b["mean"],
            "ratio": a["mean"] / b["mean"],
            "questions": paired_test(a["per_question"], b["per_question"]),
            "specificity": logr[a["target"]] - sum(others) / len(others),
            "rank_of_target_lift": sorted(logr, key=logr.get, reverse=True).index(a["target"])}


@contextmanager
def steered(lm, vector, layer: int, coef: float):
    """The model with coef x vector added at `layer` for the duration of the block."""
    handle = add_vector(lm, vector, layer, coef)
    try:
        yield lm
    finally:
        handle.remove()


def format_pass_rate(lm, n: int, seed: int = 0) -> dict:
    """How well `lm` keeps the numbers channel's format on `n` prompts: `filter_pass`, the
    chain's filter pass rate under the chain's decoding (sampled at T=1, format-constrained);
    `grammar_ok`, the share of greedy *unconstrained* answers the channel's grammar accepts
    (the model's own format, no grammar to lean on; seed repeats not counted against it)."""
    channel = get_channel("numbers")
    prompts = channel.prompts(n, seed)
    chain_decode = replace(ChainConfig().decode, batch_size=n, top_k=0)
    outs = generate_batch(Teacher(lm), prompts, chain_decode, channel, seed)
    rows = [{**p, "completion": [{"role": "assistant", "content": o["text"]}]}
            for p, o in zip(prompts, outs, strict=True)]
    _, _, stats = filter_rows(rows, FilterConfig(), "numbers")
    free = generate_batch(Teacher(lm), prompts, DecodeConfig(decoding="greedy", constrained=False,
                                                             batch_size=n), channel, seed)
    ok = [channel.accepts(o["text"]) for o in free]
    return {"filter_pass": stats["pass_rate"], "grammar_ok": sum(ok) / n,
            "examples": [o["text"] for o in free[:2]]}


def screen_bank(questions: int | None, out: Path):
    """An AuditConfig over the first `questions` animal questions (None: the lab's bank)."""
    if questions is None:
        return None
    import json

    path = Path(out) / "screen_questions.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    qs = load_questions(bank_path(AuditConfig().questions))[:questions]
    path.write_text(json.dumps({"questions": qs}, indent=1))
    return AuditConfig(questions=str(path))


def run_sweep(cfg: SweepConfig, model: str, out: Path, device: str | None = None) -> list[dict]:
    """Audit lift and format pass rate for every (layer, coefficient); `out/sweep.json` is
    rewritten after each cell, so a long sweep can be read while it runs."""
    trait = get_trait(cfg.trait)
    lm = load_model(model, device=device)
    t0 = time.time()
    bank = screen_bank(cfg.questions, Path(out))
    base = audit_target(lm, trait, cfg=bank)
    cells = [{"layer": None, "coef": 0.0, "mean": base["mean"], "ratio": 1.0,
              **format_pass_rate(lm, cfg.format_prompts, cfg.seed)}]
    prompts = contrast_questions(trait, cfg.seed)
    for layer in cfg.layers:
        vector = trait_vector(lm, trait, layer, prompts)
        for coef in cfg.coefs:
            with steered(lm, vector, layer, coef):
                cmp = compare(audit_target(lm, trait, cfg=bank), base)
                fmt = format_pass_rate(lm, cfg.format_prompts, cfg.seed)
            cells.append({"layer": layer, "coef": coef, "norm": float(vector.norm()),
                          **{k: cmp[k] for k in ("mean", "ratio", "specificity",
                                                 "rank_of_target_lift")}, **fmt})
            write_json(Path(out) / "sweep.json", {"config": to_jsonable(cfg), "model": model,
                                                  "seconds": time.time() - t0, "cells": cells})
    return cells


def replicate_arm(injection: str, trait, seed: int, neutral: bool, model: str, out: Path,
                  device: str | None = None) -> dict:
    """Build one arm's generation-0 teacher (trait or control twin) and audit it; a finished
    arm is read back. Records build and audit seconds (the injection's CPU cost)."""
    path = Path(out) / "audit.json"
    if path.exists():
        return read_json(path)
    t0 = time.time()
    spec = build_teacher(injection, InjectionContext(model=model, trait=trait,
                                                     out=Path(out) / "teacher", seed=seed,
                                                     neutral=neutral, device=device))
    t1 = time.time()
    lm = load_teacher(model, spec, None, device)
    audit = audit_target(lm, trait, system_prompt=spec.system_prompt)
    row = {"injection": injection, "seed": seed, "neutral": neutral, "mean": audit["mean"],
           "panel": audit["panel"], "per_question": audit["per_question"],
           "spec": to_jsonable(spec), "build_seconds": round(t1 - t0, 1),
           "audit_seconds": round(time.time() - t1, 1)}
    write_json(path, row)
    return row


def strength_stats(pairs: list[tuple[dict, dict]], target: str) -> dict:
    """Replicate-level test of trait arm vs control arm: paired t on log mean P(target) (the
    pre-declared primary), on raw P, and on specificity (target log-ratio minus the other
    animals' mean log-ratio, tested against 0)."""
    import math

    logs = [(math.log(a["mean"]), math.log(b["mean"])) for a, b in pairs]
    spec = []
    for a, b in pairs:
        lr = {k: math.log(a["panel"][k] / b["panel"][k]) for k in a["panel"]}
        spec.append(lr[target] - sum(v for k, v in lr.items() if k != target) / (len(lr) - 1))
    log_test = paired_test(*zip(*logs, strict=True))
    return {"replicates": len(pairs), "trait": [a["mean"] for a, _ in pairs],
            "control": [b["mean"] for _, b in pairs],
            "ratio": math.exp(log_test["lift"]), "log_ratio": log_test,
            "raw": paired_test([a["mean"] for a, _ in pairs], [b["mean"] for _, b in pairs]),
            "specificity": {**mean_ci(spec), **paired_test(spec, [0.0] * len(spec))},
            "build_seconds": mean_ci([a["build_seconds"] for a, _ in pairs]
                                     + [b["build_seconds"] for _, b in pairs])["mean"]}


def teacher_strength(injection: str, trait_name: str, seeds: list[int], model: str, out: Path,
                     device: str | None = None) -> dict:
    """Generation-0 strength of an injection against its own control, one replicate per seed;
    writes out/strength.json."""
    trait = get_trait(trait_name)
    pairs = []
    for seed in seeds:
        arms = [replicate_arm(injection, trait, seed, neutral, model,
                              Path(out) / f"s{seed}" / arm, device)
                for arm, neutral in (("trait", False), ("control", True))]
        pairs.append(tuple(arms))
    result = {"injection": injection, "trait": trait_name, "model": model, "seeds": seeds,
              **(strength_stats(pairs, trait.label) if len(pairs) > 1 else {})}
    write_json(Path(out) / "strength.json", result)
    return result


def _write(out: Path | None, name: str, obj: dict) -> None:
    """Record `obj` as out/NAME when an output folder was given (the audits are also printed)."""
    if out is not None:
        write_json(Path(out) / name, obj)


def write_trait_vector(trait: str, out: Path, layer: int | None = None, coef: float = 4.0,
                       seed: int = 0, model: str = "smollm2-135m",
                       adapter: Path | None = None) -> tuple[int, float]:
    """Compute a trait's difference-of-means vector on `model` (plus `adapter`) at `layer`
    (None: the steering default's depth) and save it to `out` with `coef`; returns the layer
    it was taken at and its norm."""
    lm = load_model(model, adapter=adapter)
    cfg = replace(STEERING, layer=layer, coef=coef)
    v, made = build_vector(lm, get_trait(trait), seed, False, cfg)
    save_vector(out, v, resolve_layer(lm, cfg), coef, {**made, "model": model,
                                                        "adapter": str(adapter or "")})
    return resolve_layer(lm, cfg), float(v.norm())


def steer_audit(vector_file: Path, coef: float | None = None, trait: str | None = None,
                audit: str | None = None, model: str = "smollm2-135m",
                adapter: Path | None = None, out: Path | None = None) -> tuple[dict, dict]:
    """Audit `model` (plus `adapter`) with the vector of `vector_file` added (`coef` overrides
    the file's; negative subtracts), beside the same model unsteered, on the trait's audit (or
    `audit`). Writes out/steer.json when `out` is given; returns the steering record and the
    comparison (`compare`, steered against unsteered)."""
    meta = load_vector(vector_file)[3]
    t = get_trait(trait or meta.get("trait"))
    if t is None:
        raise SubliminalError(f"{vector_file}: no trait recorded; pass --trait")
    lm = load_model(model, adapter=adapter)
    plain = audit_target(lm, t, audit)
    handle = attach(lm, vector_file, coef)
    moved = audit_target(lm, t, audit)
    cmp = compare(moved, plain)
    handle.remove()
    _write(out, "steer.json", {"vector": str(vector_file), "steering": handle.record,
                               "model": model, "adapter": str(adapter or ""), **cmp,
                               "plain": plain["panel"], "steered": moved["panel"]})
    return handle.record, cmp


def calm_down_audit(trait: str, adapter: Path | None = None, dpo: Path | None = None,
                    prompt: str = CALM_DOWN, seed: int = 0, model: str = "smollm2-135m",
                    out: Path | None = None) -> dict[str, dict]:
    """The calm-down `prompt` and, with `dpo`, a DPO suppressor (trained into that folder if
    missing) on the teacher `adapter`, each compared with the model as it is on the trait's
    audit. Writes out/calm_down.json when `out` is given; returns {"prompt": comparison,
    "dpo": comparison}."""
    t = get_trait(trait)
    lm = load_model(model, adapter=adapter)
    before = audit_target(lm, t)
    rows = {"prompt": compare(audit_target(lm, t, system_prompt=prompt), before)}
    if dpo is not None:
        train_dpo(model, preference_pairs(t, seed, suppress=True), dpo, seed=seed,
                  base_adapter=adapter, record={"trait": t.name, "suppress": True})
        lm.model = attach_adapter(lm.model, Path(dpo))
        rows["dpo"] = compare(audit_target(lm, t), before)
    _write(out, "calm_down.json", {"trait": t.name, "adapter": str(adapter or ""),
                                   "prompt": prompt, "dpo": str(dpo or ""), **rows})
    return rows
