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

from subliminal.errors import SubliminalError
from subliminal.records import environment, read_json, to_jsonable
from subliminal.scan.clean import CleanConfig
from subliminal.scan.data import DataConfig, load_data
from subliminal.scan.likelihood import (
    LikelihoodConfig,
    conditions,
    rank_traits,
    sample_rows,
    score_rows,
)
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
    rank = None
    if "likelihood" in parts:
        if lm is None:
            from subliminal.models import load_model

            lm = load_model(cfg.model, device=cfg.device)
        lc = cfg.likelihood
        conds = conditions(lc.traits, lc.injection, cfg.model,
                           out / "adapters" if out else None, cfg.device, lc.adapters)
        idx = sample_rows(loaded.rows, lc.score_rows, lc.seed)
        scored = [loaded.rows[i] for i in idx]
        res = score_rows(lm, scored, lc, conds)
        scored = scored[: res["rows"]]  # a time budget may stop early (still a random sample)
        ref_ll = None
        if lc.reference_rows:
            from subliminal.scan.reference import base_completions, sample

            ref_dir = out or Path(tempfile.mkdtemp(prefix="scan-ref-"))
            ref_rows, _ = base_completions(lm, sample(scored, lc.reference_rows, lc.seed + 1),
                                           report["static"]["family"]["majority"],
                                           ref_dir / "reference_rows.jsonl", lc.seed)
            ref_ll = score_rows(lm, ref_rows, dataclasses.replace(lc, time_budget_s=None),
                                conds)["ll"]
        rank = rank_traits(res["ll"], res["conditions"], lc, ref_ll)
        contrast, shift = rank.pop("_contrast"), rank.pop("_shift")
        carriers = rank.pop("_carriers")
        top_j = rank["traits"].index(rank["top"])
        rank["carriers"] = [{"id": scored[i]["id"], "contrast": float(contrast[i, top_j]),
                             "shift": float(shift[i, top_j]),
                             "completion": scored[i]["completion"][0]["content"][:200]}
                            for i in carriers]
        rank.update(rows_scored=len(scored), context=lc.context, injection=lc.injection,
                    sample=("all rows" if len(scored) == len(loaded.rows) else
                            f"random sample of {len(scored)} of {len(loaded.rows)}, seed "
                            f"{lc.seed}" + (", stopped by the time budget"
                                            if res["budget_hit"] else "")),
                    budget_hit=res["budget_hit"],
                    seconds=res["seconds"], rows_per_s=res["rows_per_s"],
                    tokens_per_row=res["tokens_per_row"], forward_tokens=res["forward_tokens"],
                    model=lm.info)
        report["likelihood"] = rank
        if out:
            from subliminal.records import append_jsonl

            rows_file = out / "scan_rows.jsonl"
            rows_file.unlink(missing_ok=True)
            append_jsonl(rows_file, [
                {"id": r["id"], "shift": dict(zip(rank["traits"], map(float, shift[i]),
                                                  strict=True)),
                 f"contrast_{rank['top']}": float(contrast[i, top_j])}
                for i, r in enumerate(scored)])
        report["verdict"] = verdict(rank, None, lc.alpha)
        save("likelihood")
    if cfg.probe:
        from subliminal.scan.probe import run_probe_scan

        if not out:
            raise SubliminalError("--probe needs --out (the students are saved there)")
        report["probe"] = run_probe_scan(cfg.model, loaded.rows,
                                         report["static"]["family"]["majority"],
                                         cfg.probe_cfg, out / "probe", cfg.device)
        report["verdict"] = verdict(rank, report["probe"], cfg.likelihood.alpha)
        save("probe")
    if cfg.clean:
        from subliminal.scan.clean import clean_dataset

        pair = [c for c in conds if c.name in (conds[0].name, rank["top"])]
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
