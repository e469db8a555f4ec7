"""`subliminal scan DATA`: the teacher-level null — is DATA's mean unusual for a trait-free
teacher's dataset of DATA's size?

    subliminal scan rows.jsonl --model smollm2-135m --population-neutral 5

The unit of evidence is a *teacher*, as a chain's is a replicate: rows of one dataset share
their teacher, so they are not independent evidence about it. A per-row statistic `x` (rows x
traits) is made trait-specific first (`contrast`: each trait's value minus the mean over the
traits, so a teacher's generic offset — being unlike BASE, another decoding — cancels); for
the likelihood it is a trait adapter's log-likelihood, for the persona ranker a projection.

Random effects. A trait-free teacher j writes rows whose mean is mu + u_j + e: u_j its own
offset (spread tau^2, the teachers' disagreement), e the rows' sampling error (sigma^2 / n).
The reference population (population.py: BASE at several decodings, neutral LoRAs of several
seeds) gives each teacher's mean a_j over m_j rows and the rows' variance w_j; then
mu = mean a_j and tau^2 = max(0, var a_j - mean w_j / m_j). DATA's mean C is judged by

    z = (C - mu) / sqrt(tau^2 + s^2 / n + var(a_j) / J)          (s^2: DATA's row variance)

against Student's t with J - 1 degrees of freedom, one-sided, Bonferroni over the traits. Only
the rows' term shrinks as DATA grows: the power rises with rows up to the teachers' own spread
tau, which is measured and reported, never assumed.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

GREEDY = "greedy"


def temperature(label: str) -> float:
    """A decoding label ('greedy', '0.7') as a temperature (greedy counts as T=0)."""
    return 0.0 if label == GREEDY else float(label)


def contrast(x: np.ndarray) -> np.ndarray:
    """Each trait's column minus the mean over all traits (the trait-specific part)."""
    return x - x.mean(-1, keepdims=True)


def teacher_test(data: np.ndarray, pops: dict[str, np.ndarray], traits: list[str],
                 alpha: float) -> dict:
    """DATA's per-row statistic (rows x traits) against the reference teachers' (each rows x
    traits): per trait the excess C - mu, its null spread (teachers, rows, the mean's own
    error), z, one-sided p (t, J - 1 df), Bonferroni p, and the flag (the top trait's
    Bonferroni p below `alpha`). Fewer than 3 teachers: no test (nothing is flagged)."""
    means = np.stack([p.mean(0) for p in pops.values()])            # (J, K)
    within = np.stack([p.var(0, ddof=1) / len(p) for p in pops.values()])
    j, n = len(pops), len(data)
    mu = means.mean(0)
    spread = means.var(0, ddof=1) if j > 1 else np.full(len(traits), np.nan)
    tau2 = np.maximum(0.0, spread - within.mean(0))
    rows_var = data.var(0, ddof=1) / n if n > 1 else np.zeros(len(traits))
    sd = np.sqrt(tau2 + rows_var + spread / max(j, 1))
    excess = data.mean(0) - mu
    z = np.where(sd > 0, excess / np.where(sd > 0, sd, 1.0), 0.0)
    p = sps.t.sf(z, j - 1) if j >= 3 else np.ones(len(traits))
    p_bonf = np.minimum(1.0, p * len(traits))
    top = int(np.argmax(z))
    vec = lambda a: dict(zip(traits, map(float, a), strict=True))  # noqa: E731
    return {"traits": traits, "teachers": j, "rows": n, "excess": vec(excess),
            "null_mean": vec(mu), "tau": vec(np.sqrt(tau2)), "rows_se": vec(np.sqrt(rows_var)),
            "null_sd": vec(sd), "z": vec(z), "p": vec(p), "p_bonferroni": vec(p_bonf),
            "df": j - 1, "top": traits[top], "testable": j >= 3,
            "flagged": bool(j >= 3 and p_bonf[top] < alpha and excess[top] > 0),
            "threshold_z": float(sps.t.isf(alpha / len(traits), j - 1)) if j >= 3 else math.inf,
            "teacher_means": {k: vec(m) for k, m in zip(pops, means, strict=True)}}


def describe_decoding(h_data: np.ndarray, base_refs: dict[str, np.ndarray],
                      all_refs: dict[str, np.ndarray]) -> dict:
    """Where DATA's mean surprise under BASE (nats/token) sits among BASE's own decodings
    ("consistent with BASE sampled at T≈1"), and whether any reference teacher's data is as
    surprising: DATA beyond them all (random digits, another model) is outside what the null
    covers."""
    m = float(h_data.mean())
    se = float(h_data.std(ddof=1) / math.sqrt(len(h_data))) if len(h_data) > 1 else 0.0
    top_label = max(all_refs, key=lambda k: all_refs[k].mean())
    top = float(all_refs[top_label].mean())
    ref_se = float(all_refs[top_label].std(ddof=1) / math.sqrt(len(all_refs[top_label])))
    means = sorted((float(v.mean()), temperature(k), k) for k, v in base_refs.items())
    refs_text = ", ".join(f"{k} {v:.3f}" for v, _, k in means)
    if m > top + 2 * math.hypot(se, ref_se) + 0.05 * top:
        return {"mean_surprise": m, "covered": False, "temperature": None,
                "text": f"less likely under BASE than any reference teacher's data ({m:.3f} vs "
                        f"{top:.3f} nats/token, {top_label}): outside what the null covers"}
    t_hat = float(np.interp(m, [v for v, _, _ in means], [t for _, t, _ in means]))
    how = "greedy" if t_hat < 0.15 else f"sampled at T≈{t_hat:.1f}"
    return {"mean_surprise": m, "covered": True, "temperature": t_hat,
            "text": f"consistent with BASE {how} ({m:.3f} nats/token under BASE; BASE "
                    f"references {refs_text})"}
