"""How often would the canary flag a trait's data? Its own statistic on a study's students.

    python pipelines/canary_power.py docs/evidence/e5-sft-adapter-sample --student allx2r32

The canary (`canary.py`) trains, per seed, one student on DATA and one on a trait-free
teacher's rows, and tests each animal's *specific lift* (the animal's share log-odds lift of
DATA's student over the reference student, minus the mean lift of the other catalogue
animals) over seeds, Bonferroni over the catalogue. A crossed study (`subliminal study`) holds
that pair in every replicate: the student of trait T's teacher and the control twin's student,
built by one recipe on equal rows. So T's specific lift per replicate, its spread and whether
T tops the catalogue are measured there, and the noncentral t turns them into the canary's
power at n seeds. It describes a canary trained like the study's students (the same channel,
loss, rank, rows and steps); the built-in canary's recipe is `CanaryConfig`'s.
"""

from __future__ import annotations

import numpy as np

from subliminal.layout import CONTROL, audit_key
from subliminal.scan.canary import share_lifts, specific
from subliminal.stats import ALPHA, POWER, t_power, t_test_p

MAX_SEEDS = 200  # seeds_for gives up beyond this (reported as None)


def lifts(audits: dict, trait: str, r: int, student: str = "") -> dict[str, float]:
    """Replicate r: every catalogue animal's share log-odds lift of T's student over the
    control twin's (the canary's DATA student over its reference student)."""
    return share_lifts(audits[audit_key(r, trait, 1, student)],
                       audits[audit_key(r, CONTROL, 1, student)])


def seeds_for(mean: float, std: float, alpha: float, power: float = POWER) -> int | None:
    """Fewest seeds whose t-test (two-sided, at alpha) reaches `power` if the truth is the
    measured mean and spread (a plug-in figure); None when MAX_SEEDS do not."""
    if mean <= 0 or not np.isfinite(std) or std <= 0:
        return None
    return next((n for n in range(2, MAX_SEEDS + 1) if t_power(mean, std, n, alpha) >= power),
                None)


def one_trait(audits: dict, trait: str, reps: list[int], student: str, seeds: list[int],
              alpha: float) -> dict:
    """T's specific lift over replicates, how often T tops the catalogue, and the power of
    T's own test at each seed count (Bonferroni over the catalogue). The canary flags only
    its top animal, so this bounds T's flag rate from above."""
    spec = [specific(lifts(audits, trait, r, student)) for r in reps]
    own = [s[trait] for s in spec]
    k = len(spec[0])
    mean, std = float(np.mean(own)), float(np.std(own, ddof=1))
    means = {a: float(np.mean([s[a] for s in spec])) for a in spec[0]}
    bonferroni = alpha / k
    return {"specific_lift": own, "mean": mean, "std": std,
            "p_bonferroni": min(1.0, t_test_p(own) * k),
            "top_in_replicates": sum(max(s, key=s.get) == trait for s in spec),
            "top_of_means": max(means, key=means.get),
            "power": {str(n): t_power(mean, std, n, bonferroni) if mean > 0 else 0.0
                      for n in seeds},
            "seeds_for_80pct": seeds_for(mean, std, bonferroni)}


def canary_power(audits: dict, traits: list[str], reps: list[int], student: str = "",
                 seeds: tuple[int, ...] = (3, 6, 8, 12), alpha: float = ALPHA) -> dict:
    """Every trait's canary figures from one study's students (recipe `student`)."""
    k = len(audits[audit_key(reps[0], CONTROL, 1, student)]["animals"])
    return {"n_replicates": len(reps), "student": student or "the cell's own",
            "alpha": alpha, "catalogue": k, "per_test_alpha": alpha / k,
            "power_method": "noncentral t at the measured mean and spread (plug-in)",
            "traits": {t: one_trait(audits, t, reps, student, list(seeds), alpha)
                       for t in traits}}
