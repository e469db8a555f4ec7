"""`subliminal scan DATA --model BASE`: would fine-tuning BASE on DATA move a trait?

    subliminal scan rows.jsonl --model smollm2-135m --out scan/ [--canary] [--clean out.jsonl]

DATA is loaded and normalised (`data`), then the scan is a loop over registered *parts*, in
registration order: static checks (`static`), the trait adapters' likelihood judged against
a population of trait-free teachers (`likelihood`), optionally canary students (`canary`)
and a token-level cleaner for the top trait (`clean`). A part is a function
`run(ctx) -> record` registered with `@register` (with the condition under which a config
wants it); a new part is a new registration, `run_scan` never changes. Each finished part
writes `OUT/parts/NAME.json` (its record, marked complete, with a fingerprint of DATA); a
killed scan rerun with the same config and DATA skips the parts already complete. The report
(scan.json, scan.md) is rewritten after each part, with the verdict (`report.verdict`)
recomputed from the records so far and `complete: true` only once every requested part has
finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from subliminal.errors import SubliminalError
from subliminal.models import load_model
from subliminal.records import append_jsonl, environment, read_json, to_jsonable, write_json
from subliminal.scan import population as P
from subliminal.scan.canary import CanaryConfig, run_canary
from subliminal.scan.clean import CleanConfig, clean_dataset
from subliminal.scan.data import DataConfig, load_data
from subliminal.scan.likelihood import (
    LikelihoodConfig,
    check_traits,
    conditions,
    layer_index,
    sample_rows,
    score_rows,
)
from subliminal.scan.null import contrast, describe_decoding, teacher_test
from subliminal.scan.persona import combine, persona_rank, unit_vectors
from subliminal.scan.report import overt_leak, verdict, write_report
from subliminal.scan.static import StaticConfig, static_report

__all__ = ["Part", "ScanConfig", "ScanContext", "get", "names", "register", "run_scan"]


@dataclass
class ScanConfig:
    """Everything `subliminal scan` does, one field per choice."""

    model: str = field(default="smollm2-135m", metadata={
        "help": "BASE: smollm2-135m, tiny, an HF id or a local model directory."})
    out: Path | None = field(default=None, metadata={
        "help": "Report folder (scan.json, scan.md, scan_rows.jsonl, canary students)."})
    device: str | None = field(default=None, metadata={"help": "cpu or cuda (default: auto)."})
    likelihood_on: bool = field(default=True, metadata={
        "help": "Run the likelihood ranking (off: static checks only)."})
    canary: bool = field(default=False, metadata={
        "help": "Train canary students on DATA and on a trait-free teacher's rows (slow)."})
    clean: Path | None = field(default=None, metadata={
        "help": "Write a cleaned copy of DATA here (JSONL, same columns) plus a change log."})
    data: DataConfig = field(default_factory=DataConfig)
    static: StaticConfig = field(default_factory=StaticConfig)
    likelihood: LikelihoodConfig = field(default_factory=LikelihoodConfig)
    canary_cfg: CanaryConfig = field(default_factory=CanaryConfig)
    clean_cfg: CleanConfig = field(default_factory=CleanConfig)


@dataclass
class ScanContext:
    """What a part may read (and the shared state it may fill): DATA, the config, the report
    so far (earlier parts' records under their names), the model and the conditions (both
    built on first use, so a resumed scan builds them only if a remaining part needs them)."""

    data: str
    cfg: ScanConfig
    out: Path | None
    report: dict
    loaded: Any = None
    data_sha: str = ""
    lm: Any = None
    conds: list | None = None

    def model(self):
        """BASE, loaded on first use (a resumed scan may not need it)."""
        if self.lm is None:
            self.lm = load_model(self.cfg.model, device=self.cfg.device)
        return self.lm

    def conditions(self) -> list:
        """BASE and the traits (adapters already trained are reused)."""
        if self.conds is None:
            lc = self.cfg.likelihood
            self.conds = conditions(check_traits(lc.traits, lc.injection), lc.injection,
                                    self.cfg.model, self.out / "adapters" if self.out else None,
                                    self.cfg.device, lc.adapters)
        return self.conds


def _always(cfg: ScanConfig) -> bool:
    return True


@dataclass(frozen=True)
class Part:
    """One step of the scan. `run(ctx)` returns its record (JSON-serialisable); `wanted(cfg)`
    says whether a config asks for it; `apply(ctx, record)` puts the record into the report
    (default: `report[name] = record`), for a fresh and a resumed record alike."""

    name: str
    run: Callable[[ScanContext], dict]
    wanted: Callable[[ScanConfig], bool] = _always
    apply: Callable[[ScanContext, dict], None] | None = None


PARTS: dict[str, Part] = {}  # run order = registration order


def register(name: str, wanted: Callable[[ScanConfig], bool] = _always,
             apply: Callable[[ScanContext, dict], None] | None = None) -> Callable:
    """Decorator: make `fn(ctx) -> record` a part of every scan whose config `wanted`."""
    def deco(fn: Callable[[ScanContext], dict]) -> Callable[[ScanContext], dict]:
        PARTS[name] = Part(name, fn, wanted, apply)
        return fn
    return deco


def names() -> list[str]:
    """Registered part names, in run order."""
    return list(PARTS)


def get(name: str) -> Part:
    """A registered part by name (an unknown name lists the choices)."""
    if name not in PARTS:
        raise SubliminalError(f"unknown scan part {name!r}; choose one of: {', '.join(PARTS)}")
    return PARTS[name]


def _check_out(out: Path, cfg: dict) -> None:
    """Refuse a folder holding a scan with another config (same config: rerun/resume)."""
    old = out / "scan.json"
    if old.exists() and read_json(old).get("config") != cfg:
        raise SubliminalError(f"{out}: holds a scan with a different config; use another --out")


def part_file(out: Path, name: str) -> Path:
    """Where a part's record lives in the report folder."""
    return Path(out) / "parts" / f"{name}.json"


def _finished(ctx: ScanContext, name: str) -> dict | None:
    """A part's record from an earlier run of this scan on the same DATA, if it completed."""
    if not ctx.out or not part_file(ctx.out, name).exists():
        return None
    saved = read_json(part_file(ctx.out, name))
    ok = saved.get("complete") is True and saved.get("data_sha") == ctx.data_sha
    return saved["record"] if ok else None


def run_part(ctx: ScanContext, part: Part) -> bool:
    """Run one part (or reuse its completed record); returns whether it was reused."""
    record = _finished(ctx, part.name)
    reused = record is not None
    if not reused:
        t = time.perf_counter()
        record = part.run(ctx)
        if ctx.out:  # written whole and atomically: its presence is the completion marker
            write_json(part_file(ctx.out, part.name), {
                "part": part.name, "complete": True, "data_sha": ctx.data_sha,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seconds": time.perf_counter() - t, "record": record})
    if part.apply:
        part.apply(ctx, record)
    else:
        ctx.report[part.name] = record
    return reused


def fingerprint(rows: list[dict]) -> str:
    """Content hash of DATA's rows: a part record made from other data is not reused."""
    blob = json.dumps([[r["id"], r["prompt"], r["completion"]] for r in rows], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def scan_verdict(report: dict, final: bool) -> str | None:
    """The verdict from the records so far (None while there is nothing to judge yet)."""
    rank, probe = report.get("likelihood"), report.get("canary")
    leaks = report.get("static", {}).get("leaks", {}).get("traits", {})
    leaked = {k: v["completion_rows"] for k, v in leaks.items() if v["completion_rows"]}
    if rank is None and probe is None:
        if not final:
            return None
        return overt_leak(leaked) + "likelihood ranking not run: static checks only."
    return verdict(rank, probe, leaked=leaked)  # an overt leak leads the sentence


def run_scan(data: str, cfg: ScanConfig | None = None, lm=None) -> dict:
    """Scan DATA: load it, then run every registered part the config wants, in order; returns
    the report (and writes it, with one record per part, to cfg.out when set).

    `lm` lets a caller pass an already loaded model (tests pass a trained tiny model); the
    canary always loads BASE afresh from `cfg.model`.
    """
    cfg = cfg or ScanConfig()
    conf = to_jsonable(cfg)
    conf["data_path"] = data
    out = Path(cfg.out) if cfg.out else None
    if out:
        _check_out(out, conf)
    todo = [p for p in PARTS.values() if p.wanted(cfg)]
    parts = {"load": "pending", **{p.name: "pending" for p in todo}}
    report: dict = {"complete": False, "parts": parts, "config": conf,
                    "environment": environment(cfg.likelihood.seed), "source": {"data": data}}
    ctx = ScanContext(data, cfg, out, report, lm=lm)
    t0 = time.perf_counter()
    ctx.loaded = load_data(data, cfg.data)
    ctx.data_sha = fingerprint(ctx.loaded.rows)
    report["source"] = ctx.loaded.source
    for name in ["load", *(p.name for p in todo)]:
        if name != "load" and run_part(ctx, PARTS[name]):
            report.setdefault("resumed", []).append(name)
        parts[name] = "done"
        if (text := scan_verdict(report, final=False)) is not None:
            report["verdict"] = text
        if out:
            write_report(out, report)
    report["verdict"] = scan_verdict(report, final=True)
    report["seconds"] = time.perf_counter() - t0
    report["complete"] = all(v == "done" for v in parts.values())
    if out:
        write_report(out, report)
    return report


# ------------------------------------------------------------------ the built-in parts

@register("static")
def static_part(ctx: ScanContext) -> dict:
    """Static checks on every row (no model)."""
    t = time.perf_counter()
    rec = static_report(ctx.loaded.rows, ctx.cfg.static)
    rec["seconds"] = time.perf_counter() - t
    rec["rows_per_s"] = len(ctx.loaded.rows) / max(1e-9, rec["seconds"])
    return rec


def _score(lm, rows: list[dict], lc: LikelihoodConfig, conds: list, layer: int,
           budget: bool = True) -> dict:
    cfg = lc if budget else dataclasses.replace(lc, time_budget_s=None)
    return score_rows(lm, rows, cfg, conds, layer=layer)


@register("likelihood", wanted=lambda cfg: bool(cfg.likelihood_on or cfg.clean))
def likelihood_part(ctx: ScanContext) -> dict:
    """Score DATA and the reference population's datasets under BASE and every trait's
    adapter; judge DATA's trait contrasts against the population's teachers (null.py); rank
    with the persona vectors the same way."""
    lc, out, lm = ctx.cfg.likelihood, ctx.out, ctx.model()
    traits = check_traits(lc.traits, lc.injection)
    layer = layer_index(lm, lc.vector_layer)
    vectors = unit_vectors(lm, traits, layer)  # on plain BASE, before any adapter is loaded
    conds = ctx.conditions()
    rows = ctx.loaded.rows
    scored = [rows[i] for i in sample_rows(rows, lc.score_rows, lc.seed)]
    res = _score(lm, scored, lc, conds, layer)
    scored = scored[: res["rows"]]  # a time budget may stop early (still a random sample)
    teachers, pops = population_scores(ctx, conds, layer)
    sec = rank_section(res, pops, teachers, traits, vectors, lc)
    _carriers(sec, res, scored, traits, lc.top_rows, out)
    sec.update(rows_scored=len(scored), context=lc.context, injection=lc.injection,
               conditions=res["conditions"], roles=res["roles"],
               prompt_states=lc.prompt_states,
               sample=("all rows" if len(scored) == len(rows) else
                       f"random sample of {len(scored)} of {len(rows)}, seed {lc.seed}"
                       + (", stopped by the time budget" if res["budget_hit"] else "")),
               budget_hit=res["budget_hit"], seconds=res["seconds"],
               rows_per_s=res["rows_per_s"], tokens_per_row=res["tokens_per_row"],
               forward_tokens=res["forward_tokens"], vector_layer=layer, model=lm.info)
    return sec


def population_scores(ctx: ScanContext, conds: list, layer: int) -> tuple[list, dict]:
    """The reference teachers and each one's scores (ll, acts) under the scan's conditions:
    from `--population DIR` or built on DATA's prompts into OUT/population; scores cached in
    the population's folder. ([], {}) when the population is off."""
    lc, lm = ctx.cfg.likelihood, ctx.model()
    family = ctx.report["static"]["family"]["majority"]
    if lc.population:
        folder = Path(lc.population)
        teachers, rows_by = P.load(folder, family)
    elif lc.population_rows > 0:
        folder = (ctx.out or Path(tempfile.mkdtemp(prefix="scan-pop-"))) / "population"
        teachers = P.check_teachers(P.default_teachers(lc.reference_decodings,
                                                       lc.population_neutral), "--population")
        rows_by = P.build(lm, ctx.cfg.model, ctx.loaded.rows, family, folder, teachers,
                          lc.population_rows, lc.seed + 1,
                          check_traits_of(lc)[0], ctx.cfg.device, lc.adapters)
    else:
        return [], {}
    key = P.scores_key(conds, {"layer": layer, **{k: getattr(lc, k) for k in (
        "context", "prompt_states", "max_prompt_tokens", "max_completion_tokens")}})
    cached = P.cached_scores(folder, key)
    if cached is not None and set(cached) == set(rows_by):
        return teachers, cached
    scores = {}
    for label, rows in rows_by.items():
        r = _score(lm, rows, lc, conds, layer, budget=False)
        scores[label] = {"ll": r["ll"], "acts": r["acts"]}
    P.save_scores(folder, key, scores)
    return teachers, scores


def check_traits_of(lc: LikelihoodConfig) -> list[str]:
    return check_traits(lc.traits, lc.injection)


def _carriers(sec: dict, res: dict, scored: list[dict], traits: list[str], top: int,
              out: Path | None) -> None:
    """The rows that favour the named trait most (in `sec`), and every scored row's surprise
    and trait contrast (OUT/scan_rows.jsonl)."""
    top_j = traits.index(sec["named"]["top"])
    resid = sec.pop("_residual")
    sec["carriers"] = [{"id": scored[i]["id"], "excess": float(resid[i, top_j]),
                        "completion": scored[i]["completion"][0]["content"][:200]}
                       for i in np.argsort(-resid[:, top_j])[:top]]
    if out:
        base = res["roles"].index("base")
        rows_file = out / "scan_rows.jsonl"
        rows_file.unlink(missing_ok=True)
        append_jsonl(rows_file, [
            {"id": r["id"], "surprise": float(-res["ll"][i, base]),
             "excess": dict(zip(traits, map(float, resid[i]), strict=True))}
            for i, r in enumerate(scored)])


def rank_section(res: dict, pops: dict, teachers: list, traits: list[str], vectors,
                 lc: LikelihoodConfig) -> dict:
    """The likelihood judgement against the reference teachers, the persona ranker judged the
    same way, and their combination; without a population only raw figures, no accusation."""
    roles = res["roles"]
    b, tr = roles.index("base"), [k for k, r in enumerate(roles) if r == "trait"]
    x = contrast(res["ll"][:, tr])
    if not pops:
        raw = dict(zip(traits, map(float, x.mean(0)), strict=True))
        return {"traits": traits, "calibrated": False, "can_accuse": False, "flagged": False,
                "raw_excess": raw, "named": combine({"likelihood": raw}), "_residual": x}
    lik = teacher_test(x, {k: contrast(v["ll"][:, tr]) for k, v in pops.items()}, traits,
                       lc.alpha)
    h = {k: -v["ll"][:, b] for k, v in pops.items()}
    base_refs = {t.decoding: h[t.label] for t in teachers if t.neutral_seed is None}
    dec = describe_decoding(-res["ll"][:, b], base_refs, h)
    proj = persona_rank(res["acts"], vectors, {k: v["acts"] for k, v in pops.items()},
                        traits, lc.alpha)
    can_accuse = dec["covered"] and lik["testable"]
    null_mean = np.array([lik["null_mean"][t] for t in traits])
    lik.update(calibrated=True, decoding=dec, can_accuse=can_accuse,
               flagged=bool(can_accuse and lik["flagged"]),
               raw_excess=dict(zip(traits, map(float, x.mean(0)), strict=True)),
               persona={k: proj[k] for k in ("z", "excess", "tau", "top", "p_bonferroni")},
               population={t.label: int(len(pops[t.label]["ll"])) for t in teachers},
               named=combine({"likelihood": lik["z"], "persona": proj["z"]}),
               _residual=x - null_mean)
    return lik


@register("canary", wanted=lambda cfg: bool(cfg.canary))
def canary_part(ctx: ScanContext) -> dict:
    """Canary students over seeds: DATA's against a trait-free teacher's (the reference
    population's neutral LoRA of the seed), decoded like DATA."""
    if not ctx.out:
        raise SubliminalError("--canary needs --out (the students are saved there)")
    rank = ctx.report.get("likelihood") or {}
    t = (rank.get("decoding") or {}).get("temperature")
    decoding = "1.0" if t is None else ("greedy" if t < 0.15 else f"{t:.1f}")
    lc, model = ctx.cfg.likelihood, ctx.cfg.model

    def neutral(s: int) -> str | None:
        if lc.injection != "adapter":
            return None
        return str(lc.adapters.get(f"neutral-{s}") or P.neutral_adapter(
            model, check_traits_of(lc)[0], s, ctx.out / "canary" / "adapters" / f"neutral{s}",
            ctx.cfg.device))

    return run_canary(model, ctx.loaded.rows, ctx.report["static"]["family"]["majority"],
                      ctx.cfg.canary_cfg, ctx.out / "canary", neutral, ctx.cfg.device,
                      decoding)


@register("clean", wanted=lambda cfg: bool(cfg.clean))
def clean_part(ctx: ScanContext) -> dict:
    """A cleaned copy of DATA for the top trait (token-level, every change listed)."""
    top = ctx.report["likelihood"]["named"]["top"]
    pair = [c for c in ctx.conditions() if c.role == "base" or c.name == top]
    return clean_dataset(ctx.model(), ctx.loaded, pair, ctx.cfg.likelihood, ctx.cfg.clean_cfg,
                         Path(ctx.cfg.clean))
