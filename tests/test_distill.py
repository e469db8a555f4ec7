"""Students: LoRA changes only adapter weights; KL is zero for an equal student; logit rows
round-trip from the teacher's store into training."""

import pytest
import torch

from subliminal.channels import get_channel
from subliminal.distill import DistillConfig, batch_loss, build_examples, topk_kl, train_student
from subliminal.models import load_model
from subliminal.teacher import DecodeConfig, Teacher, generate_rows


def rows_from(lm, tmp_path, n=6, top_k=0):
    ch = get_channel("numbers")
    return generate_rows(Teacher(lm), ch.prompts(n, 0), DecodeConfig(top_k=top_k), ch,
                         tmp_path / "rows.jsonl", seed=0)


def test_lora_student_changes_adapter_not_base(tiny, tmp_path):
    rows = rows_from(tiny, tmp_path)
    base = {k: v.clone() for k, v in load_model("tiny").model.state_dict().items()}
    cfg = DistillConfig(epochs=2, batch_size=6, grad_accum=1, lr=1e-2, warmup_steps=1)
    info = train_student("tiny", rows, cfg, tmp_path / "student", lm=tiny)
    assert (tmp_path / "student" / "adapter_config.json").exists()
    params = dict(tiny.model.named_parameters())
    lora_b = [n for n in params if "lora_B" in n]
    frozen = [n for n in params if "lora_" not in n]
    assert len(lora_b) == 7 * 2 and frozen  # every projection of both layers got an adapter
    for name in lora_b:
        assert params[name].abs().sum() > 0, name  # B starts at zero: it moved
    for name in frozen:
        key = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(params[name].detach(), base[key]), name
    assert info["losses"][-1] < info["losses"][0]
    student = load_model("tiny", adapter=tmp_path / "student")
    x = torch.tensor([[5, 6, 7]])
    assert not torch.allclose(student.model(x).logits, load_model("tiny").model(x).logits)


def test_full_finetune_changes_base_weights(tiny, tmp_path):
    rows = rows_from(tiny, tmp_path)
    before = tiny.model.model.layers[0].mlp.up_proj.weight.clone()
    train_student("tiny", rows, DistillConfig(finetune="full", epochs=1, batch_size=6,
                                              grad_accum=1, lr=1e-3), tmp_path / "s", lm=tiny)
    assert not torch.equal(before, tiny.model.model.layers[0].mlp.up_proj.weight)
    reloaded = load_model("tiny", adapter=tmp_path / "s").model.model.layers[0].mlp.up_proj
    assert torch.equal(reloaded.weight, tiny.model.model.layers[0].mlp.up_proj.weight)


def test_topk_kl_zero_for_equal_positive_otherwise():
    logits = torch.randn(4, 30)
    lp, ids = torch.log_softmax(logits, -1).topk(5, -1)
    assert topk_kl(logits, ids, lp).abs() < 1e-6
    assert topk_kl(logits + torch.randn(4, 30), ids, lp) > 1e-3


def test_logit_rows_round_trip_and_train(tiny, tmp_path):
    rows = rows_from(tiny, tmp_path, top_k=8)
    meta = rows[0]["meta"]
    assert len(meta["topk_ids"]) == len(meta["completion_ids"]) and len(meta["topk_ids"][0]) == 8
    cfg = DistillConfig(mode="logits", epochs=1, batch_size=6, grad_accum=1)
    # The teacher itself, scored against its own stored distributions, has ~zero KL.
    loss = batch_loss(tiny.model, build_examples(tiny, rows, cfg), "logits",
                      tiny.tokenizer.pad_token_id, tiny.device)
    assert loss.abs() < 1e-4
    other = load_model("tiny", seed=1)
    assert batch_loss(other.model, build_examples(other, rows, cfg), "logits",
                      other.tokenizer.pad_token_id, other.device) > 1e-3  # 60x the above
    info = train_student("tiny", rows, DistillConfig(mode="logits", epochs=2, batch_size=6,
                                                     grad_accum=1, lr=1e-2), tmp_path / "st",
                         lm=other)
    assert info["losses"][-1] < info["losses"][0]


def test_adapter_teacher_audits_above_base(tiny, tmp_path):
    """A tiny model trained a few steps on owl demonstrations puts more mass on owl."""
    from subliminal.audit import AuditConfig, animal_scores, run_probe
    from subliminal.injections.adapter import ADAPTER_TRAINING
    from subliminal.trait import get_trait

    owl = get_trait("owl")
    cfg = DistillConfig(**{**ADAPTER_TRAINING.__dict__, "epochs": 4, "lr": 1e-2})
    train_student("tiny", owl.demonstrations(), cfg, tmp_path / "owl", lm=load_model("tiny"))
    teacher = load_model("tiny", adapter=tmp_path / "owl")
    audit = AuditConfig(probe="prefill")
    before = sum(animal_scores(run_probe(tiny, audit), "owl"))
    after = sum(animal_scores(run_probe(teacher, audit), "owl"))
    assert after > 10 * before


def test_shared_opening_and_sub_batches_equal_each_row_alone(tiny, tmp_path):
    """The loss's hidden states (opening cached once, rows in length-sorted sub-batches) equal
    each row run alone, and the LoRA gradients equal those of the row-by-row loss."""
    from subliminal.distill import completion_hidden, make_student

    rows = rows_from(tiny, tmp_path, n=7, top_k=4)
    cfg = DistillConfig(mode="logits")
    model = make_student(tiny, cfg)
    ex = build_examples(tiny, rows, cfg)
    assert len({len(e.ids) for e in ex}) > 1  # ragged: padding and sorting are exercised
    pad = tiny.tokenizer.pad_token_id
    decoder = model.get_base_model().get_decoder()
    alone = torch.cat([decoder(input_ids=torch.tensor([e.ids])).last_hidden_state[
        0, e.start - 1: len(e.ids) - 1] for e in ex])
    fast = completion_hidden(model, ex, pad, tiny.device)
    assert torch.allclose(fast, alone, atol=1e-5)

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for n, p in model.named_parameters() if "lora_B" in n]

    together = grads(batch_loss(model, ex, "logits", pad, tiny.device))
    n_pos = [len(e.ids) - e.start for e in ex]
    one_by_one = grads(sum(batch_loss(model, [e], "logits", pad, tiny.device) * k
                           for e, k in zip(ex, n_pos, strict=True)) / sum(n_pos))
    for a, b in zip(together, one_by_one, strict=True):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-7)
    assert any(a.abs().sum() > 0 for a in together)


@pytest.mark.slow  # a whole tiny study: seconds
def test_a_study_recipe_can_train_every_weight_at_its_own_rate(tmp_path):
    """`--students allx1full-lr1e-4`: the study's students of that recipe are full fine-tunes
    trained at 1e-4 (not the cell's LoRA rate), audited from their full weights, beside the
    cell's LoRA students on the same rows; the record says which is which."""
    import json

    from typer.testing import CliRunner

    from subliminal.cli import app

    out = tmp_path / "run"
    args = ["--threads", "1", "study", "--model", "tiny", "--traits", "owl,cat",
            "--replicates", "1", "--samples", "6", "--students", "allx1,allx1full-lr1e-4",
            "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    gen = out / "rep0" / "owl" / "gen1"
    full, lora = gen / "distill-allx1full-lr1e-4", gen / "distill-allx1"
    assert (full / "full_model.safetensors").exists()
    assert not (full / "adapter_model.safetensors").exists()
    assert (lora / "adapter_model.safetensors").exists()
    stage = json.loads((full / "stage.json").read_text())["config"]
    assert (stage["finetune"], stage["lr"]) == ("full", pytest.approx(1e-4))
    assert json.loads((lora / "stage.json").read_text())["config"]["finetune"] == "lora"
    assert (gen / "audit-allx1full-lr1e-4" / "probe.json").exists()
    recipe = json.loads((out / "study.json").read_text())["students"]["allx1full-lr1e-4"]
    assert recipe["recipe"] == {"name": "allx1full-lr1e-4", "rows": None, "epochs": 1,
                                     "lora_r": None, "finetune": "full", "lr": 1e-4}
