"""Report: turn a run's audits into summary.json, a table, a verdict per generation and a plot.

    subliminal report runs/chain-owl

Per generation and replicate, the trait-arm student is compared with the control-arm student
of the same replicate (same prompts, seeds and training; a neutral teacher). Three read-outs:
- specificity (primary, decides the verdict): the log-odds of the target's share of the
  catalogue's mass, trait minus control, averaged over questions;
- the target's probability, trait minus control (the raw lift);
- generic drift: log of the total catalogue mass, trait minus control.
Each is tested over replicates (`stats.replicate_test`); question-level figures describe one
pair of models and are labelled as such.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from rich.table import Table

from subliminal.audit import (
    animal_scores,
    log_mass,
    share_among_rest,
    share_logodds,
    side_effect_value,
    target_probs,
    target_share,
)
from subliminal.layout import ARMS, stage_dirs
from subliminal.progress import console
from subliminal.records import completed, is_complete, read_json
from subliminal.schema import VERSION, Probe, Summary
from subliminal.stats import ALPHA, mean_ci, replicate_test, within_pair
from subliminal.trait import get_trait


def pair_metrics(t: dict, c: dict, trait) -> dict:
    """One replicate's trait-vs-control differences (means over the audit's items). Generic
    drift is the animal catalogue's total mass (None for a forced-choice audit, whose options
    always sum to one: its drift shows in the side-effect grid instead)."""
    def mean(x):
        return float(np.mean(x))

    pt, pc = target_probs(t, trait), target_probs(c, trait)
    return {"p_trait": mean(pt), "p_control": mean(pc),
            "share_trait": mean(target_share(t, trait)),
            "share_control": mean(target_share(c, trait)),
            "drift": mean(log_mass(t)) - mean(log_mass(c)) if "animals" in t else None,
            "side_effects": {f: side_effect_value(t["battery"][f]) -
                             side_effect_value(c["battery"][f])
                             for f in t.get("battery", {}) if f in c.get("battery", {})},
            "within_pair": within_pair(pt, pc)}


def verdict(spec: dict, drift: dict | None, raw: dict, others: dict | None = None,
            alpha: float = ALPHA) -> str:
    """The generation's one-line reading of a two-arm comparison over replicates. "Specific"
    needs the target's share to rise with neither generic drift nor another animal's share
    moving significantly (among the non-target animals, from record version 3: see
    `other_animals`); a share lift with either is named for its pattern. Against one
    control twin this is the most a chain can say: teachers of other traits built by the
    same recipe (`subliminal study`, the crossed design) decide specificity."""
    det, (lo, hi) = spec["detectable_lift"], spec["detectable_lift_range"]
    power = (f"detectable share log-odds lift at p<{alpha:g}, 80% power (noncentral t): "
             f"{det:+.3g} (x{math.exp(det):.2f} odds; {lo:+.2g} to {hi:+.2g} over the "
             "spread's 95% range)" if math.isfinite(det)
             else "one replicate: nothing is detectable")
    drift_p = drift["p_value"] if drift else 1.0
    others = others or {}
    moved = [a for a, p in others.get("among_rest", others).get("p_value", {}).items()
             if p < alpha]
    if spec["p_value"] < alpha and spec["mean"] > 0:
        if drift_p < alpha:
            return (f"generic drift, not specific (share p={spec['p_value']:.2g} with drift "
                    f"p={drift_p:.2g}); {power}")
        if moved:  # among the rest, shares are relative: one animal's move moves them all
            what = (f"the other animals' profile moved too (at p<{alpha:g}: {', '.join(moved)})"
                    if "among_rest" in others else f"other animals moved too: {', '.join(moved)}")
            return f"profile shift, not specific (share p={spec['p_value']:.2g}; {what}); {power}"
        return (f"specific transfer against the control twin (share p={spec['p_value']:.2g}; "
                f"the crossed study decides specificity); {power}")
    if min(drift_p, raw["p_value"]) < alpha:
        return (f"generic drift, not specific (drift p={drift_p:.2g}, raw lift "
                f"p={raw['p_value']:.2g}, share p={spec['p_value']:.2g}); {power}")
    return f"no transfer detected (share p={spec['p_value']:.2g}); {power}"


def generation_row(g: int, pairs: list[dict], others: dict) -> dict:
    """Replicate-level statistics of one generation from its per-replicate pair metrics.
    Replicates that are one pair repeated (identical lifts) count once: n = 1, no test."""
    repeated = identical([p["share_trait"] - p["share_control"] for p in pairs])
    pairs = pairs[:1] if repeated else pairs
    raw = replicate_test([p["p_trait"] - p["p_control"] for p in pairs])
    spec = replicate_test([p["share_trait"] - p["share_control"] for p in pairs])
    drift = replicate_test([p["drift"] for p in pairs]) if pairs[0]["drift"] is not None \
        else None
    effects = {f: replicate_test([p["side_effects"][f] for p in pairs])
               for f in pairs[0]["side_effects"]}
    ci = lambda k: {k2: v for k2, v in mean_ci([p[k] for p in pairs]).items()  # noqa: E731
                    if k2 in ("mean", "ci")}
    return {"generation": g, "n_replicates": len(pairs),
            "trait": ci("p_trait"), "control": ci("p_control"),
            "lift": raw["mean"], "lift_ci": raw["ci"], "p_value": raw["p_value"],
            "lifts": raw["lifts"], "p_sign_flip": raw["p_sign_flip"],
            "specificity": {**spec, "trait_share_logodds": ci("share_trait"),
                            "control_share_logodds": ci("share_control")},
            "generic_drift": drift, "other_animals_share_lift": others,
            "side_effects": effects,
            "within_pair_descriptions": [p["within_pair"] for p in pairs],
            # Generation 0 compares the teachers themselves: how strongly the injection moved
            # the trait against its control twin, not a transfer.
            "identical_replicates": repeated,
            "verdict": (teacher_verdict if g == 0 else str)(
                ONE_PAIR if repeated else verdict(spec, drift, raw, others))}


def teacher_verdict(line: str) -> str:
    """Generation 0 compares teachers, not students: say 'effect', never 'transfer'."""
    return "teachers (injection vs control twin): " + line.replace(
        "specific transfer", "specific effect").replace("no transfer detected",
                                                         "no effect detected")


# Replicates whose teachers did not differ (e.g. a run made before prompt paraphrases varied
# by replicate) are one observation, however many folders hold it.
ONE_PAIR = ("one pair repeated (every replicate had the same teachers): counted once, no "
            "replicate-level test; the question-level description is in "
            "within_pair_descriptions")


def identical(lifts: list[float]) -> bool:
    """Replicates that are one observation repeated (more than one, no spread at all)."""
    return len(lifts) > 1 and float(np.ptp(lifts)) == 0.0


def summarize(out: Path, trait_name: str, audits: dict, replicates: int,
              generations: int, version: int = VERSION) -> Summary:
    """Summary of whatever is audited so far. `audits` maps 'rep{r}/{arm}/gen{k}' (and
    'base') to probe results; every filter's per-rule pass rates ride along. `version`
    recomputes an older record as it was made (before 3: no `among_rest`, and the verdict
    read the plain shares)."""
    trait = get_trait(trait_name)
    rows = []
    for g in range(generations + 1):
        reps = [r for r in range(replicates)
                if f"rep{r}/trait/gen{g}" in audits and f"rep{r}/control/gen{g}" in audits]
        if not reps:
            continue
        pairs = [pair_metrics(audits[f"rep{r}/trait/gen{g}"], audits[f"rep{r}/control/gen{g}"],
                              trait) for r in reps]
        others = (other_animals(audits, reps, g, trait_name, among_rest=version >= 3)
                  if "animals" in audits[f"rep{reps[0]}/trait/gen{g}"] else {})
        rows.append(generation_row(g, pairs, others))
    base = audits.get("base")
    return Summary(version=version, trait=trait_name, audit=trait.audit,
                   probe=base.get("probe", base.get("format")) if base else None,
                   unit_of_evidence="replicate (teacher seed x student seed x data seed)",
                   base=mean_ci(target_probs(base, trait)) if base else None, generations=rows,
                   filter_pass_rates=pass_rates(out), dose=doses(out))


def doses(out: Path) -> dict:
    """Per replicate and generation: every arm's kept rows, the equal dose (RUN/dose.json),
    and what each student trained on (rows, steps, last loss, from its complete.json)."""
    out = Path(out)
    record = read_json(out / "dose.json") if (out / "dose.json").exists() else {}
    for path in sorted(out.glob("rep*/*/gen*/distill*/complete.json")):
        rep, arm, gen, student = path.parts[-5:-1]
        done = read_json(path)
        record.setdefault(rep, {}).setdefault(gen, {}).setdefault("trained", {})[
            f"{arm}/{student}"] = {k: done.get(k) for k in ("rows", "steps", "final_loss")}
    return record


def pass_rates(out: Path) -> dict:
    """Each generation's filter record: overall and per-rule pass rates."""
    rates = {}
    for path in sorted(Path(out).glob("rep*/*/gen*/filter/stats.json")):
        stats = read_json(path)
        key = "/".join(path.parts[-5:-2])
        rates[key] = {"rows": stats["rows"], "pass_rate": stats["pass_rate"],
                      "rule_pass_rate": stats.get("rule_pass_rate", {})}
    return rates


def other_animals(audits: dict, reps: list[int], g: int, trait: str,
                  among_rest: bool = True) -> dict:
    """Share log-odds lift of every catalogue animal (mean over replicates, and the t-test p
    over replicates of the animals other than the target): the target should lead it, and
    no other animal should move, for the transfer to be specific. `among_rest` (record
    version 3 on) adds each other animal's lift and p with the target left out of its share
    (`share_among_rest`): the verdict reads those, so a target that takes most of the mass
    does not make every other animal 'move' by arithmetic alone."""
    animals = audits[f"rep{reps[0]}/trait/gen{g}"]["animals"]

    def lifts(a: str, share) -> list[float]:
        return [float(np.mean(share(audits[f"rep{r}/trait/gen{g}"], a)) -
                      np.mean(share(audits[f"rep{r}/control/gen{g}"], a))) for r in reps]

    plain = {a: lifts(a, share_logodds) for a in animals}
    out = {a: float(np.mean(v)) for a, v in plain.items()}
    p = {a: replicate_test(v)["p_value"] for a, v in plain.items() if a != trait}
    ranked = sorted(out, key=lambda a: -out[a])
    result = {"lift": out, "p_value": p, "target_rank": ranked.index(trait) + 1,
              "of": len(ranked)}
    if among_rest and len(animals) > 2:  # with two animals there is no rest to share
        rest = {a: lifts(a, lambda res, b: share_among_rest(res, b, trait))
                for a in animals if a != trait}
        result["among_rest"] = {"lift": {a: float(np.mean(v)) for a, v in rest.items()},
                                "p_value": {a: replicate_test(v)["p_value"]
                                            for a, v in rest.items()}}
    return result


def table(summary: dict, partial: bool = False) -> Table:
    head = "PARTIAL (unfinished run, audits so far) — " if partial else ""
    t = Table(title=f"{head}{summary['trait']}: trait arm vs control arm, {summary['probe']} "
                    f"probe — means over replicates [95% CI]; tests over replicates")
    for col in ("gen", "n", "P trait", "P control", "share log-odds lift", "p", "drift",
                "rank"):
        t.add_column(col, justify="right")
    num = lambda d: f"{d['mean']:+.3g}" if d else "n/a"  # noqa: E731
    fmt = lambda x: f"{x['mean']:.4g} [{x['ci'][0]:.3g}, {x['ci'][1]:.3g}]"  # noqa: E731
    for r in summary["generations"]:
        s, d = r["specificity"], r["generic_drift"]
        t.add_row(str(r["generation"]), str(r["n_replicates"]), fmt(r["trait"]),
                  fmt(r["control"]), f"{s['mean']:+.3g} [{s['ci'][0]:+.3g}, {s['ci'][1]:+.3g}]",
                  f"{s['p_value']:.2g}", num(d), _rank(r))
    return t


def _rank(row: dict) -> str:
    o = row["other_animals_share_lift"]
    return f"{o['target_rank']}/{o['of']}" if o else "n/a"


def side_effect_table(summary: dict) -> Table | None:
    """Generation x audit family: mean lift (trait arm - control arm) over replicates, p."""
    rows = [r for r in summary["generations"] if r.get("side_effects")]
    if not rows:
        return None
    families = list(rows[0]["side_effects"])
    t = Table(title="Side effects: each family's audit, trait arm - control arm (mean over "
                    "replicates, t-test p; animal = log total animal mass)")
    t.add_column("gen", justify="right")
    for f in families:
        t.add_column(f, justify="right")
    for r in rows:
        t.add_row(str(r["generation"]), *(f"{r['side_effects'][f]['mean']:+.3g} "
                                          f"(p={r['side_effects'][f]['p_value']:.2g})"
                                          for f in families))
    return t


def animal_table(result: dict) -> Table:
    """Mean probability of each catalogue animal in one probe result, highest first
    (a description of one model: the CI is over questions)."""
    t = Table(title=f"{result['probe']} probe: P(animal), mean over questions [95% CI over "
                    "questions, one model]")
    for col in ("animal", "mean", "95% CI"):
        t.add_column(col, justify="right")
    stats = {a: mean_ci(animal_scores(result, a)) for a in result["animals"]}
    for a, s in sorted(stats.items(), key=lambda kv: -kv[1]["mean"]):
        t.add_row(a, f"{s['mean']:.4g}", f"[{s['ci'][0]:.4g}, {s['ci'][1]:.4g}]")
    return t


def plot(summary: dict, path: Path) -> None:
    """The primary read-out across generations: share log-odds lift with its replicate CI,
    each replicate's lift as a dot, and generic drift beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["generations"]
    # Teachers sit orders of magnitude above students: plot students, quote teachers.
    teachers = next((r for r in rows if r["generation"] == 0), None)
    rows = [r for r in rows if r["generation"] > 0] or rows
    gens = [r["generation"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, key, name in ((axes[0], "specificity", "target share log-odds lift"),
                          (axes[1], "generic_drift", "log total animal mass lift")):
        if rows[0][key] is None:
            _effects_panel(ax, rows)
            continue
        mean = [r[key]["mean"] for r in rows]
        err = [[m - r[key]["ci"][0] for m, r in zip(mean, rows, strict=True)],
               [r[key]["ci"][1] - m for m, r in zip(mean, rows, strict=True)]]
        err = np.nan_to_num(np.array(err))
        ax.errorbar(gens, mean, yerr=err, marker="o", capsize=4, color="tab:red")
        for g, r in zip(gens, rows, strict=True):
            ax.scatter([g] * len(r[key]["lifts"]), r[key]["lifts"], s=12, color="tab:gray")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel("generation (0 = teacher)")
        ax.set_ylabel(f"{name} (trait - control)")
        ax.set_xticks(gens)
    note = (f"; teachers (gen 0): share lift {teachers['specificity']['mean']:+.2f}"
            if teachers is not None and rows[0] is not teachers else "")
    fig.suptitle(f"{summary['trait']}: students, trait vs control arm, per replicate (dots), "
                 f"mean and 95% CI over replicates{note}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _effects_panel(ax, rows: list[dict]) -> None:
    """For forced-choice traits: the side-effect grid as a heat map (gen x family)."""
    families = list(rows[0]["side_effects"])
    if not families:  # --no-side-effects: no battery was read
        ax.axis("off")
        ax.text(0.5, 0.5, "side effects not audited\n(--no-side-effects)", ha="center",
                va="center", fontsize=8)
        return
    grid = np.array([[r["side_effects"][f]["mean"] for f in families] for r in rows])
    lim = float(np.abs(grid).max()) or 1.0
    im = ax.imshow(grid, cmap="coolwarm", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(families)), families, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), [f"gen {r['generation']}" for r in rows])
    ax.set_title("side effects (trait - control)", fontsize=8)
    ax.figure.colorbar(im, ax=ax)


PARTIAL = "summary.partial"  # an unfinished run's summary: never in summary.json's place


def write_summary(out: Path, summary: dict, partial: bool = False) -> Summary:
    """summary.json + summary.png, and the table and verdicts on the console. A `partial`
    summary (the run is unfinished) goes to summary.partial.json/.png, labelled so, and
    never replaces a finished run's summary.json; the final summary removes it."""
    out = Path(out)
    name = PARTIAL if partial else "summary"
    summary = Summary.of(summary)
    summary.save(out / f"{name}.json")
    if summary["generations"]:
        plot(summary, out / f"{name}.png")
    if not partial:
        for stale in (out / f"{PARTIAL}.json", out / f"{PARTIAL}.png"):
            stale.unlink(missing_ok=True)
    console.print(table(summary, partial))
    effects = side_effect_table(summary)
    if effects is not None:
        console.print(effects)
    for r in summary["generations"]:
        console.print(f"gen {r['generation']}: {r['verdict']}")
    return summary


def report(run: Path) -> Summary:
    """Recompute a run's summary from its audit files (so a summary is always what the
    current statistics make of the probes on disk), then render it. A finished run's goes to
    summary.json. An unfinished run's says which audits are missing (`unfinished`, and one
    line on the console) and goes to summary.partial.json: a summary.json is never
    rewritten from a partial run."""
    run = Path(run)
    cfg = read_json(run / "config.json")
    audits = collect_audits(run, cfg)
    summary = summarize(run, cfg["trait"], audits, cfg["replicates"], cfg["generations"])
    missing = [str(d.relative_to(run)) for key, d in audit_dirs(run, cfg).items()
               if key not in audits]
    # Finished: complete.json (checked against config.json) and every audit still there.
    finished = completed(run)
    if finished and not missing:
        return write_summary(run, summary)
    redo = ("audits were removed after it finished: delete its complete.json and run its "
            "chain command again" if finished else "run its chain command again to finish it")
    console.print(f"[yellow]{run}: unfinished run: {unfinished(missing, len(audits))}; "
                  f"partial summary in {PARTIAL}.json (summary.json untouched); {redo}"
                  "[/yellow]", soft_wrap=True)
    return write_summary(run, {**summary, "unfinished": missing}, partial=True)


def unfinished(missing: list[str], done: int, shown: int = 8) -> str:
    """What an unfinished run lacks, in words: the missing audits (the first few)."""
    if not missing:
        return f"all {done} audits are done but the run has no complete.json"
    more = f" and {len(missing) - shown} more" if len(missing) > shown else ""
    return (f"{len(missing)} of {len(missing) + done} audits missing: "
            f"{', '.join(missing[:shown])}{more}")


def audit_dirs(run: Path, cfg: dict) -> dict[str, Path]:
    """Every audit folder a chain run plans: 'base' and 'rep{r}/{arm}/gen{k}' -> folder."""
    where = {"base": run / "base" / "audit"}
    where.update({f"rep{r}/{arm}/gen{k}": stage_dirs(run, r, arm, k) / "audit"
                  for r in range(cfg["replicates"]) for arm in ARMS
                  for k in range(cfg["generations"] + 1)})
    return where


def collect_audits(run: Path, cfg: dict) -> dict:
    """Every finished audit of a chain run: 'base' and 'rep{r}/{arm}/gen{k}' -> probe."""
    return {key: Probe.load(d / "probe.json") for key, d in audit_dirs(run, cfg).items()
            if is_complete(d)}
