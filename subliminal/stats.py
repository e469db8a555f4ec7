"""Statistics shared by every comparison the lab reports.

The unit of evidence is a *replicate*: an independent (teacher seed, student seed, data seed)
triple, run through both arms. Claims are decided by tests over per-replicate lifts
(`replicate_test`): a one-sample t-test (the deciding test) beside the exact sign-flip
permutation test, whose smallest attainable p-value is 2 / 2^n (three replicates can never
reach p < 0.01 that way). `within_pair` compares two *models* question by question; it says
"these two models differ", which almost any two fine-tunes do, so it is only ever reported as
a labelled description of one pair.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps
from scipy.optimize import brentq

ALPHA = 0.01   # the decision threshold the lab's verdicts use (docs/transfer_protocol.md)
POWER = 0.80   # the power at which the detectable lift is quoted


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict:
    """Mean, sample std and a Student-t confidence interval of `values`."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = float(x.mean())
    same = n > 1 and float(np.ptp(x)) == 0.0  # exact test: a float mean leaves std ~1e-17
    std = 0.0 if n == 1 or same else float(x.std(ddof=1))
    # One value, or one value repeated, has no spread to build an interval from.
    half = float(sps.t.ppf(0.5 + level / 2, n - 1) * std / np.sqrt(n)) if std > 0 \
        else float("nan")
    return {"mean": mean, "std": std, "ci": [mean - half, mean + half], "n": n}


def sign_flip_p(diffs: Sequence[float]) -> float:
    """Exact two-sided sign-flip permutation p-value of mean(diffs) = 0.

    Under the null each replicate's lift is symmetric about zero, so all 2^n sign patterns are
    equally likely; p = share of patterns whose |mean| reaches the observed one (the observed
    pattern included, so p >= 2 / 2^n when no lift is exactly zero).
    """
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    if n == 0:
        raise ValueError("sign_flip_p needs at least one value")
    if n > 20:
        raise ValueError("exact enumeration is for n <= 20 replicates")
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    means = np.abs(signs @ d) / n
    observed = abs(d.mean())
    return float(np.mean(means >= observed - 1e-12 * max(1.0, observed)))


def t_test_p(diffs: Sequence[float]) -> float:
    """Two-sided one-sample t-test of mean(diffs) = 0 (1.0 when it cannot be computed).

    Identical replicates carry no spread to test against: they are one observation repeated
    (a seed-independent injection), never p = 0, so the test cannot reject."""
    d = np.asarray(diffs, dtype=float)
    if len(d) < 2 or float(np.ptp(d)) == 0.0:  # exact: no spread, nothing to test against
        return 1.0
    return float(sps.ttest_1samp(d, 0.0).pvalue)


def t_power(lift: float, std: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided one-sample t-test over n replicates at `alpha` when the true mean
    lift is `lift` and the replicates' true spread is `std`: exact, from the noncentral t
    distribution (df = n - 1, noncentrality lift * sqrt(n) / std)."""
    if n < 2 or not np.isfinite(std) or std <= 0:
        return float("nan")
    df, ncp = n - 1, lift * np.sqrt(n) / std
    crit = sps.t.ppf(1 - alpha / 2, df)
    # The far tail is negligible and scipy returns NaN for it at large noncentrality.
    return float(sps.nct.sf(crit, df, ncp) + np.nan_to_num(sps.nct.cdf(-crit, df, ncp)))


def detectable_lift(std: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true mean lift the t-test detects at `alpha` (two-sided) with `power`, if the
    replicates' true spread is `std`; solved exactly on the noncentral t (the normal-theory
    shortcut (t_a + t_power) s / sqrt(n) overstates power at small n). Infinite when n < 2."""
    if n < 2 or not np.isfinite(std) or std == 0:  # no spread: the t-test cannot run
        return float("inf")
    hi = std
    while t_power(hi, std, n, alpha) < power:
        hi *= 2
    return float(brentq(lambda d: t_power(d, std, n, alpha) - power, 0.0, hi, xtol=1e-10))


def spread_range(std: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Confidence interval of the replicates' true spread from their sample std (chi-square,
    n - 1 df): the spread is itself uncertain at a handful of replicates."""
    df = n - 1
    if df < 1 or not np.isfinite(std):
        return float("nan"), float("nan")
    lo = std * np.sqrt(df / sps.chi2.ppf(0.5 + level / 2, df))
    hi = std * np.sqrt(df / sps.chi2.ppf(0.5 - level / 2, df))
    return float(lo), float(hi)


def power_statement(std: float, n: int, alpha: float = ALPHA, power: float = POWER) -> dict:
    """The detectable lift at the observed spread, and its range over the spread's own 95%
    interval (what a reader should take as the design's reach)."""
    lo, hi = spread_range(std, n)
    return {"detectable_lift": detectable_lift(std, n, alpha, power),
            "detectable_lift_range": [detectable_lift(lo, n, alpha, power),
                                      detectable_lift(hi, n, alpha, power)],
            "power": power, "power_method": "noncentral t, exact"}


def replicate_test(lifts: Sequence[float], alpha: float = ALPHA) -> dict:
    """Replicate-level evidence for a lift: mean and 95% CI over replicates, the deciding
    t-test p, the exact sign-flip p and its floor, and the detectable lift at `alpha`."""
    ci = mean_ci(lifts)
    n = ci["n"]
    return {"mean": ci["mean"], "ci": ci["ci"], "std": ci["std"], "n_replicates": n,
            "lifts": [float(v) for v in lifts],
            "p_value": t_test_p(lifts), "deciding_test": "t-test over replicates",
            "p_sign_flip": sign_flip_p(lifts), "p_sign_flip_floor": 2.0 / 2 ** n,
            **power_statement(ci["std"], n, alpha), "alpha": alpha}


def within_pair(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """Two models compared question by question (paired t over questions): a description of
    *one pair of models*, never evidence of transfer."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"within_pair needs equal lengths, got {x.shape} and {y.shape}")
    d = x - y
    out = mean_ci(d, level)
    return {"diff": out["mean"], "ci": out["ci"], "p_over_questions": t_test_p(d),
            "n_questions": out["n"]}


def paired_test(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """Arm a against arm b paired over *replicates* (a[i], b[i] share replicate i's seeds):
    mean difference, its CI and the two-sided t-test p-value over replicates."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired_test needs equal lengths, got {x.shape} and {y.shape}")
    d = x - y
    out = mean_ci(d, level)
    return {"lift": out["mean"], "ci": out["ci"], "p_value": t_test_p(d), "n": out["n"]}
