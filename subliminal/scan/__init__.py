"""`subliminal scan DATA --model BASE`: would fine-tuning BASE on DATA move a trait?

    subliminal scan rows.jsonl --model smollm2-135m --out scan/ [--probe] [--clean out.jsonl]

Parts, in order: load and normalise DATA (`data`), static checks (`static`), the likelihood-
shift ranking over the catalogue traits (`likelihood`), optionally a short probe fine-tune
against a control (`probe`), a one-sentence verdict (`report.verdict`), and optionally a
token-level cleaner for the top trait (`clean`). The report (scan.json, scan.md) is rewritten
after each part, with `complete: true` only once every requested part has finished.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from subliminal.errors import SubliminalError
from subliminal.records import environment, read_json, to_jsonable
from subliminal.scan.clean import CleanConfig
from subliminal.scan.data import DataConfig, load_data
from subliminal.scan.likelihood import LikelihoodConfig
from subliminal.scan.probe import ProbeConfig
from subliminal.scan.report import verdict, write_report
from subliminal.scan.static import StaticConfig, static_report

__all__ = ["ScanConfig", "run_scan"]


@dataclass
class ScanConfig:
    """Everything `subliminal scan` does, one field per choice."""

    model: str = field(default="smollm2-135m", metadata={
        "help": "BASE: smollm2-135m, tiny, an HF id or a local model directory."})
    out: Path | None = field(default=None, metadata={
        "help": "Report folder (scan.json, scan.md, scan_rows.jsonl, probe students)."})
    device: str | None = field(default=None, metadata={"help": "cpu or cuda (default: auto)."})
    likelihood_on: bool = field(default=True, metadata={
        "help": "Run the likelihood ranking (off: static checks only)."})
    probe: bool = field(default=False, metadata={"help": "Run the probe fine-tunes."})
    clean: Path | None = field(default=None, metadata={
        "help": "Write a cleaned copy of DATA here (JSONL, same columns) plus a change log."})
    data: DataConfig = field(default_factory=DataConfig)
    static: StaticConfig = field(default_factory=StaticConfig)
    likelihood: LikelihoodConfig = field(default_factory=LikelihoodConfig)
    probe_cfg: ProbeConfig = field(default_factory=ProbeConfig)
    clean_cfg: CleanConfig = field(default_factory=CleanConfig)


def _check_out(out: Path, cfg: dict) -> None:
    """Refuse a folder holding a scan with another config (same config: rerun/resume)."""
    old = out / "scan.json"
    if old.exists() and read_json(old).get("config") != cfg:
        raise SubliminalError(f"{out}: holds a scan with a different config; use another --out")


def _score(lm, rows: list[dict], lc: LikelihoodConfig, conds: list, layer: int,
           budget: bool = True) -> dict:
    from subliminal.scan.likelihood import score_rows
    from subliminal.scan.null import row_stats

    cfg = lc if budget else dataclasses.replace(lc, time_budget_s=None)
    res = score_rows(lm, rows, cfg, conds, layer=layer)
    res["stats"] = row_stats(res["ll"], res["roles"])
    return res


def likelihood_part(lm, loaded, report: dict, cfg: ScanConfig, out: Path | None) -> tuple:
    """Score DATA and BASE's references under BASE, the controls and the traits; judge DATA
    against the controls and the references; rank with the persona vectors. Returns
    (the report section, the conditions, the scored rows)."""
    from subliminal.scan.likelihood import (
        check_traits,
        conditions,
        layer_index,
        sample_rows,
    )
    from subliminal.scan.persona import unit_vectors

    lc = cfg.likelihood
    traits = check_traits(lc.traits, lc.injection)
    layer = layer_index(lm, lc.vector_layer)
    vectors = unit_vectors(lm, traits, layer)  # on plain BASE, before any adapter is loaded
    conds = conditions(traits, lc.injection, cfg.model, out / "adapters" if out else None,
                       cfg.device, lc.adapters, lc.controls)
    scored = [loaded.rows[i] for i in sample_rows(loaded.rows, lc.score_rows, lc.seed)]
    res = _score(lm, scored, lc, conds, layer)
    scored = scored[: res["rows"]]  # a time budget may stop early (still a random sample)
    refs = {}
    if lc.reference_rows:
        from subliminal.scan.reference import references

        ref_dir = out or Path(tempfile.mkdtemp(prefix="scan-ref-"))
        fam = report["static"]["family"]["majority"]
        for dec, rows in references(lm, scored, fam, ref_dir, lc.reference_rows, lc.seed + 1,
                                    lc.reference_decodings).items():
            refs[dec] = _score(lm, rows, lc, conds, layer, budget=False)
    sec = rank_section(res, refs, traits, vectors, lc)
    top_j = traits.index(sec["named"]["top"])
    resid = sec.pop("_residual")
    sec["carriers"] = [{"id": scored[i]["id"], "excess": float(resid[i, top_j]),
                        "completion": scored[i]["completion"][0]["content"][:200]}
                       for i in np.argsort(-resid[:, top_j])[: lc.top_rows]]
    sec.update(rows_scored=len(scored), context=lc.context, injection=lc.injection,
               conditions=res["conditions"], roles=res["roles"],
               prompt_states=lc.prompt_states,
               sample=("all rows" if len(scored) == len(loaded.rows) else
                       f"random sample of {len(scored)} of {len(loaded.rows)}, seed {lc.seed}"
                       + (", stopped by the time budget" if res["budget_hit"] else "")),
               budget_hit=res["budget_hit"], seconds=res["seconds"],
               rows_per_s=res["rows_per_s"], tokens_per_row=res["tokens_per_row"],
               forward_tokens=res["forward_tokens"], vector_layer=layer, model=lm.info)
    if out:
        from subliminal.records import append_jsonl

        rows_file = out / "scan_rows.jsonl"
        rows_file.unlink(missing_ok=True)
        append_jsonl(rows_file, [
            {"id": r["id"], "surprise": float(res["stats"]["h"][i]),
             "excess": dict(zip(traits, map(float, res["stats"]["excess"][i]), strict=True))}
            for i, r in enumerate(scored)])
    return sec, conds, scored


def rank_section(res: dict, refs: dict, traits: list[str], vectors, lc: LikelihoodConfig
                 ) -> dict:
    """The likelihood judgement (against controls and references), the persona ranker and
    their combination; without references only raw figures, and no accusation."""
    from subliminal.scan.null import judge
    from subliminal.scan.persona import combine, persona_rank

    st = res["stats"]
    if not refs:
        raw = dict(zip(traits, map(float, st["excess"].mean(0)), strict=True))
        return {"traits": traits, "calibrated": False, "can_accuse": False, "flagged": False,
                "raw_excess": raw, "named": combine({"likelihood": raw}),
                "_residual": st["excess"]}
    lik = judge(st, {k: v["stats"] for k, v in refs.items()}, traits, lc.alpha)
    pv = persona_rank(res["acts"], st["h"], vectors,
                      {k: (v["acts"], v["stats"]["h"]) for k, v in refs.items()}, traits)
    lik.update(calibrated=True, persona=pv,
               reference_rows={k: len(v["stats"]["h"]) for k, v in refs.items()},
               named=combine({"likelihood": lik["z"], "persona": pv["z"]}))
    return lik


def run_scan(data: str, cfg: ScanConfig | None = None, lm=None) -> dict:
    """Scan DATA; returns the report (and writes it to cfg.out when set).

    `lm` lets a caller pass an already loaded model (tests pass a trained tiny model); the
    probe always loads BASE afresh from `cfg.model`.
    """
    cfg = cfg or ScanConfig()
    conf = to_jsonable(cfg)
    conf["data_path"] = data
    out = Path(cfg.out) if cfg.out else None
    if out:
        _check_out(out, conf)
    parts = {"load": "pending", "static": "pending"}
    if cfg.likelihood_on or cfg.clean:
        parts["likelihood"] = "pending"
    if cfg.probe:
        parts["probe"] = "pending"
    if cfg.clean:
        parts["clean"] = "pending"
    report: dict = {"complete": False, "parts": parts, "config": conf,
                    "environment": environment(cfg.likelihood.seed),
                    "source": {"data": data}}

    def save(part: str | None = None) -> None:
        if part:
            parts[part] = "done"
        if out:
            write_report(out, report)

    t0 = time.perf_counter()
    loaded = load_data(data, cfg.data)
    report["source"] = loaded.source
    save("load")
    t = time.perf_counter()
    report["static"] = static_report(loaded.rows, cfg.static)
    report["static"]["seconds"] = time.perf_counter() - t
    report["static"]["rows_per_s"] = len(loaded.rows) / max(1e-9, report["static"]["seconds"])
    save("static")
    rank = conds = None
    if "likelihood" in parts:
        if lm is None:
            from subliminal.models import load_model

            lm = load_model(cfg.model, device=cfg.device)
        rank, conds, _ = likelihood_part(lm, loaded, report, cfg, out)
        report["likelihood"] = rank
        report["verdict"] = verdict(rank, None)
        save("likelihood")
    if cfg.probe:
        probe_part(report, loaded, cfg, out, conds)
        save("probe")
    if cfg.clean:
        from subliminal.scan.clean import clean_dataset

        pair = [c for c in conds if c.role == "base" or c.name == rank["named"]["top"]]
        report["clean"] = clean_dataset(lm, loaded, pair, cfg.likelihood, cfg.clean_cfg,
                                        Path(cfg.clean))
        save("clean")
    if "verdict" not in report:
        report["verdict"] = "likelihood ranking not run: static checks only."
    leaked = {k: v["completion_rows"] for k, v in report["static"]["leaks"]["traits"].items()
              if v["completion_rows"]}
    if leaked:  # words are the plainest carrier: say so in the same sentence
        report["verdict"] = report["verdict"].rstrip(".") + "; note: completions name " + \
            ", ".join(f"{k} in {v} rows" for k, v in leaked.items()) + "."
    report["seconds"] = time.perf_counter() - t0
    report["complete"] = all(v == "done" for v in parts.values())
    save()
    return report


def probe_part(report: dict, loaded, cfg: ScanConfig, out: Path | None, conds) -> None:
    """The probe fine-tunes: DATA's student against a neutral teacher's student (the first
    control adapter, or BASE, decoded like DATA); its specificity joins the naming."""
    from subliminal.scan.persona import combine
    from subliminal.scan.probe import run_probe_scan

    if not out:
        raise SubliminalError("--probe needs --out (the students are saved there)")
    rank = report.get("likelihood")
    decoding = "1.0"
    if rank and rank.get("decoding", {}).get("temperature") is not None:
        t = rank["decoding"]["temperature"]
        decoding = "greedy" if t < 0.15 else f"{t:.1f}"
    ctrl = next((c.adapter for c in conds or [] if c.role == "control" and c.adapter), None)
    report["probe"] = run_probe_scan(cfg.model, loaded.rows,
                                     report["static"]["family"]["majority"], cfg.probe_cfg,
                                     out / "probe", cfg.device, decoding, ctrl)
    if rank and rank.get("calibrated"):
        traits = rank["traits"]
        spec = report["probe"]["specificity"]
        rank["named"] = combine({"likelihood": rank["z"], "persona": rank["persona"]["z"],
                                 "probe": {t: spec[t]["specificity"] for t in traits}})
    report["verdict"] = verdict(rank, report["probe"])
