"""The crossed read-out: do a trait's students move toward *their* teacher's trait more than
toward the traits of the other teachers built by the same recipe?

    subliminal study --traits owl,dolphin,eagle,cat --replicates 6      # writes study.json

For one student recipe, replicate r and teacher arm t, the student's audit gives every
catalogue animal c a share log-odds, S_r[t][c] (mean over questions of log P(c) - log of the
other animals' mass). The deciding statistic of replicate r is the diagonal contrast

    D_r = mean over traits c of ( S_r[c][c] - mean over teachers t != c of S_r[t][c] )

— each audited trait is compared with itself across students, so base rates cancel, and a
teacher recipe that moves every student's profile alike (a generic or profile shift) cancels
too. D_r is tested over replicates (t-test decides; sign-flip beside it; power from the
noncentral t). `confusion[t][c]` is the lift of S[t][c] over the control twin's student
(reference only: the twin differs from every trait teacher across the whole profile, so it
cannot decide). The same contrast on raw log P(c) checks that the share does not move by its
denominator alone.
"""

from __future__ import annotations

import math

import numpy as np

from subliminal.audit import share_logodds
from subliminal.layout import CONTROL, audit_key
from subliminal.stats import ALPHA, mean_ci, replicate_test


def _share(probe: dict, animal: str) -> float:
    return float(np.mean(share_logodds(probe, animal)))


def _logp(probe: dict, animal: str) -> float:
    j = probe["animals"].index(animal)
    return float(np.mean([math.log(max(row[j], 1e-30)) for row in probe["probs"]]))


def _rate(probe: dict, animal: str) -> float:
    """Mean over questions of the probability (or, sampled, the mention rate)."""
    j = probe["animals"].index(animal)
    return float(np.mean([row[j] for row in probe["probs"]]))


METRICS = {"share": _share, "rate": _rate}


def matrix(audits: dict, r: int, k: int, student: str, traits: list[str], read) -> dict:
    """read(probe of teacher t's student, c) for every teacher t (and the control) and c."""
    arms = [*traits, CONTROL] if audit_key(r, CONTROL, k, student) in audits else traits
    return {t: {c: read(audits[audit_key(r, t, k, student)], c) for c in traits} for t in arms}


def diagonal(m: dict, traits: list[str]) -> float:
    """Mean over traits of (diagonal cell - mean of the column's off-diagonal cells)."""
    return float(np.mean([m[c][c] - np.mean([m[t][c] for t in traits if t != c])
                          for c in traits]))


def per_trait(m: dict, traits: list[str]) -> dict[str, float]:
    return {c: float(m[c][c] - np.mean([m[t][c] for t in traits if t != c])) for c in traits}


def readout(audits: dict, traits: list[str], reps: list[int], k: int = 1,
            student: str = "", alpha: float = ALPHA, metric: str = "share") -> dict:
    """The crossed read-out of one student recipe (or, k=0, of the teachers themselves).
    `metric`: 'share' (share log-odds, the deciding one) or 'rate' (mean probability, e.g.
    the sampled audit's mention rate)."""
    shares = [matrix(audits, r, k, student, traits, METRICS[metric]) for r in reps]
    # Raw log P only for the exact probe: a sampled mention rate of 0 has no logarithm.
    logps = ([matrix(audits, r, k, student, traits, _logp) for r in reps]
             if metric == "share" else [])
    test = replicate_test([diagonal(m, traits) for m in shares], alpha)
    confusion = {}
    if all(CONTROL in m for m in shares):
        for t in traits:
            confusion[t] = {c: _ci([m[t][c] - m[CONTROL][c] for m in shares]) for c in traits}
    per = {c: replicate_test([per_trait(m, traits)[c] for m in shares], alpha) for c in traits}
    return {"n_replicates": len(reps), "diagonal_test": {
                "lift": test["mean"], **{k_: test[k_] for k_ in (
                    "ci", "p_value", "deciding_test", "p_sign_flip", "p_sign_flip_floor",
                    "detectable_lift", "detectable_lift_range", "power_method", "lifts",
                    "std")},
                "statistic": "per replicate: mean over traits of (own teacher's student - "
                             "other teachers' students) " + ("share log-odds" if metric ==
                                                              "share" else "mean rate")},
            "raw_logp_diagonal_test": _brief(replicate_test(
                [diagonal(m, traits) for m in logps], alpha)) if logps else None,
            "per_trait": {c: _brief(v) for c, v in per.items()},
            "confusion_vs_control": confusion,
            "share_matrix_mean": {t: {c: float(np.mean([m[t][c] for m in shares]))
                                      for c in traits}
                                  for t in shares[0] if all(t in m for m in shares)},
            "verdict": verdict(test, k, alpha)}


def movement(audits: dict, reps: list[int], student: str = "", k: int = 1) -> dict:
    """How far a recipe moved a model that learned nothing specific: per replicate, the mean
    over the catalogue's animals of |share log-odds of the control twin's student - the
    base's|, with its mean and CI over replicates. A null of the diagonal test is read with
    it: a recipe that did not move the model at all could not have transferred anything."""
    base = audits["base"]
    per = []
    for r in reps:
        twin = audits[audit_key(r, CONTROL, k, student)]
        per.append(float(np.mean([abs(_share(twin, c) - _share(base, c))
                                  for c in base["animals"]])))
    return {**_ci(per), "per_replicate": per, "n_replicates": len(per),
            "statistic": "mean over catalogue animals of |share log-odds, control twin's "
                         "student - base|"}


def _ci(values: list[float]) -> dict:
    ci = mean_ci(values)
    return {"mean": ci["mean"], "ci": ci["ci"]}


def _brief(test: dict) -> dict:
    return {"mean": test["mean"], "ci": test["ci"], "p_value": test["p_value"],
            "p_sign_flip": test["p_sign_flip"], "lifts": test["lifts"]}


def verdict(test: dict, k: int, alpha: float = ALPHA) -> str:
    """One line: specific or not, with the design's reach when not."""
    what = "teachers (injections)" if k == 0 else "students"
    det, (lo, hi) = test["detectable_lift"], test["detectable_lift_range"]
    if test["n_replicates"] > 1 and test["p_value"] < alpha and test["mean"] > 0:
        return (f"{what}: specific (diagonal lift {test['mean']:+.3g}, p={test['p_value']:.2g} "
                f"over {test['n_replicates']} replicates)")
    reach = (f"detectable diagonal lift at p<{alpha:g}, 80% power (noncentral t): {det:+.3g} "
             f"({lo:+.2g} to {hi:+.2g} over the spread's 95% range)" if math.isfinite(det)
             else "one replicate: nothing is detectable")
    return (f"{what}: no specific effect detected (diagonal lift {test['mean']:+.3g}, "
            f"p={test['p_value']:.2g}); {reach}")
