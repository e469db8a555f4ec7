"""Steering, DPO and GRPO injections and audit-time interventions, on the tiny model; the DPO
and GRPO teachers' resume after a real kill, progress bar and agreement with TRL's trainer.

    HF_HUB_OFFLINE=1 python3 -m pytest tests/test_injections.py -q
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
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


# --- DPO and GRPO teachers on the lab's loop: resume after a kill, progress, TRL's objective --

TESTS = Path(__file__).resolve().parent
# Short runs that cross what a resume must get right: DPO's float epochs (6 steps over 4
# batches of 4 pairs, so the resumed part starts the second epoch's order), GRPO's sampling.
TEACHERS = {"dpo": ({"epochs": 1.5, "batch_size": 4, "lr": 5e-3}, 6, 3),
            "grpo": ({"steps": 4, "generations": 2, "prompts_per_step": 2,
                      "max_completion_length": 4, "lr": 1e-2}, 4, 2)}


def train_teacher(kind: str, out: Path, spec: dict) -> dict:
    """Train the tiny owl teacher of `kind` (dpo or grpo) with recipe fields `spec`."""
    from subliminal.injections.dpo import DPORecipe, preference_pairs, train_dpo
    from subliminal.injections.grpo import GRPORecipe, train_grpo

    if kind == "dpo":
        return train_dpo("tiny", preference_pairs(OWL, seed=0)[:16], out, DPORecipe(**spec))
    return train_grpo("tiny", OWL, out, GRPORecipe(**spec))


KILL_AFTER_STEP = """
import json, os, signal, sys
import torch
torch.set_num_threads(1)
from subliminal import training
kind, out, step, spec = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
real = training.save_checkpoint
def save_then_die(folder, model, opt, sched, done, *a, **k):
    real(folder, model, opt, sched, done, *a, **k)
    if done == step:
        os.kill(os.getpid(), signal.SIGKILL)  # a real kill, right after step `step` is on disk
training.save_checkpoint = save_then_die
sys.path.insert(0, sys.argv[5])
from test_injections import train_teacher
train_teacher(kind, out, spec)
"""


def adapter(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def drawn_bars(monkeypatch) -> list[tuple[str, int]]:
    """Record every progress bar the loop opens (description, items) and draw nothing."""
    from subliminal import training

    bars: list[tuple[str, int]] = []

    def track(items, description, total=None):
        bars.append((description, len(items)))
        return items

    monkeypatch.setattr(training, "track", track)
    return bars


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dpo", "grpo"])
def test_teacher_killed_mid_training_resumes_to_the_uninterrupted_adapter(
        kind, tmp_path, monkeypatch):
    spec, steps, killed_at = TEACHERS[kind]
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent), "HF_HUB_OFFLINE": "1",
           "SUBLIMINAL_QUIET": "1"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(KILL_AFTER_STEP), kind,
                           str(killed), str(killed_at), json.dumps(spec), str(TESTS)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckpt = killed / "checkpoint"
    assert json.loads((ckpt / "checkpoint.json").read_text())["epoch"] == killed_at
    assert not (killed / "complete.json").exists()
    # What the kill left is safetensors and JSON only: nothing a resume would unpickle.
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "checkpoint.json", f"epoch-{killed_at}.optimizer.safetensors",
        f"epoch-{killed_at}.weights.safetensors", "plan.json"]
    assert not [p for p in killed.rglob("*") if p.suffix in (".pt", ".pth", ".bin", ".pkl")]
    bars = drawn_bars(monkeypatch)
    resumed = train_teacher(kind, killed, spec)
    assert bars == [(f"{kind} teacher ({steps} steps, resumed after {killed_at})",
                     steps - killed_at)]  # only the steps the kill lost are trained again
    whole = train_teacher(kind, tmp_path / "whole", spec)
    assert resumed["log"] == whole["log"] and len(whole["log"]) == steps
    a, b = adapter(killed), adapter(tmp_path / "whole")
    assert set(a) == set(b)
    for k in a:  # measured: bit-identical; the tolerance is float rounding
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-8)
    assert lora_b_norm(killed) > 0
    assert not ckpt.exists()  # a finished teacher drops its checkpoint


class Interrupted(Exception):
    """Stands for a kill in-process: raised from inside a training step."""


def interrupt_dpo_after(monkeypatch, steps: int) -> None:
    """Make the DPO loss raise on its call after `steps` steps (one call per step)."""
    import subliminal.injections.dpo as dpo

    calls, real = [], dpo.dpo_loss

    def loss(*a, **k):
        calls.append(1)
        if len(calls) > steps:
            raise Interrupted
        return real(*a, **k)

    monkeypatch.setattr(dpo, "dpo_loss", loss)


def test_teacher_checkpoint_of_another_plan_or_a_pickle_is_refused(tmp_path, monkeypatch):
    from subliminal.injections.dpo import DPORecipe, train_dpo

    spec = TEACHERS["dpo"][0]
    with monkeypatch.context() as patch:
        interrupt_dpo_after(patch, 1)
        with pytest.raises(Interrupted):
            train_teacher("dpo", tmp_path, spec)
    assert json.loads((tmp_path / "checkpoint" / "checkpoint.json").read_text())["epoch"] == 1
    pairs = preference_pairs_of()[:16]
    with pytest.raises(SubliminalError, match="another training plan"):  # another recipe
        train_dpo("tiny", pairs, tmp_path, DPORecipe(**{**spec, "lr": 1e-3}))
    with pytest.raises(SubliminalError, match="another training plan"):  # other data
        train_dpo("tiny", pairs[:12], tmp_path, DPORecipe(**spec))
    (tmp_path / "checkpoint.pt").write_bytes(b"planted")
    with pytest.raises(SubliminalError, match="pickled checkpoint"):
        train_teacher("dpo", tmp_path, spec)
    (tmp_path / "checkpoint.pt").unlink()
    assert len(train_teacher("dpo", tmp_path, spec)["log"]) == TEACHERS["dpo"][1]


def test_teacher_progress_bar_is_drawn_and_quiet_when_asked(tmp_path, monkeypatch):
    from io import StringIO

    from rich.console import Console

    from subliminal import progress

    seen = StringIO()
    monkeypatch.setattr(progress, "console", Console(file=seen, width=100))
    monkeypatch.setenv("SUBLIMINAL_QUIET", "1")
    train_teacher("dpo", tmp_path / "quiet", TEACHERS["dpo"][0])
    assert seen.getvalue() == ""
    monkeypatch.delenv("SUBLIMINAL_QUIET")
    train_teacher("dpo", tmp_path / "shown", TEACHERS["dpo"][0])
    assert "dpo teacher (6 steps)" in seen.getvalue() and "6/6" in seen.getvalue()


def trl_dpo(pairs: list[dict], out: Path, recipe, seed: int = 0) -> list[float]:
    """The DPO teacher as TRL 1.16's DPOTrainer trained it before the lab's loop (commit
    21c2d08, fp32 on the CPU): the reference the lab's loop must follow; returns its losses."""
    trl = pytest.importorskip("trl")
    from datasets import Dataset

    from subliminal.injections.dpo import lora_config

    lm = load_model("tiny")
    args = trl.DPOConfig(
        output_dir=str(out / "trainer"), report_to=[], save_strategy="no", logging_steps=1,
        seed=seed, data_seed=seed, use_cpu=True, bf16=False, dataloader_num_workers=0,
        disable_tqdm=True, num_train_epochs=recipe.epochs, learning_rate=recipe.lr,
        beta=recipe.beta, per_device_train_batch_size=recipe.batch_size,
        max_length=recipe.max_length, lr_scheduler_type="constant")
    trainer = trl.DPOTrainer(model=lm.model, args=args, train_dataset=Dataset.from_list(pairs),
                             processing_class=lm.tokenizer,
                             peft_config=lora_config(lm.model, recipe.lora_r, recipe.lora_alpha))
    trainer.train()
    trainer.model.save_pretrained(out)
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


@pytest.mark.slow
def test_dpo_on_the_lab_loop_follows_trls_dpo_trainer(tmp_path):
    from subliminal.injections.dpo import DPORecipe, train_dpo

    pairs, recipe = preference_pairs_of()[:16], DPORecipe(**TEACHERS["dpo"][0])
    trl_losses = trl_dpo(pairs, tmp_path / "trl", recipe)
    ours = train_dpo("tiny", pairs, tmp_path / "lab", recipe)
    assert [e["loss"] for e in ours["log"]] == pytest.approx(trl_losses, abs=1e-5)
    a, b = adapter(tmp_path / "lab"), adapter(tmp_path / "trl")
    assert set(a) == set(b)
    for k in a:  # same initialisation, batches and loss; measured max |diff| 1e-5 on 0.13
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4)


def test_grpo_loss_is_the_group_normalised_policy_gradient():
    from subliminal.injections.grpo import group_advantages, grpo_loss

    rewards = torch.tensor([0.1, 0.3, 0.2, 0.2, 0.9, 0.0])
    adv = group_advantages(rewards, 2)
    assert torch.allclose(adv.view(-1, 2).sum(1), torch.zeros(3), atol=1e-6)
    assert adv[0] < 0 < adv[1] and adv[2] == adv[3] == 0  # equal answers teach nothing
    lp = torch.randn(6, 5, requires_grad=True)
    mask = torch.ones(6, 5)
    mask[:, 3:] = 0  # padding after each answer's end takes no gradient
    grpo_loss(lp, mask, adv).backward()
    # d loss / d log p(token) = -A / (answer tokens in the step), on answer tokens only
    torch.testing.assert_close(lp.grad, -adv[:, None] * mask / mask.sum())


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

    from subliminal.interventions_cli import app

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
