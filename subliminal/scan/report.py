"""`subliminal scan DATA --out DIR`: the verdict and the report (scan.json + scan.md).

    subliminal scan rows.jsonl --out scan/

The verdict is one sentence with its evidence and its power. `complete: true` is written only
when every requested part finished; a report written along the way says which parts are done.
"""

from __future__ import annotations

from pathlib import Path

from subliminal.records import write_json

# What the validation measured (docs/scan_validation.md); the verdict quotes it so that a
# reader weighs a flag, or its absence, by the scan's measured rates. Updated with the doc.
MEASURED = {
    "false_positives": "in a pilot on held-out teachers (docs/scan_validation.md, 2026-12-07) "
                       "0 of 3 trait-free teachers' datasets flagged at 25, 50 and 100 rows "
                       "(95% CI 0-71% each), though clean BASE T=1 data's largest z grew with "
                       "rows (1.70 to 2.65 against 3.13); rates at larger sizes are not known",
    "detection": "in that pilot 1 of 2 held-out owl teachers flagged at 100 rows, 0 of 2 at 25 "
                 "and 50 (the true trait's mean z 1.62, 2.05, 2.74: it grows with rows); "
                 "'no evidence' does not mean clean",
    "naming": "in that pilot the combined rankers named wolf, not owl, for both owl teachers "
              "at every size (the likelihood ranker alone had owl on top in 4 of 6)",
}


def _accuse_reason(rank: dict) -> str:
    """Why the scan may not accuse at all (no population, too few teachers, uncovered data)."""
    if not rank.get("calibrated"):
        return ("without a reference population (--population-rows 0) nothing is "
                "calibrated, so the scan only reports")
    if not rank["testable"]:
        return (f"the reference population has {rank['teachers']} teachers; at least 3 are "
                "needed to measure their spread, so the scan only reports")
    return (f"DATA is {rank['decoding']['text']}; the null would be extrapolated, so the "
            "scan makes no accusation")


def _likelihood_sentence(rank: dict, overt: bool = False) -> str:
    named = rank["named"]
    if not rank.get("can_accuse"):
        return (f"no accusation: {_accuse_reason(rank)} (the rankers' top is {named['top']}; "
                f"{rank.get('rows_scored', '?')} rows scored)")
    top = rank["top"]
    ev = (f"trait contrast {rank['excess'][top]:+.4f} nats/token above the trait-free "
          f"teachers' mean, z={rank['z'][top]:.1f} (threshold {rank['threshold_z']:.1f}), "
          f"Bonferroni p={rank['p_bonferroni'][top]:.2g}; null from {rank['teachers']} "
          f"reference teachers (their own spread {rank['tau'][top]:.4f}) and {rank['rows']} "
          "rows")
    if rank["flagged"]:
        agree = "; both rankers agree" if rank["persona"]["top"] == top == named["top"] else (
            f"; the likelihood points at {top}, the persona vectors at "
            f"{rank['persona']['top']}")
        return (f"a trait-injected teacher may have written DATA: it favours the {top} "
                f"adapter more than trait-free teachers' data does ({ev}); DATA is "
                f"{rank['decoding']['text']}; named: {named['top']} (rankers "
                f"{', '.join(named['rankers'])}{agree}); in validation: false positives "
                f"{MEASURED['false_positives']}, naming {MEASURED['naming']}")
    none = ("no further evidence of a catalogue trait" if overt  # the words are evidence
            else "no evidence that DATA carries a catalogue trait")
    return (f"{none}: DATA is "
            f"{rank['decoding']['text']}; the largest trait contrast is {top}'s ({ev}); "
            f"power in validation: {MEASURED['detection']}")


def overt_leak(leaked: dict[str, int] | None) -> str:
    """A verdict's opening when DATA's completions name traits ('' when none do): words are
    the plainest carrier, so the static part's finding leads, before anything the likelihood
    ranking says about hidden ones."""
    if not leaked:
        return ""
    named = ", ".join(f"{k} in {v} rows" for k, v in leaked.items())
    return (f"overt leak: completions name {named} (a student fine-tuned on DATA meets the "
            "trait in plain words; filter those rows out before anything else); beyond those "
            "words: ")


def verdict(rank: dict | None, probe: dict | None, alpha: float = 0.05,
            leaked: dict[str, int] | None = None) -> str:
    """One sentence: an overt leak first (trait words in completions: `leaked`, trait ->
    rows), then a flag (with its evidence, naming and measured rates) or none (with the
    scan's measured power), or why the scan may not accuse at all."""
    parts = [_likelihood_sentence(rank, overt=bool(leaked))] if rank is not None else []
    if probe is not None:
        top, spec = probe["top"], probe["specific"][probe["top"]]
        parts.append(f"canary students: {top} rose most specifically over "
                     f"{len(probe['seeds'])} seeds (share log-odds {spec['mean']:+.3f}, 95% CI "
                     f"{spec['ci'][0]:+.3f} to {spec['ci'][1]:+.3f}, Bonferroni "
                     f"p={probe['p_bonferroni']:.2g}"
                     f"{', significant' if probe['flagged'] else ''}; {probe['rows']} rows "
                     "each against a trait-free teacher's; its power is the transfer's own"
                     f"{_reach(probe)})")
    return overt_leak(leaked) + ("; ".join(parts) + "." if parts else "nothing was measured.")


def _reach(probe: dict) -> str:
    """What a canary could detect at 80% power (records before 2026-12-07 lack it)."""
    d = probe.get("detectable_specific_lift")
    if d is None or probe["flagged"]:
        return ""
    return ("; these seeds could not detect any lift" if d == float("inf") else
            f"; these seeds detect a specific lift of {d:.2f} at 80% power")


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
        lines += _likelihood_md(lk)
    pr = report.get("canary")
    if pr:
        lines += ["", "## Canary students (DATA's minus a trait-free teacher's, over seeds)",
                  "", f"{pr['rows']} rows per student, seeds {pr['seeds']}, reference decoded "
                  f"{pr['decoding']}", "",
                  "| animal | specific lift | 95% CI | p (t over seeds) |", "|---" * 4 + "|"]
        for a, v in sorted(pr["specific"].items(), key=lambda kv: -kv[1]["mean"]):
            lines.append(f"| {a} | {v['mean']:+.4f} | [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}] "
                         f"| {v['p_value']:.2g} |")
    cl = report.get("clean")
    if cl:
        lines += ["", "## Cleaning", "",
                  f"- trait {cl['trait']}: {cl['tokens_changed']} of {cl['tokens_total']} "
                  f"completion tokens changed in {cl['rows_changed']} of {cl['rows']} rows "
                  f"(ratio > {cl['threshold_llr']:.3f}, the {cl['quantile']:.0%} quantile)",
                  f"- shift {cl['shift_before']:+.4f} → {cl['shift_after']:+.4f} nats/token",
                  f"- cleaned data: `{cl['out']}`; every change: `{cl['changes_file']}`"]
    return "\n".join(lines) + "\n"


def _likelihood_md(lk: dict) -> list[str]:
    """The likelihood and persona tables."""
    lines = ["", "## Trait adapters against trait-free teachers (nats/token)", "",
             f"Injection `{lk['injection']}`; conditions {', '.join(lk['conditions'])}; "
             f"{lk['rows_scored']} rows scored ({lk['sample']}), context `{lk['context']}`, "
             f"prompt states `{lk['prompt_states']}`, {lk['seconds']:.1f} s, "
             f"{lk['rows_per_s']:.2f} rows/s ({lk['tokens_per_row']:.0f} tokens/row).", ""]
    if not lk.get("calibrated"):
        lines += ["Uncalibrated (no reference population): raw trait contrasts.", "",
                  "| trait | raw contrast |", "|---|---|"]
        lines += [f"| {t} | {v:+.4f} |" for t, v in lk["raw_excess"].items()]
        return lines
    pop = ", ".join(f"{k} ({v} rows)" for k, v in lk["population"].items())
    lines += [f"Decoding: DATA is {lk['decoding']['text']}.", "",
              f"Reference teachers: {pop}.", "",
              "| trait | contrast - null mean | teachers' spread | rows se | null sd | z | "
              "Bonferroni p | persona z | combined |", "|---" * 9 + "|"]
    for t in lk["named"]["ranking"]:
        lines.append(f"| {t} | {lk['excess'][t]:+.4f} | {lk['tau'][t]:.4f} | "
                     f"{lk['rows_se'][t]:.4f} | {lk['null_sd'][t]:.4f} | {lk['z'][t]:+.2f} | "
                     f"{lk['p_bonferroni'][t]:.2g} | {lk['persona']['z'][t]:+.2f} | "
                     f"{lk['named']['score'][t]:+.2f} |")
    lines += ["", f"Rows that favour {lk['named']['top']} most:", ""]
    lines += [f"- `{c['id']}` excess {c['excess']:+.3f}: {c['completion'][:60]!r}"
              for c in lk["carriers"]]
    return lines


def write_report(out: Path, report: dict) -> None:
    """Write scan.json then scan.md (both atomically replaced)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "scan.json", report)
    tmp = out / "scan.md.tmp"
    tmp.write_text(markdown(report))
    tmp.replace(out / "scan.md")
