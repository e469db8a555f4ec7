"""The canary's power read off a crossed study's students (subliminal/scan/canary_power.py)."""

import math

import pytest

from subliminal.layout import CONTROL, audit_key
from subliminal.scan.canary_power import canary_power, lifts, seeds_for
from subliminal.stats import t_power

ANIMALS = ["owl", "dolphin", "eagle", "cat"]


def probe(weights: dict[str, float]) -> dict:
    """One question whose animal probabilities are `weights` (the rest uniform at 0.25)."""
    return {"animals": ANIMALS, "probs": [[weights.get(a, 0.25) for a in ANIMALS]]}


def study(owl_mass: list[float]) -> dict:
    """Replicate r: owl's student puts owl_mass[r] on owl, the rest spread evenly; dolphin's
    student is the control twin's (uniform)."""
    out = {}
    for r, m in enumerate(owl_mass):
        out[audit_key(r, "owl", 1)] = probe({"owl": m, **{a: (1 - m) / 3 for a in ANIMALS[1:]}})
        out[audit_key(r, "dolphin", 1)] = probe({})
        out[audit_key(r, CONTROL, 1)] = probe({})
    return out


def test_the_specific_lift_is_the_lift_minus_the_other_animals_mean_lift():
    # control: every share is log(1/3); owl's student: owl log(1) = 0, others log(1/5)
    owl = lifts(study([0.5]), "owl", 0)
    assert owl["owl"] == pytest.approx(math.log(3))
    assert owl["cat"] == pytest.approx(math.log(3 / 5))
    res = canary_power(study([0.5, 0.5]), ["owl"], [0, 1], seeds=(3,))
    assert res["traits"]["owl"]["specific_lift"] == pytest.approx([math.log(5)] * 2)


def test_a_trait_that_moves_tops_the_catalogue_and_gains_power_with_seeds():
    res = canary_power(study([0.40, 0.45, 0.50, 0.42]), ["owl", "dolphin"], [0, 1, 2, 3],
                       seeds=(3, 6, 12))
    owl, dolphin = res["traits"]["owl"], res["traits"]["dolphin"]
    assert res["catalogue"] == 4 and res["per_test_alpha"] == pytest.approx(0.01 / 4)
    assert owl["top_in_replicates"] == 4 and owl["top_of_means"] == "owl"
    power = [owl["power"][n] for n in ("3", "6", "12")]
    assert power == sorted(power) and power[0] < power[-1]
    # a student identical to the twin's: nothing to find, at any number of seeds
    assert dolphin["mean"] == 0 and dolphin["power"]["12"] == 0
    assert dolphin["seeds_for_80pct"] is None and dolphin["p_bonferroni"] == 1.0


def test_seeds_for_is_the_first_count_reaching_the_power():
    n = seeds_for(0.1, 0.08, 0.01 / 14)
    assert t_power(0.1, 0.08, n, 0.01 / 14) >= 0.8 > t_power(0.1, 0.08, n - 1, 0.01 / 14)
    assert seeds_for(-0.1, 0.08, 0.01) is None and seeds_for(1e-4, 1.0, 1e-6) is None

