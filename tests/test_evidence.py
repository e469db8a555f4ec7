"""Honest evidence: leak-free stored distributions, replicate-level tests, verdicts."""

import itertools
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from subliminal.channels import get_channel
from subliminal.distill import restricted_kl
from subliminal.report import verdict
from subliminal.stats import replicate_test, sign_flip_p
from subliminal.teacher import DecodeConfig, Teacher, channel_mask, generate_batch


def _allowed(lm, channel) -> set[int]:
    return set(torch.nonzero(channel_mask(lm, channel, len(lm.tokenizer))).flatten().tolist())


@pytest.mark.parametrize("constrained", [True, False])
@pytest.mark.parametrize("decoding", ["sample", "greedy"])
def test_restricted_distributions_hold_only_channel_tokens(tiny, constrained, decoding):
    """No stored position carries a token outside the channel's allowed set, and each stored
    distribution is normalised over the tokens it keeps."""
    channel = get_channel("numbers")
    cfg = DecodeConfig(decoding=decoding, constrained=constrained, top_k=20, batch_size=4)
    rows = generate_batch(Teacher(tiny, "You love owls."), channel.prompts(4, 3), cfg, channel,
                          seed=1)
    allowed = _allowed(tiny, channel)
    for row in rows:
        assert row["logits_channel"] == "restricted"
        assert len(row["topk_ids"]) == len(row["completion_ids"])
        for ids, lps in zip(row["topk_ids"], row["topk_logprobs"], strict=True):
            assert ids and set(ids) <= allowed
            # The tiny vocabulary allows < 20 channel tokens, so nothing was truncated.
            assert sum(np.exp(lps)) == pytest.approx(1.0, abs=0.02)


def test_overt_control_is_labelled_and_unrestricted(tiny):
    channel = get_channel("numbers")
    cfg = DecodeConfig(decoding="greedy", constrained=False, top_k=20, logits="overt")
    row = generate_batch(Teacher(tiny), channel.prompts(2, 0), cfg, channel, seed=0)[0]
    assert row["logits_channel"] == "overt"
    assert all(len(ids) == 20 for ids in row["topk_ids"])
    assert not set(itertools.chain(*row["topk_ids"])) <= _allowed(tiny, channel)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_restricted_kl_ignores_tokens_outside_the_channel(seed):
    """Moving the student's mass on tokens outside the stored set changes nothing; the loss is
    zero exactly when the student's renormalised odds over the set match the teacher's."""
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(3, 50, generator=g)
    ids = torch.tensor([[1, 2, 3, 0], [4, 5, 6, 7], [8, 9, 0, 0]])
    lp = torch.log_softmax(torch.randn(3, 4, generator=g), -1)
    lp[0, 3] = lp[2, 2] = lp[2, 3] = float("-inf")  # ragged rows are padded with -inf
    base = restricted_kl(student, ids, lp)
    shifted = student.clone()
    shifted[:, 20:] += 5 * torch.randn(3, 30, generator=g)  # tokens no stored set holds
    assert torch.allclose(restricted_kl(shifted, ids, lp), base, atol=1e-5)
    assert base >= -1e-6
    match = torch.full((3, 50), -30.0)
    for r in range(3):
        valid = lp[r].isfinite()
        match[r, ids[r][valid]] = lp[r][valid] + 7.0  # same odds, any offset
    assert restricted_kl(match, ids, lp) < 1e-5


def test_sign_flip_is_exact_for_small_n():
    assert sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)  # floor 2/2^n
    assert sign_flip_p([0.5, -0.5, 1.0, -1.0]) == 1.0
    # Brute force on a ragged example: share of sign patterns with |mean| >= observed.
    d = np.array([0.3, -0.1, 0.7, 0.2, -0.4])
    pats = np.array(list(itertools.product((1, -1), repeat=5)))
    brute = np.mean(np.abs(pats @ d) >= abs(d.sum()) - 1e-12)
    assert sign_flip_p(d) == pytest.approx(brute)


def test_replicate_test_finds_a_planted_effect_and_holds_the_null():
    rng = np.random.default_rng(0)
    planted = replicate_test(rng.normal(1.0, 0.2, size=6))
    assert planted["p_value"] < 0.01 and planted["ci"][0] > 0
    assert planted["p_sign_flip"] == pytest.approx(2 / 64)
    nulls = [replicate_test(rng.normal(0.0, 1.0, size=6))["p_value"] for _ in range(400)]
    assert np.mean(np.array(nulls) < 0.05) < 0.09  # ~5% false positives, never most draws
    assert planted["detectable_lift"] > 0
    assert replicate_test([0.1])["detectable_lift"] == float("inf")


def _test(mean, p):
    return {"mean": mean, "p_value": p, "detectable_lift": 0.4,
            "detectable_lift_range": [0.3, 0.9]}


def test_verdict_has_three_cases():
    assert verdict(_test(0.5, 0.001), _test(0.1, 0.5), _test(1e-4, 0.2)).startswith(
        "specific transfer")
    assert verdict(_test(0.01, 0.6), _test(0.4, 0.001), _test(2e-4, 0.003)).startswith(
        "generic drift, not specific")
    line = verdict(_test(0.01, 0.6), _test(0.02, 0.4), _test(1e-5, 0.5))
    assert line.startswith("no transfer detected") and "detectable" in line
    # A significant *fall* of the share is not transfer.
    assert not verdict(_test(-0.5, 0.001), _test(0.0, 0.9), _test(0.0, 0.9)).startswith(
        "specific")
    # The share rose, but so did generic drift, or another animal's share moved: named.
    assert verdict(_test(0.5, 0.001), _test(-0.4, 0.001), _test(1e-4, 0.2)).startswith(
        "generic drift, not specific")
    moved = {"p_value": {"cat": 0.001, "dog": 0.5}}
    line = verdict(_test(0.5, 0.001), _test(0.1, 0.5), _test(1e-4, 0.2), moved)
    assert line.startswith("profile shift, not specific") and "cat" in line and "dog" not in line
    assert "crossed study decides" in verdict(_test(0.5, 0.001), _test(0.1, 0.5),
                                              _test(1e-4, 0.2), {"p_value": {"cat": 0.5}})


def _pair(share_t: float) -> dict:
    return {"p_trait": 0.2, "p_control": 0.1, "share_trait": share_t, "share_control": 0.0,
            "drift": None, "side_effects": {}, "within_pair": {"diff": 0.1}}


def test_identical_replicates_are_one_pair_not_p_zero():
    """A seed-independent teacher repeated over replicates has no spread: the t-test must not
    read it as certainty, and the generation says it holds one pair."""
    from subliminal.report import generation_row

    for v in (0.3, 0.1, 0.2 - 0.1, 0.7):  # means of repeated floats are not exact
        test = replicate_test([v] * 7)
        assert test["p_value"] == 1.0 and np.isnan(test["ci"][0])
    row = generation_row(0, [_pair(0.2 - 0.1)] * 3, {})
    assert row["identical_replicates"] and "one pair repeated" in row["verdict"]
    assert row["n_replicates"] == 1 and row["p_value"] == 1.0
    assert row["specificity"]["p_value"] == 1.0 and np.isnan(row["specificity"]["ci"][0])
    varied = generation_row(0, [_pair(0.3), _pair(0.31), _pair(0.29)], {})
    assert not varied["identical_replicates"] and varied["specificity"]["p_value"] < 0.01


def test_an_identical_audit_is_reused_within_a_run(tmp_path, monkeypatch):
    """The same weights under the same prompt and audit are probed once per run; a second
    stage folder copies the probe (exact and deterministic), anything else recomputes."""
    import subliminal.stages as stages_mod
    from subliminal.audit import AuditConfig
    from subliminal.injections import TeacherSpec
    from subliminal.schema import AnimalProbe
    from subliminal.stages import AuditStage

    calls = []

    def probe(sp):  # a probe of one animal, told apart by its system prompt
        return AnimalProbe(animals=["owl"], probs=[[0.5]], system_prompt=sp)

    monkeypatch.setattr(stages_mod, "run_audit",  # where AuditStage looks it up
                        lambda lm, cfg, sp, label="", trait=None: calls.append(sp) or probe(sp))

    def stage(name, prompt):
        return AuditStage(tmp_path / name, model="tiny", config=AuditConfig(side_effects=False),
                          teacher=TeacherSpec(system_prompt=prompt), run_dir=tmp_path).run()

    assert stage("a", "You love owls.") == stage("b", "You love owls.") == probe("You love owls.")
    assert calls == ["You love owls."]  # the second folder did not probe again
    assert stage("c", "You love cats.") == probe("You love cats.") and len(calls) == 2
    assert json.loads((tmp_path / "b" / "complete.json").read_text())["reused_from"] == "a"
    assert "reused_from" not in json.loads((tmp_path / "a" / "complete.json").read_text())


def test_plot_of_a_forced_choice_run_without_the_battery(tmp_path):
    """A behaviour trait run with --no-side-effects has no drift and no side-effect grid; its
    summary must still plot (it once crashed the chain after the first replicate)."""
    from subliminal.report import generation_row, plot

    rows = [generation_row(g, [_pair(0.3), _pair(0.1)], {}) for g in (0, 1)]
    plot({"trait": "gloomy", "generations": rows}, tmp_path / "summary.png")
    assert (tmp_path / "summary.png").stat().st_size > 1000


def test_detectable_lift_has_the_power_it_claims():
    """The detectable lift at 80% power is solved on the noncentral t: simulated t-tests of
    that lift reject at ~80% (the normal shortcut it replaced fell short at small n)."""
    from subliminal.stats import detectable_lift, spread_range, t_power

    rng = np.random.default_rng(0)
    for n in (3, 6):
        d = detectable_lift(1.0, n)
        x = rng.normal(d, 1.0, size=(20000, n))
        t = x.mean(1) / (x.std(1, ddof=1) / np.sqrt(n))
        crit = sps_t_ppf(0.995, n - 1)
        assert abs(np.mean(np.abs(t) > crit) - 0.80) < 0.015
        assert t_power(d, 1.0, n) == pytest.approx(0.80, abs=1e-6)
    lo, hi = spread_range(1.0, 6)
    assert lo < 1.0 < hi and detectable_lift(hi, 6) > detectable_lift(lo, 6)
    assert detectable_lift(0.0, 6) == float("inf")  # no spread: the test cannot run


def sps_t_ppf(q, df):
    from scipy import stats

    return stats.t.ppf(q, df)


def _panel(owl: float, cat: float, rng) -> dict:
    """A probe of 14 animals over 20 questions: owl and cat scaled, the others as drawn, the
    total animal mass the same in expectation (no generic drift)."""
    from subliminal.trait import CATALOGUE

    animals = list(CATALOGUE)
    probs = []
    for _ in range(20):
        row = [rng.uniform(0.5, 1.5) / 100 for _ in animals]
        row[animals.index("owl")] *= owl
        row[animals.index("cat")] *= cat
        mass = rng.uniform(0.13, 0.15)
        probs.append([x * mass / sum(row) for x in row])
    return {"probe": "prefill", "animals": animals, "probs": probs, "system_prompt": None}


def _summary(tmp_path, cat: float, version: int):
    """Teachers whose owl takes most of the animal mass (x300), cat x`cat` among the rest."""
    from subliminal.report import summarize

    rng = np.random.default_rng(7)
    audits = {"base": _panel(1, 1, rng)}
    for r in range(4):
        audits[f"rep{r}/trait/gen0"] = _panel(300, cat, rng)
        audits[f"rep{r}/control/gen0"] = _panel(1, 1, rng)
    return summarize(tmp_path, "owl", audits, 4, 0, version)["generations"][0]


def test_a_target_taking_the_mass_is_not_a_profile_shift_but_another_animal_rising_is(
        tmp_path):
    """Version 3 reads the other animals among themselves: owl at ~95% of the mass lowers
    every plain share by arithmetic (the version-2 rule called all 13 'moved'), while cat
    tripling among the rest is a profile shift under either rule. (Noise alone still moves
    an animal at p < 0.01 now and then: 13 tests, no correction — here wolf, once.)"""
    def moved(row, among_rest=True):
        o = row["other_animals_share_lift"]
        return {a for a, p in (o["among_rest"] if among_rest else o)["p_value"].items()
                if p < 0.01}

    alone, old = _summary(tmp_path, cat=1, version=3), _summary(tmp_path, cat=1, version=2)
    plain = alone["other_animals_share_lift"]
    assert all(v < -1 for a, v in plain["lift"].items() if a != "owl")  # the arithmetic
    assert max(abs(v) for v in plain["among_rest"]["lift"].values()) < 0.3
    assert len(moved(alone, among_rest=False)) == 13 and "among_rest" not in old[
        "other_animals_share_lift"]
    assert len(moved(alone)) <= 1 and "cat" not in moved(alone)
    assert old["verdict"].count(",") > alone["verdict"].count(",") + 10  # 13 names vs <= 1
    shifted = _summary(tmp_path, cat=3, version=3)
    assert "cat" in moved(shifted) and "cat" in shifted["verdict"]
    assert shifted["other_animals_share_lift"]["among_rest"]["lift"]["cat"] > 0.9
