"""`subliminal scan DATA --out DIR`: the verdict and the report (scan.json + scan.md).

    subliminal scan rows.jsonl --out scan/

The verdict is one sentence with its evidence and its power. `complete: true` is written only
when every requested part finished; a report written along the way says which parts are done.
"""

from __future__ import annotations

from pathlib import Path

from subliminal.records import write_json


def verdict(rank: dict | None, probe: dict | None, alpha: float = 0.05) -> str:
    """One sentence: which trait stands out (with z, stability, test, probe) or none."""
    parts = []
    named = bool(rank is not None and rank["stands_out"])
    if rank is not None:
        top, t = rank["top"], rank["tests"][rank["top"]]
        ev = (f"z={rank['z_top']:.1f}, z gap {rank['z_gap']:.1f}, top in "
              f"{rank['top_stability']:.0%} of bootstraps; contrast {t['contrast']:+.4f} "
              f"nats/token, Bonferroni p={t['p_bonferroni']:.2g}; {rank['rows']} rows scored"
              + (f", calibrated on {rank['reference_rows']} BASE rows" if rank.get("calibrated")
                 else ", uncalibrated"))
        if rank["stands_out"]:
            parts.append(f"{top} stands out ({ev}")
        else:
            parts.append(f"no trait among the catalogue stands out: the top is {top} ({ev}); "
                         f"no catalogue trait's contrast exceeds "
                         f"{max(rank['max_contrast_upper'], 0):.4f} nats/token at 95% "
                         f"confidence at this sample size")
        if rank["stands_out"] and probe is None:
            parts[-1] += ")"
        anyt = rank.get("any_trait")
        if anyt and anyt["significant"] and not rank["stands_out"]:
            kind = "adapters" if rank.get("injection") == "adapter" else "prompts"
            parts.append(f"but DATA is likelier under the trait {kind} in general than BASE's "
                         f"own completions ({anyt['shift']:+.4f} nats/token, 95% CI "
                         f"{anyt['ci'][0]:+.4f} to {anyt['ci'][1]:+.4f}, p={anyt['p_value']:.2g})"
                         ": a trait-injected teacher may have written it")
    if probe is not None:
        n_animals = len(probe["lifts"])
        name = rank["top"] if named else probe["top_lift"]
        lift = probe["lifts"][name]
        def rose(v: dict) -> bool:
            return v["p_value"] * n_animals < alpha and v["lift"] > 0

        sig = rose(lift)
        n_rose = sum(rose(v) for v in probe["lifts"].values())
        text = (f"probe lift of {name} {lift['lift']:+.4f} (95% CI {lift['ci'][0]:+.4f} to "
                f"{lift['ci'][1]:+.4f}, p={lift['p_value']:.2g}, {probe['rows']} rows, "
                f"{probe['questions']} questions{'; significant' if sig else ''}; "
                f"{n_rose} of {n_animals} animals rose significantly)")
        if named:
            parts[-1] += f"; {text})"
        else:
            parts.append(text)
        named = named or sig
    if named:
        # Measured, not assumed (docs/scan_validation.md): on 135M adapter teachers the
        # likelihood ranking named the wrong animal and the probe raised nearly every animal.
        parts.append("the animal named is unconfirmed: in validation neither the likelihood "
                     "ranking nor the probe singled out the teacher's animal")
    return "; ".join(parts) + "." if parts else "nothing was measured."


def _fmt(x, digits: int = 4) -> str:
    return f"{x:+.{digits}f}" if isinstance(x, float) else str(x)


def markdown(report: dict) -> str:
    """A human-readable scan.md."""
    src, st = report["source"], report.get("static", {})
    lines = [f"# Scan of `{src['data']}`", "",
             f"**Verdict:** {report.get('verdict', '(not reached)')}", "",
             f"Complete: **{report['complete']}** — parts done: "
             f"{', '.join(k for k, v in report['parts'].items() if v == 'done')}; "
             f"not done: {', '.join(k for k, v in report['parts'].items() if v != 'done') or '-'}",
             "", "## Data", "",
             f"- format {src['format']}, columns `{src['columns']}`, rows {src['rows']}, "
             f"bad rows skipped {src['skipped']}"
             + (" (stopped at --max-rows)" if src.get("truncated_at_max_rows") else "")]
    if st:
        fam = st["family"]
        lines += [f"- duplicates: {st['duplicates']['rows']} rows "
                  f"({st['duplicates']['rate']:.1%})",
                  f"- format family: **{fam['majority']}** ("
                  + ", ".join(f"{k} {v:.0%}" for k, v in fam["shares"].items()) + ")",
                  "- leaked trait words: "
                  + (", ".join(f"{k} {v['completion_rows']} rows (e.g. "
                               f"{', '.join(v['completion_examples'][:3])})"
                               for k, v in st["leaks"]["traits"].items()
                               if v["completion_rows"]) or "none in completions"),
                  f"- numbers rows: {st['numbers']['rows']}; banned numbers in "
                  f"{st['numbers']['banned']['rows']}; format violations in "
                  f"{st['numbers']['format_violations']['rows']} "
                  f"{st['numbers']['format_violations']['reasons']}"]
    lk = report.get("likelihood")
    if lk:
        lines += ["", "## Likelihood shift (trait-injected minus plain BASE, nats/token)", "",
                  f"Injection: `{lk.get('injection', 'prompt')}`.", "",
                  f"{lk['rows_scored']} rows scored ({lk['sample']}), context "
                  f"`{lk['context']}`, {lk['seconds']:.1f} s, {lk['rows_per_s']:.2f} rows/s "
                  f"({lk['tokens_per_row']:.0f} tokens/row × {len(lk['traits']) + 1} "
                  "conditions)", "",
                  "| trait | mean shift | z | top in bootstraps | contrast | Bonferroni p |",
                  "|---|---|---|---|---|---|"]
        for t in lk["ranking"]:
            ts = lk["tests"][t]
            lines.append(f"| {t} | {lk['mean_shift'][t]:+.4f} | {lk['z'][t]:+.2f} | "
                         f"{lk['bootstrap_top_share'][t]:.0%} | {ts['contrast']:+.4f} | "
                         f"{ts['p_bonferroni']:.2g} |")
        lines += ["", f"Top carrier rows for {lk['top']}:", ""]
        lines += [f"- `{c['id']}` contrast {c['contrast']:+.3f}: {c['completion'][:60]!r}"
                  for c in lk["carriers"]]
    pr = report.get("probe")
    if pr:
        kind = "constrained" if pr["constrained_control"] else "free"
        lines += ["", "## Probe fine-tune (data student minus control student)", "",
                  f"{pr['rows']} rows, control {kind}, {pr['questions']} questions", "",
                  "| animal | lift | 95% CI | p |", "|---|---|---|---|"]
        for a, v in sorted(pr["lifts"].items(), key=lambda kv: -kv[1]["lift"]):
            lines.append(f"| {a} | {v['lift']:+.4f} | [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}] | "
                         f"{v['p_value']:.2g} |")
    cl = report.get("clean")
    if cl:
        lines += ["", "## Cleaning", "",
                  f"- trait {cl['trait']}: {cl['tokens_changed']} of {cl['tokens_total']} "
                  f"completion tokens changed in {cl['rows_changed']} of {cl['rows']} rows "
                  f"(ratio > {cl['threshold_llr']:.3f}, the {cl['quantile']:.0%} quantile)",
                  f"- shift {cl['shift_before']:+.4f} → {cl['shift_after']:+.4f} nats/token",
                  f"- cleaned data: `{cl['out']}`; every change: `{cl['changes_file']}`"]
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict) -> None:
    """Write scan.json then scan.md (both atomically replaced)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "scan.json", report)
    tmp = out / "scan.md.tmp"
    tmp.write_text(markdown(report))
    tmp.replace(out / "scan.md")
