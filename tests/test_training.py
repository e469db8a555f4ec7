"""The shared training loop (subliminal/training.py): same optimisation path as the loop it
replaced, resume after a real kill gives the same student, checkpoints hold no pickle, and the
trait-adapter cache copies a finished adapter byte for byte."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from subliminal.channels import get_channel
from subliminal.distill import (
    DistillConfig,
    batch_loss,
    build_examples,
    make_student,
    train_student,
)
from subliminal.models import load_model
from subliminal.teacher import DecodeConfig, Teacher, generate_rows

ROOT = Path(__file__).resolve().parent.parent


def old_loop(lm, rows, cfg: DistillConfig) -> tuple[list[float], dict]:
    """The optimisation loop of distill.train_student as it was before training.py (commit
    d5a20a8), copied verbatim minus checkpointing: the reference the new loop must match."""
    torch.manual_seed(cfg.seed)
    model = make_student(lm, cfg)
    model.train()
    examples = build_examples(lm, rows, cfg)
    micro = max(1, math.ceil(cfg.batch_size / cfg.grad_accum))
    steps_per_epoch = math.ceil(len(examples) / (micro * cfg.grad_accum))
    total = max(1, steps_per_epoch * cfg.epochs)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / max(1, cfg.warmup_steps), max(0.0, (total - s) / total)))
    losses = []
    pad = lm.tokenizer.pad_token_id
    for epoch in range(cfg.epochs):
        order = list(range(len(examples)))
        random.Random(f"{cfg.seed}-{epoch}").shuffle(order)
        chunks = [order[i: i + micro * cfg.grad_accum] for i in range(0, len(order),
                                                                       micro * cfg.grad_accum)]
        for chunk in chunks:
            opt.zero_grad(set_to_none=True)
            step_loss = 0.0
            for j in range(0, len(chunk), micro):
                batch = [examples[i] for i in chunk[j: j + micro]]
                loss = batch_loss(model, batch, cfg.mode, pad, lm.device)
                (loss * len(batch) / len(chunk)).backward()
                step_loss += loss.item() * len(batch) / len(chunk)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(round(step_loss, 5))
    return losses, {n: p.detach().clone() for n, p in model.named_parameters()
                    if p.requires_grad}


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    lm = load_model("tiny")
    ch = get_channel("numbers")
    return generate_rows(Teacher(lm), ch.prompts(10, 0), DecodeConfig(top_k=6), ch,
                         tmp_path_factory.mktemp("rows") / "rows.jsonl", seed=0)


@pytest.mark.parametrize("mode, finetune, accum", [("sft", "lora", 2), ("logits", "lora", 1),
                                                   ("sft", "full", 3)])
def test_new_loop_follows_the_old_loops_path(rows, tmp_path, mode, finetune, accum):
    # 10 rows in steps of 4 (or 6) rows: the last step is short and split unevenly.
    cfg = DistillConfig(mode=mode, finetune=finetune, epochs=2, batch_size=4, grad_accum=accum,
                        lr=5e-3, warmup_steps=2)
    # A student from another init than the teacher (seed 1): the logit loss starts above 0.
    ref_losses, ref_weights = old_loop(load_model("tiny", seed=1), rows, cfg)
    lm = load_model("tiny", seed=1)
    info = train_student("tiny", rows, cfg, tmp_path / "s", lm=lm)
    chunk = math.ceil(4 / accum) * accum
    assert len(info["losses"]) == len(ref_losses) == 2 * math.ceil(len(rows) / chunk)
    assert info["losses"] == pytest.approx(ref_losses, rel=1e-4, abs=1e-5)
    assert ref_losses[-1] < ref_losses[0]  # the path being compared is a training path
    got = {n.removeprefix("base_model.model."): p.detach()
           for n, p in lm.model.named_parameters() if p.requires_grad}
    ref_weights = {n.removeprefix("base_model.model."): w for n, w in ref_weights.items()}
    assert set(got) == set(ref_weights)
    for name, w in ref_weights.items():
        torch.testing.assert_close(got[name], w, rtol=1e-4, atol=1e-6)


KILL_AFTER_FIRST_CHECKPOINT = """
import os, signal, sys, json
import torch
torch.set_num_threads(1)
from subliminal import training
from subliminal.distill import DistillConfig, train_student
from subliminal.records import read_jsonl
real = training.save_checkpoint
def save_then_die(*a, **k):
    real(*a, **k)
    os.kill(os.getpid(), signal.SIGKILL)  # a kill right after epoch 1 is on disk
training.save_checkpoint = save_then_die
cfg = DistillConfig(**json.loads(sys.argv[3]))
train_student("tiny", read_jsonl(sys.argv[1]), cfg, sys.argv[2])
"""


@pytest.mark.slow  # whole stages on the tiny model: seconds, not milliseconds
def test_resume_after_kill_gives_the_uninterrupted_student(rows, tmp_path):
    import json

    from safetensors.torch import load_file

    from subliminal.records import append_jsonl

    data = tmp_path / "rows.jsonl"
    append_jsonl(data, rows)
    spec = dict(mode="sft", epochs=3, batch_size=4, grad_accum=2, lr=5e-3, warmup_steps=2)
    cfg = DistillConfig(**spec)
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(KILL_AFTER_FIRST_CHECKPOINT),
                           str(data), str(killed), json.dumps(spec)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    record = json.loads((killed / "checkpoint" / "checkpoint.json").read_text())
    assert record["epoch"] == 1 and not (killed / "complete.json").exists()
    resumed = train_student("tiny", rows, cfg, killed)
    whole = train_student("tiny", rows, cfg, tmp_path / "whole")
    assert resumed["losses"] == pytest.approx(whole["losses"], rel=1e-5, abs=1e-6)
    a = load_file(killed / "adapter_model.safetensors")
    b = load_file(tmp_path / "whole" / "adapter_model.safetensors")
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7)
    assert not (killed / "checkpoint").exists()  # a finished student drops its checkpoint


def test_checkpoint_is_safetensors_and_json_only(rows, tmp_path):
    from subliminal import training

    lm = load_model("tiny")
    model = make_student(lm, DistillConfig())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    sum(p.sum() for p in model.parameters() if p.requires_grad).backward()
    opt.step()
    sched.step()
    training.save_checkpoint(tmp_path, model, opt, sched, 1, [0.5])
    names = sorted(p.name for p in (tmp_path / "checkpoint").iterdir())
    assert names == ["checkpoint.json", "epoch-1.optimizer.safetensors",
                     "epoch-1.weights.safetensors"]
    fresh = make_student(load_model("tiny"), DistillConfig())
    opt2 = torch.optim.AdamW([p for p in fresh.parameters() if p.requires_grad], lr=1e-3)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1.0)
    assert training.load_checkpoint(tmp_path, fresh, opt2, sched2) == (1, [0.5])
    assert sched2.last_epoch == 1
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for i, st in s1["state"].items():
        for k, v in st.items():
            assert torch.equal(v, s2["state"][i][k]), (i, k)


def test_adapter_cache_second_call_copies_same_bytes(tmp_path, monkeypatch):
    """train_adapter keeps a finished adapter in the machine cache and copies it into later
    runs (the cache is off for `tiny` in production; here it is switched on for it)."""
    from subliminal.injections import adapter as adapter_mod
    from subliminal.trait import get_trait

    monkeypatch.setenv("SUBLIMINAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(adapter_mod, "TINY", "no-such-model")  # let tiny use the cache
    demos = get_trait("owl").demonstrations()[:8]
    first = adapter_mod.train_adapter("tiny", demos, tmp_path / "a", "owl")
    cached = list((tmp_path / "cache" / "trait_adapters").iterdir())
    assert len(cached) == 1 and (cached[0] / "complete.json").exists()
    calls = []
    real = adapter_mod.train_student

    def counting(*a, **k):
        calls.append(Path(a[3]))
        return real(*a, **k)

    monkeypatch.setattr(adapter_mod, "train_student", counting)
    second = adapter_mod.train_adapter("tiny", demos, tmp_path / "b", "owl")
    name = "adapter_model.safetensors"
    assert (second / name).read_bytes() == (first / name).read_bytes()
    assert (second / "train.json").read_text() == (first / "train.json").read_text()
    # The copy is complete, so train_student only read it back (no checkpoint, no training).
    assert calls == [tmp_path / "b"] and not (second / "checkpoint").exists()


@pytest.mark.slow  # two accelerate processes (FSDP)
def test_fsdp_two_processes_train_the_one_process_student():
    """`accelerate launch --use_fsdp --fsdp_version 2` on 2 CPU processes (gloo) shards the
    student and trains the one-process student: same losses (rel 1e-4), adapter weights within
    1e-5, full (gathered) tensors saved; pipelines/multi_gpu.sh check-fsdp asserts all this."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "pipelines" / "multi_gpu.sh"), "check-fsdp"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "FSDP check: OK" in proc.stdout, (
        proc.stdout[-2000:] + proc.stderr[-2000:])


def test_deepspeed_is_refused_in_one_line(monkeypatch):
    from subliminal import training
    from subliminal.errors import SubliminalError

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # what `--use_deepspeed` sets
    training.accelerator.cache_clear()
    try:
        with pytest.raises(SubliminalError) as err:
            training.accelerator()
    finally:
        training.accelerator.cache_clear()
    assert "\n" not in str(err.value) and "--use_fsdp" in str(err.value)
