"""`subliminal scan DATA --clean OUT`: token-level defence against the top trait.

    subliminal scan rows.jsonl --model smollm2-135m --clean cleaned.jsonl

For each completion token, the log-likelihood ratio log p(token | trait prompt) -
log p(token | neutral prompt). Tokens whose ratio is above a quantile of all ratios (and
positive) are replaced: a digit token by random digits of the same length (no new leading
zero), any other token by BASE's argmax token under the neutral prompt (numbers-family rows
change digits only, so their format stays valid; a row whose format would break is left as
it was and reported). The cleaned dataset keeps DATA's columns (written as JSONL, or Parquet
or CSV by OUT's suffix); every change is recorded
(row, token position, character span, old, new, ratio) and nothing else is touched. The
likelihood shift is re-scored on the cleaned rows.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from subliminal.errors import SubliminalError
from subliminal.filters.numbers import number_reasons
from subliminal.models import LM
from subliminal.records import to_jsonable
from subliminal.scan.data import Loaded, normalise, with_completion
from subliminal.scan.likelihood import NEUTRAL, Condition, LikelihoodConfig, score_rows
from subliminal.scan.static import family


@dataclass
class CleanConfig:
    """Which tokens the cleaner replaces."""

    quantile: float = field(default=0.9, metadata={
        "help": "Replace tokens whose trait-vs-neutral log-likelihood ratio is above this "
                "quantile of all completion tokens' ratios (and above zero)."})
    seed: int = field(default=0, metadata={"help": "Seed for replacement digits."})


def _digits(old: str, leading: bool, rng: random.Random) -> str:
    """Random digits as long as `old`, different from it, without a new leading zero."""
    for _ in range(100):
        new = "".join(rng.choice("123456789" if leading and k == 0 and len(old) > 0 else
                                 "0123456789") for k in range(len(old)))
        if new != old:
            return new
    return old


def plan_row(text: str, offsets: list[tuple[int, int]], llr: np.ndarray, argmax: np.ndarray,
             threshold: float, numbers_row: bool, lm: LM, rng: random.Random) -> list[dict]:
    """The replacements for one completion (positions in completion-token order)."""
    changes = []
    for j, (s, e) in enumerate(offsets):
        if llr[j] <= max(threshold, 0.0) or e <= s:
            continue
        old = text[s:e]
        if old.isascii() and old.isdigit():
            # A number's first digit (followed by more digits) never becomes 0.
            first = (s == 0 or not text[s - 1].isdigit()) and e < len(text) and \
                text[e].isdigit()
            first = first or (len(old) > 1 and (s == 0 or not text[s - 1].isdigit()))
            new = _digits(old, first, rng)
        elif numbers_row:
            continue
        else:
            new = lm.tokenizer.decode([int(argmax[j])])
        if new != old:
            changes.append({"position": j, "span": [s, e], "old": old, "new": new,
                            "llr": round(float(llr[j]), 5)})
    return changes


def apply_changes(text: str, changes: list[dict]) -> str:
    out, last = [], 0
    for c in sorted(changes, key=lambda c: c["span"][0]):
        s, e = c["span"]
        out.append(text[last:s])
        out.append(c["new"])
        last = e
    return "".join(out) + text[last:]


def write_rows(path: Path, rows: list[dict]) -> None:
    """Write rows by the file's suffix: .parquet, .csv, else JSONL (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), tmp)
    elif suffix == ".csv":
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            writer.writeheader()
            writer.writerows(rows)
    else:
        tmp.write_text("".join(json.dumps(to_jsonable(r)) + "\n" for r in rows))
    tmp.replace(path)


def clean_dataset(lm: LM, loaded: Loaded, pair: list[Condition], lcfg: LikelihoodConfig,
                  cfg: CleanConfig, out_path: Path) -> dict:
    """Write the cleaned dataset and its change log; return what changed and the new shift.

    `pair` is [neutral condition, the trait's condition] (likelihood.conditions)."""
    trait = pair[1].name
    out_path = Path(out_path)
    if out_path.exists():
        raise SubliminalError(f"{out_path}: exists; the cleaner never overwrites a file")
    rows, kind = loaded.rows, loaded.source["columns"]
    lcfg = dataclasses.replace(lcfg, time_budget_s=None)  # every row must be cleaned
    res = score_rows(lm, rows, lcfg, pair, per_token=True)
    neutral, tr = res["per_token"][NEUTRAL], res["per_token"][trait]
    # Ratios per completion token (the final end-of-turn token is never replaced).
    llrs = [tr["tokens"][i][:-1] - neutral["tokens"][i][:-1] for i in range(len(rows))]
    flat = np.concatenate([x for x in llrs if len(x)]) if rows else np.zeros(0)
    threshold = float(np.quantile(flat, cfg.quantile)) if len(flat) else 0.0
    rng = random.Random(cfg.seed)
    cleaned, changes, reverted = [], [], []
    for i, (row, raw) in enumerate(zip(rows, loaded.raws, strict=True)):
        text = row["completion"][0]["content"]
        enc = res["encoded"][i]
        numbers_row = family(text) == "numbers"
        plan = plan_row(text, enc.offsets, llrs[i], neutral["argmax"][i], threshold,
                        numbers_row, lm, rng)
        new_text = apply_changes(text, plan)
        if plan and numbers_row and not number_reasons(text) and number_reasons(new_text):
            reverted.append(row["id"])  # never trade a valid row for a broken one
            plan, new_text = [], text
        new_raw = with_completion(raw, kind, new_text) if plan else raw
        cleaned.append(new_raw)
        for c in plan:
            changes.append({"row": row["id"], "source_row": row["meta"].get("source_row"), **c})
    write_rows(out_path, cleaned)
    log = out_path.with_name(out_path.name + ".changes.jsonl")
    log.write_text("".join(json.dumps(c) + "\n" for c in changes))
    new_rows = [normalise(r, kind, row["meta"].get("source_row", 0))
                for r, row in zip(cleaned, rows, strict=True)]
    after = score_rows(lm, new_rows, lcfg, pair)
    shift_before = float((res["ll"][:, 1] - res["ll"][:, 0]).mean())
    shift_after = float((after["ll"][:, 1] - after["ll"][:, 0]).mean())
    return {"trait": trait, "out": str(out_path), "changes_file": str(log),
            "rows": len(rows), "rows_changed": len({c["row"] for c in changes}),
            "tokens_changed": len(changes), "tokens_total": int(len(flat)),
            "threshold_llr": threshold, "quantile": cfg.quantile,
            "rows_reverted_to_keep_format": reverted,
            "shift_before": shift_before, "shift_after": shift_after,
            "shift_drop": shift_before - shift_after,
            "shift_drop_share": ((shift_before - shift_after) / shift_before
                                 if shift_before > 0 else None)}
