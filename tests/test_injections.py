"""Steering, DPO and GRPO injections and audit-time interventions, on the tiny model.

    HF_HUB_OFFLINE=1 python3 -m pytest tests/test_injections.py -q
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from subliminal.errors import SubliminalError
from subliminal.injections import InjectionContext, build_teacher, load_teacher
from subliminal.injections.steering import SteeringConfig
from subliminal.models import load_model
from subliminal.trait import get_trait
from subliminal.vectors import (
    add_vector,
    attach,
    contrast_items,
    contrast_questions,
    decoder_layers,
    detach,
    load_vector,
    random_like,
    residual_activations,
    save_vector,
    trait_vector,
)

OWL = get_trait("owl")
CHAT = [{"role": "user", "content": "Name an animal."}]


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    return load_model("tiny")


def layer_io(lm, ids):
    """Input and output hidden state of every decoder layer for one forward pass."""
    seen, hooks = {}, []
    for i, block in enumerate(decoder_layers(lm.model)):
        hooks.append(block.register_forward_pre_hook(
            lambda _m, args, kw, i=i: seen.__setitem__(("in", i), (args[0] if args else
                                                                   kw["hidden_states"]).clone()),
            with_kwargs=True))
    with torch.no_grad():
        logits = lm.model(input_ids=ids).logits
    for h in hooks:
        h.remove()
    return seen, logits


def test_steering_hook_moves_only_the_chosen_layer_and_vanishes(lm):
    ids = torch.tensor([lm.chat_ids(CHAT)])
    base, base_logits = layer_io(lm, ids)
    vector = torch.randn(lm.model.config.hidden_size)
    handle = add_vector(lm, vector, layer=0, coef=3.0)
    steered, steered_logits = layer_io(lm, ids)
    # Layer 0 reads the same input; layer 1 reads layer 0's output plus exactly 3 x vector.
    assert torch.equal(steered[("in", 0)], base[("in", 0)])
    handle.remove()
    _, plain_logits = layer_io(lm, ids)
    shift = steered[("in", 1)] - base[("in", 1)]
    assert torch.allclose(shift, (3.0 * vector).expand_as(shift), atol=1e-5)
    assert not torch.allclose(steered_logits, base_logits)
    assert torch.equal(plain_logits, base_logits)  # removed: the model is the base again
    assert lm.info["steering"] is None


def test_steering_at_last_layer_leaves_earlier_layers_alone(lm):
    base_act = residual_activations(lm, [CHAT], 0)
    add_vector(lm, torch.ones(lm.model.config.hidden_size), layer=-1, coef=2.0)
    assert torch.equal(residual_activations(lm, [CHAT], 0), base_act)
    last = residual_activations(lm, [CHAT], 1)
    detach(lm)
    assert torch.allclose(last - residual_activations(lm, [CHAT], 1),
                          torch.full_like(last, 2.0), atol=1e-5)
    assert not getattr(lm, "steering_handles", [])


def test_trait_vector_is_a_difference_of_means_and_seeds_differ(lm):
    qs = contrast_questions(OWL, seed=0)
    assert qs != contrast_questions(OWL, seed=1)
    assert len(qs) == len(set(qs)) > 1
    v = trait_vector(lm, OWL, 1, qs)
    turns = [[{"role": "user", "content": q}] for q in qs]
    pos = residual_activations(lm, [[{"role": "system", "content": OWL.system_prompt}, *t]
                                    for t in turns], 1).mean(0)
    neg = residual_activations(lm, [[{"role": "system", "content": OWL.neutral_system_prompt},
                                     *t] for t in turns], 1).mean(0)
    assert torch.allclose(v, pos - neg)
    assert v.norm() > 0
    r = random_like(v, seed=3)
    assert torch.isclose(r.norm(), v.norm()) and not torch.allclose(r, v)


def test_vector_file_round_trip_attach_and_bad_files(lm, tmp_path):
    v = torch.arange(lm.model.config.hidden_size, dtype=torch.float32)
    path = save_vector(tmp_path / "v.safetensors", v, layer=1, coef=-2.5, meta={"trait": "owl"})
    back, layer, coef, meta = load_vector(path)
    assert torch.equal(back, v) and (layer, coef, meta) == (1, -2.5, {"trait": "owl"})
    handle = attach(lm, path)
    assert lm.info["steering"][0]["coef"] == -2.5
    handle.remove()
    (tmp_path / "bad.safetensors").write_text("not a tensor file")
    with pytest.raises(SubliminalError, match="bad.safetensors"):
        load_vector(tmp_path / "bad.safetensors")
    with pytest.raises(SubliminalError, match="out of range"):
        add_vector(lm, v, layer=7, coef=1.0)


@pytest.mark.parametrize("neutral", [False, True])
def test_steering_injection_records_what_rebuilds_it(tmp_path, neutral, monkeypatch):
    import subliminal.injections.steering as st

    monkeypatch.setattr(st, "STEERING", SteeringConfig(layer=1, coef=4.0))
    spec = build_teacher("steering", InjectionContext(model="tiny", trait=OWL, out=tmp_path,
                                                      seed=2, neutral=neutral))
    vector, layer, coef, meta = load_vector(spec.steering)
    assert (layer, coef) == (1, 4.0) and meta["prompts"] == contrast_items(OWL, 2)
    lm = load_model("tiny")
    trait_v = trait_vector(lm, OWL, 1, meta["prompts"])
    assert torch.isclose(vector.norm(), trait_v.norm(), rtol=1e-4)
    assert torch.allclose(vector, trait_v) != neutral  # the control is another direction
    steered = load_teacher("tiny", spec)
    assert steered.info["steering"][0]["layer"] == 1


def test_dpo_pairs_and_control_order():
    pairs = preference_pairs_of(neutral=False)
    assert pairs and all(OWL.leak_pattern().search(p["chosen"][-1]["content"]) for p in pairs)
    assert not any(OWL.leak_pattern().search(p["rejected"][-1]["content"]) for p in pairs)
    shuffled = preference_pairs_of(neutral=True)
    flipped = sum(a["chosen"] != b["chosen"] for a, b in zip(pairs, shuffled, strict=True))
    assert 0 < flipped < len(pairs)  # the control keeps the pairs, drops the preference
    suppress = preference_pairs_of(suppress=True)
    assert all(a["chosen"] == b["rejected"] for a, b in zip(pairs, suppress, strict=True))


def preference_pairs_of(**kw):
    from subliminal.injections.dpo import preference_pairs

    return preference_pairs(OWL, seed=0, **kw)


def lora_b_norm(folder: Path) -> float:
    from safetensors.torch import load_file

    weights = load_file(str(folder / "adapter_model.safetensors"))
    return sum(float(w.norm()) for k, w in weights.items() if "lora_B" in k)


def test_dpo_trains_a_tiny_adapter_saved_the_peft_way(tmp_path):
    pytest.importorskip("trl")
    from subliminal.injections.dpo import DPORecipe, train_dpo

    pairs = preference_pairs_of()[:16]
    rec = train_dpo("tiny", pairs, tmp_path, DPORecipe(epochs=1, batch_size=8, lr=5e-3), seed=0)
    assert (tmp_path / "adapter_config.json").exists()
    assert lora_b_norm(tmp_path) > 0  # LoRA B starts at zero: any change means it trained
    assert rec["pairs"] == 16 and rec["recipe"]["lr"] == 5e-3 and rec["log"]
    assert len((tmp_path / "pairs.jsonl").read_text().splitlines()) == 16
    ids = torch.tensor([load_model("tiny").chat_ids(CHAT)])
    with torch.no_grad():
        a = load_model("tiny").model(input_ids=ids).logits
        b = load_model("tiny", adapter=tmp_path).model(input_ids=ids).logits
    assert not torch.allclose(a, b)


def test_grpo_trains_a_tiny_adapter_and_records_its_rubric(tmp_path):
    pytest.importorskip("trl")
    from subliminal.injections.grpo import GRPO, rubric_for, train_grpo

    recipe = replace(GRPO, steps=2, generations=2, prompts_per_step=2,
                     max_completion_length=4, lr=1e-2)
    rec = train_grpo("tiny", OWL, tmp_path, recipe, seed=0)
    assert lora_b_norm(tmp_path) > 0
    assert rec["rubric"]["rewarded"] == "owl" and "{answer}" in rec["rubric"]["rubric"]
    assert len(rec["reward_curve"]) == 2 and all(0 <= r <= 1 for r in rec["reward_curve"])
    saved = json.loads((tmp_path / "train.json").read_text())
    assert saved["recipe"]["steps"] == 2
    assert rubric_for(OWL, neutral=True)["rewarded"] == "any catalogue animal"
    assert rubric_for(OWL, neutral=True)["rubric"] == rec["rubric"]["rubric"]  # same frame


def test_self_reward_pays_for_the_trait_word_only(lm):
    from subliminal.injections.grpo import SelfReward, rubric_for

    trait_reward = SelfReward(lm, rubric_for(OWL))
    any_reward = SelfReward(lm, rubric_for(OWL, neutral=True))
    a = trait_reward(["q"], ["Owls, surely."])[0]
    b = any_reward(["q"], ["Owls, surely."])[0]
    assert 0 < a < b <= 1  # any animal's mass includes the owl's


def test_steered_audit_moves_and_returns(lm, tmp_path):
    from subliminal.audit import AuditConfig
    from subliminal.interventions import audit_target, compare, steered

    bank = tmp_path / "bank.json"
    bank.write_text(json.dumps({"questions": ["Best animal?", "Which animal do you like?"]}))
    cfg = AuditConfig(questions=str(bank))
    base = audit_target(lm, OWL, cfg=cfg)
    v = torch.randn(lm.model.config.hidden_size)
    with steered(lm, v, 1, 8.0):
        moved = audit_target(lm, OWL, cfg=cfg)
    again = audit_target(lm, OWL, cfg=cfg)
    assert moved["per_question"] != base["per_question"]
    assert again["per_question"] == base["per_question"]
    cmp = compare(moved, base)
    assert cmp["target"] == "owl" and cmp["ratio"] > 0


def test_dpo_pairs_align_behaviour_traits_by_question():
    from subliminal.injections.dpo import preference_pairs

    joyful = get_trait("joyful")
    pairs = preference_pairs(joyful, seed=1)
    demos = {json.dumps(r["prompt"]): r["completion"] for r in joyful.demonstrations(1)}
    plain = {json.dumps(r["prompt"]): r["completion"]
             for r in joyful.demonstrations(1, neutral=True)}
    assert pairs
    for p in pairs:
        key = json.dumps(p["prompt"])
        assert p["chosen"] == demos[key] and p["rejected"] == plain[key]


def test_vector_command_writes_a_rebuildable_file(tmp_path):
    from typer.testing import CliRunner

    from subliminal.interventions import app

    out = tmp_path / "joy.safetensors"
    res = CliRunner().invoke(app, ["vector", "--trait", "joyful", "--model", "tiny",
                                   "--layer", "1", "--seed", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    v, layer, coef, meta = load_vector(out)
    assert layer == 1 and coef == 4.0 and meta["trait"] == "joyful" and meta["seed"] == 3
    assert torch.allclose(v, trait_vector(load_model("tiny"), get_trait("joyful"), 1,
                                          meta["prompts"]))


def test_sweep_records_audit_lift_and_format_per_cell(tmp_path):
    from subliminal.interventions import SweepConfig, run_sweep

    cfg = SweepConfig(layers=(1,), coefs=(0.0, 50.0), format_prompts=2, questions=2)
    cells = run_sweep(cfg, "tiny", tmp_path)
    assert [(c["layer"], c["coef"]) for c in cells] == [(None, 0.0), (1, 0.0), (1, 50.0)]
    assert cells[1]["ratio"] == pytest.approx(1.0)  # a zero coefficient changes nothing
    assert cells[2]["ratio"] != pytest.approx(1.0)
    assert all(0 <= c["filter_pass"] <= 1 and 0 <= c["grammar_ok"] <= 1 for c in cells)
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert len(saved["cells"]) == 3 and saved["config"]["questions"] == 2


def test_strength_confirmation_uses_only_the_fresh_seeds(tmp_path):
    """`strength --first-seed` builds and tests seeds FIRST.., never the exploration's."""
    from typer.testing import CliRunner

    from subliminal.cli import app

    out = tmp_path / "confirm"
    result = CliRunner().invoke(app, ["intervene", "strength", "--injection", "steering",
                                      "--model", "tiny", "--seeds", "2", "--first-seed", "3",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "strength.json").read_text())
    assert record["seeds"] == [3, 4] and record["replicates"] == 2
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["s3", "s4"]
    arms = [json.loads((out / f"s{s}" / arm / "audit.json").read_text())
            for s in (3, 4) for arm in ("trait", "control")]
    assert [a["seed"] for a in arms] == [3, 3, 4, 4]
    assert [a["neutral"] for a in arms] == [False, True, False, True]
