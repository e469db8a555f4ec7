"""Confidence intervals and paired tests shared by every comparison the lab reports.

Every number the lab prints about a trait is a mean with a 95% CI; every comparison of two
arms is paired over the same items (questions, seeds) so item difficulty cancels out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats as sps


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict:
    """Mean, sample std and a Student-t confidence interval of `values`."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    if n > 1 and std > 0:
        half = float(sps.t.ppf(0.5 + level / 2, n - 1) * std / np.sqrt(n))
    else:
        half = 0.0
    return {"mean": mean, "std": std, "ci": [mean - half, mean + half], "n": n}


def paired_test(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """Paired comparison of a against b: mean difference, its CI and a two-sided p-value.

    Uses the paired t-test on the differences; if all differences are equal the p-value is 1
    for zero difference and 0 otherwise (the t statistic is undefined there).
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired_test needs equal lengths, got {x.shape} and {y.shape}")
    d = x - y
    out = mean_ci(d, level)
    if len(d) < 2 or float(d.std()) == 0.0:
        p = 1.0 if float(np.abs(d).max(initial=0.0)) == 0.0 else 0.0
    else:
        p = float(sps.ttest_rel(x, y).pvalue)
    return {"lift": out["mean"], "ci": out["ci"], "p_value": p, "n": out["n"]}
