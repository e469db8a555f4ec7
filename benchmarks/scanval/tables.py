"""Render a scan-validation record as the Markdown tables of docs/scan_validation.md.

    python benchmarks/scanval/tables.py docs/scan_validation_250.json

Reads what `validate_scan.py judge` wrote (nothing is recomputed except counts and means of
the stored per-dataset results), so every figure in the doc can be traced to the record.
"""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np

from subliminal.records import read_json


def pct(lo_hi: list[float]) -> str:
    return f"{lo_hi[0]:.0%}–{lo_hi[1]:.0%}"


def per_pool(doc: dict) -> list[str]:
    """One line per pool and dataset size: flags, naming and the truth's likelihood z."""
    truths = doc["positives"]
    out = ["| pool (truth) | n rows | datasets | flagged | can accuse | mean T est. | named "
           "top-1 (combined) | likelihood top-1 | persona top-1 | mean z of truth | names given |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for pool, rec in doc["datasets"].items():
        truth = truths.get(pool)
        for n, js in rec["datasets"].items():
            temps = [j["temperature"] for j in js if j["temperature"] is not None]
            t = f"{np.mean(temps):.2f}" if temps else "–"
            right = ["–"] * 3
            zt = "–"
            if truth:
                right = [f"{sum(j[k] == truth for j in js)}/{len(js)}"
                         for k in ("named", "top_likelihood", "top_persona")]
                zt = f"{np.mean([j['z'][truth] for j in js]):+.2f}"
            names = ", ".join(f"{a} {c}" for a, c in Counter(j["named"] for j in js).most_common())
            out.append(f"| {pool} ({truth or 'none'}) | {n} | {len(js)} | "
                       f"{sum(j['flagged'] for j in js)} | "
                       f"{sum(bool(j['can_accuse']) for j in js)}/{len(js)} | {t} | "
                       f"{' | '.join(right)} | {zt} | {names} |")
    return out


def pooled(doc: dict) -> list[str]:
    """Pooled rates per size, with Wilson and Clopper-Pearson 95% intervals."""
    out = ["| read-out | n rows | datasets | k | rate | Wilson | Clopper-Pearson |",
           "|---|---|---|---|---|---|---|"]
    for key, rows in doc["pooled"].items():
        for n, o in sorted(rows.items(), key=lambda kv: int(kv[0])):
            if not o["datasets"]:
                continue
            out.append(f"| {key} | {n} | {o['datasets']} | {o['k']} | {o['rate']:.0%} | "
                       f"{pct(o['wilson'])} | {pct(o['clopper_pearson'])} |")
    return out


def main(path: str) -> None:
    doc = read_json(path)
    print("\n".join(per_pool(doc)) + "\n\n" + "\n".join(pooled(doc)))


if __name__ == "__main__":
    main(sys.argv[1])
