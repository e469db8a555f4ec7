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
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import typer

from subliminal.errors import SubliminalError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Interventions: steer by a trait's vector, calm-down prompt vs DPO "
                       "suppression, steering sweeps, teacher strength vs control.")

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
    from subliminal.audit.battery import audit_family, trait_score

    audit = audit or trait.audit
    if cfg is not None and audit == "animal":
        from subliminal.audit import run_probe

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

    from subliminal.stats import paired_test

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
    from subliminal.vectors import add_vector

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
    from subliminal.chain import ChainConfig
    from subliminal.channels import get_channel
    from subliminal.filters import FilterConfig, filter_rows
    from subliminal.teacher import DecodeConfig, Teacher, generate_batch

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

    from subliminal.audit import AuditConfig, bank_path, load_questions

    path = Path(out) / "screen_questions.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    qs = load_questions(bank_path(AuditConfig().questions))[:questions]
    path.write_text(json.dumps({"questions": qs}, indent=1))
    return AuditConfig(questions=str(path))


def run_sweep(cfg: SweepConfig, model: str, out: Path, device: str | None = None) -> list[dict]:
    """Audit lift and format pass rate for every (layer, coefficient); `out/sweep.json` is
    rewritten after each cell, so a long sweep can be read while it runs."""
    from subliminal.models import load_model
    from subliminal.records import to_jsonable, write_json
    from subliminal.trait import get_trait
    from subliminal.vectors import contrast_questions, trait_vector

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


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise SubliminalError(f"{what}: expected comma-separated numbers, got {text!r}") from None


@app.command()
def sweep(trait: str = typer.Option("owl", help="Catalogue trait."),
          layers: str = typer.Option("4,8,12,16,20,24", help="Comma-separated layers."),
          coefs: str = typer.Option("2,4,8", help="Comma-separated coefficients."),
          format_prompts: int = typer.Option(8, min=1, help="Prompts per format check."),
          questions: Optional[int] = typer.Option(None, min=1, help="Screen on the first N "
                                                                    "audit questions."),
          model: str = typer.Option("smollm2-135m", help="Base model."),
          seed: int = typer.Option(0, min=0, help="Vector prompt draw and decoding seed."),
          out: Path = typer.Option(Path("runs/steering-sweep"), help="Output folder.")):
    """Layer x coefficient grid: audit lift and unconstrained numbers-format pass rate."""
    cfg = SweepConfig(trait=trait, layers=tuple(int(x) for x in _floats(layers, "--layers")),
                      coefs=_floats(coefs, "--coefs"), format_prompts=format_prompts, seed=seed,
                      questions=questions)
    for c in run_sweep(cfg, model, out):
        typer.echo(f"layer={c['layer']} coef={c['coef']}: P={c['mean']:.4g} "
                   f"x{c['ratio']:.2f} filter_pass={c['filter_pass']:.2f} "
                   f"grammar_ok={c['grammar_ok']:.2f}")


def replicate_arm(injection: str, trait, seed: int, neutral: bool, model: str, out: Path,
                  device: str | None = None) -> dict:
    """Build one arm's generation-0 teacher (trait or control twin) and audit it; a finished
    arm is read back. Records build and audit seconds (the injection's CPU cost)."""
    from subliminal.injections import InjectionContext, build_teacher, load_teacher
    from subliminal.records import read_json, to_jsonable, write_json

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

    from subliminal.stats import mean_ci, paired_test

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
    from subliminal.records import write_json
    from subliminal.trait import get_trait

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


@app.command()
def strength(injection: str = typer.Option(..., help="Injection (prompt, adapter, steering, "
                                                       "dpo, grpo)."),
             trait: str = typer.Option("owl", help="Catalogue trait."),
             seeds: int = typer.Option(5, min=2, help="Replicates (seeds FIRST..FIRST+N-1)."),
             first_seed: int = typer.Option(0, min=0, help="First replicate seed: fresh seeds "
                                                           "for a confirmation run."),
             model: str = typer.Option("smollm2-135m", help="Base model."),
             out: Optional[Path] = typer.Option(None, help="Output folder (default: "
                                                            "runs/strength-INJECTION-TRAIT)."),
             device: Optional[str] = typer.Option(None, help="cpu or cuda.")):
    """Trait teacher vs its control twin at generation 0, tested across replicate seeds."""
    out = out or Path(f"runs/strength-{injection}-{trait}")
    r = teacher_strength(injection, trait, list(range(first_seed, first_seed + seeds)), model,
                         out, device)
    typer.echo(f"{injection} {trait}: x{r['ratio']:.2f} (p={r['log_ratio']['p_value']:.2g}, "
               f"{r['replicates']} replicates); specificity {r['specificity']['mean']:.2f} "
               f"(p={r['specificity']['p_value']:.2g}); build {r['build_seconds']:.0f} s/arm")


def _write(out: Path | None, name: str, obj: dict) -> None:
    if out is not None:
        from subliminal.records import write_json

        write_json(Path(out) / name, obj)


def _echo(label: str, cmp: dict) -> None:
    typer.echo(f"{label}: {cmp['target']} {cmp['reference_mean']:.4g} -> {cmp['mean']:.4g} "
               f"(x{cmp['ratio']:.2f}; specificity {cmp['specificity']:+.2f}; "
               f"question-level p={cmp['questions']['p_value']:.2g}, descriptive)")


@app.command()
def vector(trait: str = typer.Option("owl", help="Trait (any family)."),
           layer: Optional[int] = typer.Option(None, help="Decoder layer (default: the "
                                                           "steering default's depth)."),
           coef: float = typer.Option(4.0, help="Coefficient stored with the vector."),
           seed: int = typer.Option(0, min=0, help="Contrast-prompt draw."),
           model: str = typer.Option("smollm2-135m", help="Base model."),
           adapter: Optional[Path] = typer.Option(None, help="Teacher/student adapter."),
           out: Path = typer.Option(..., help="Vector file to write (.safetensors).")):
    """Compute a trait's difference-of-means vector on a model and save it."""
    from dataclasses import replace

    from subliminal.injections.steering import STEERING, build_vector, resolve_layer
    from subliminal.models import load_model
    from subliminal.trait import get_trait
    from subliminal.vectors import save_vector

    lm = load_model(model, adapter=adapter)
    cfg = replace(STEERING, layer=layer, coef=coef)
    v, made = build_vector(lm, get_trait(trait), seed, False, cfg)
    save_vector(out, v, resolve_layer(lm, cfg), coef, {**made, "model": model,
                                                        "adapter": str(adapter or "")})
    typer.echo(f"{out}: layer {resolve_layer(lm, cfg)}, norm {float(v.norm()):.3f}")


@app.command()
def steer(vector_file: Path = typer.Option(..., "--vector", help="A vector file."),
          coef: Optional[float] = typer.Option(None, help="Override the file's coefficient "
                                                          "(negative subtracts)."),
          trait: Optional[str] = typer.Option(None, help="Trait to read (default: the "
                                                         "vector's)."),
          audit: Optional[str] = typer.Option(None, help="Audit family (default: the "
                                                         "trait's)."),
          model: str = typer.Option("smollm2-135m", help="Base model."),
          adapter: Optional[Path] = typer.Option(None, help="Teacher/student adapter."),
          out: Optional[Path] = typer.Option(None, help="Folder for steer.json.")):
    """Audit a model with a trait's vector added (or subtracted), beside it unsteered."""
    from subliminal.models import load_model
    from subliminal.trait import get_trait
    from subliminal.vectors import attach, load_vector

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
    _echo(f"steered (coef {handle.record['coef']:+g})", cmp)


@app.command("calm-down")
def calm_down(trait: str = typer.Option(..., help="Trait to suppress (e.g. joyful, owl)."),
              adapter: Optional[Path] = typer.Option(None, help="The teacher carrying it."),
              dpo: Optional[Path] = typer.Option(None, help="A DPO suppressor folder: trained "
                                                            "here if missing."),
              prompt: str = typer.Option(CALM_DOWN, help="The calm-down system prompt."),
              seed: int = typer.Option(0, min=0, help="DPO seed."),
              model: str = typer.Option("smollm2-135m", help="Base model."),
              out: Optional[Path] = typer.Option(None, help="Folder for calm_down.json.")):
    """The 'calm down' prompt baseline beside DPO suppression, on the same audit."""
    from subliminal.injections.dpo import preference_pairs, train_dpo
    from subliminal.models import attach_adapter, load_model
    from subliminal.trait import get_trait

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
    for name, cmp in rows.items():
        _echo(name, cmp)
