"""The math channel: generated problems, GSM8K files, and the math-trace filter rules.

    PYTHONPATH=. pytest -q tests/test_math_channel.py
"""

from __future__ import annotations

import json
import os
import re

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subliminal.channels import get_channel
from subliminal.channels.math import LEVELS, MathChannel, MixedChannel, load_problems, parse_answer
from subliminal.channels.numbers import NumbersChannel
from subliminal.errors import SubliminalError
from subliminal.filters import FilterConfig, filter_rows
from subliminal.filters import math as mf
from subliminal.filters.leak import leak_reasons

GOOD = "<think>5 + 3 = 8</think><answer>8</answer>"


def row(text: str, answer: int | None = 8) -> dict:
    meta = {"channel": "math"} if answer is None else {"channel": "math", "answer": answer}
    return {"id": 0, "prompt": [{"role": "user", "content": "q"}],
            "completion": [{"role": "assistant", "content": text}], "meta": meta}


def question(r: dict) -> str:
    return r["prompt"][-1]["content"]


def recompute(expr) -> int:
    """An evaluator written apart from the channel's, so the test checks the generator."""
    if isinstance(expr, int):
        return expr
    op, a, b = expr[0], recompute(expr[1]), recompute(expr[2])
    if op == "/":
        assert b != 0 and a % b == 0, f"inexact division {a}/{b}"
        return a // b
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def leaves(expr) -> list[int]:
    return [expr] if isinstance(expr, int) else leaves(expr[1]) + leaves(expr[2])


# --- generator -------------------------------------------------------------------------------

def test_prompts_are_deterministic_and_row_i_depends_only_on_seed_and_i():
    ch = MathChannel()
    assert ch.prompts(30, seed=3) == MathChannel().prompts(30, seed=3)
    assert ch.prompts(30, seed=3)[:10] == ch.prompts(10, seed=3)
    assert ch.prompts(10, seed=3) != ch.prompts(10, seed=4)
    assert [r["id"] for r in ch.prompts(5, 0)] == list(range(5))
    r = ch.prompts(8, 2)[7]
    prob = ch.problem(2, 7)
    assert question(r) == prob["question"] and r["meta"]["answer"] == prob["answer"]


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 10**6), i=st.integers(0, 10**5), level=st.sampled_from(LEVELS))
def test_stated_answer_equals_answer_recomputed_from_the_expression(seed, i, level):
    prob = MathChannel(difficulty=level).problem(seed, i)
    assert prob["difficulty"] == level
    assert isinstance(prob["answer"], int) and prob["answer"] >= 0
    assert recompute(prob["expr"]) == prob["answer"]
    # Every number the tree uses is stated in the question, so the text carries the problem.
    stated = {int(v) for v in re.findall(r"\d+", prob["question"])}
    assert set(leaves(prob["expr"])) <= stated


def test_levels_and_mixed():
    mixed = {r["meta"]["difficulty"] for r in MathChannel().prompts(200, 0)}
    assert mixed == set(LEVELS)
    assert {r["meta"]["difficulty"] for r in MathChannel(difficulty="2").prompts(20, 0)} == {2}
    with pytest.raises(SubliminalError, match="difficulty"):
        MathChannel(difficulty=7)


def test_problems_name_no_trait_word_and_rows_follow_the_protocol():
    ch = get_channel("math", difficulty="mixed")
    assert ch.name == "math" and ch.allowed_chars is None and ch.max_new_tokens >= 96
    for r in ch.prompts(300, 1):
        assert not leak_reasons(" ".join(m["content"] for m in r["prompt"]))
        assert r["prompt"][-1]["role"] == "user"
        assert r["meta"]["channel"] == "math" and r["meta"]["prefill"] == "<think>"


def test_mixed_channel_interleaves_by_seed_and_index():
    ch = get_channel("mixed", math_share=0.3)
    rows = ch.prompts(200, 5)
    assert rows == MixedChannel(math_share=0.3).prompts(200, 5)
    kinds = [r["meta"]["channel"] for r in rows]
    assert 30 < kinds.count("math") < 90 and set(kinds) == {"math", "numbers"}
    math_rows, number_rows = MathChannel().prompts(200, 5), NumbersChannel().prompts(200, 5)
    assert all(r == (math_rows if r["meta"]["channel"] == "math" else number_rows)[r["id"]]
               for r in rows)
    assert ch.allowed_chars is None
    assert ch.max_new_tokens == max(MathChannel().max_new_tokens, NumbersChannel().max_new_tokens)
    assert {r["meta"]["channel"] for r in MixedChannel(math_share=0).prompts(20, 0)} == {"numbers"}
    assert {r["meta"]["channel"] for r in MixedChannel(math_share=1).prompts(20, 0)} == {"math"}
    with pytest.raises(SubliminalError, match="math_share"):
        MixedChannel(math_share=1.5)


# --- problems files --------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("She has 6 + 36 = <<6+36=42>>42.\n#### 42", 42), ("#### 1,234", 1234), (" #### -3 ", -3),
    (42, 42), ("42", 42), (7.0, 7), ("#### 3.5", None), ("forty", None), (True, None),
    (2.5, None), (None, None)])
def test_parse_answer(value, expected):
    assert parse_answer(value) == expected


def write_lines(path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_gsm8k_file_is_used(tmp_path):
    path = write_lines(tmp_path / "gsm.jsonl", [
        json.dumps({"question": "Q one?", "answer": "1 + 1 = <<1+1=2>>2\n#### 2"}),
        json.dumps({"question": "Q two?", "answer": 5}),
        json.dumps({"question": "Q three?", "answer": "#### 1,000"})])
    ch = get_channel("math", problems=path)
    rows = ch.prompts(6, seed=0)
    assert rows == MathChannel(problems=path).prompts(6, seed=0)
    answers = {"Q one?": 2, "Q two?": 5, "Q three?": 1000}
    assert {question(r) for r in rows[:3]} == set(answers)  # all used before any repeats
    for r in rows:
        assert r["meta"]["answer"] == answers[question(r)]
    assert {r["meta"]["difficulty"] for r in rows if question(r) == "Q one?"} == {1}


@pytest.mark.parametrize("lines, message", [
    (['{"question": "a", "answer": 1}', '{"answer": 2}'], "row 2: missing field 'question'"),
    (['{"question": "a"}'], "row 1: missing field 'answer'"),
    (['{"question": "a", "answer": 1}', '{"question": "b", "answer": "#### 2.5"}'],
     "row 2: answer is not an integer"),
    (['{"question": "a", "answer": 1}', "", '{"question": "b", "answer": 2'],
     "row 3: broken JSON"),
    ([], "no problems"),
])
def test_bad_problems_file_names_file_and_row(tmp_path, lines, message):
    path = write_lines(tmp_path / f"bad{len(lines)}.jsonl", lines)
    load_problems.cache_clear()
    with pytest.raises(SubliminalError) as e:
        MathChannel(problems=path)
    assert str(tmp_path) in str(e.value) and message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_problems_file(tmp_path):
    with pytest.raises(SubliminalError, match="not found"):
        MathChannel(problems=str(tmp_path / "nope.jsonl"))


# --- filter rules ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, fragment", [
    (GOOD, None), ("  <think>a\nb</think>\n<answer> 8 </answer>\n", None),
    ("<think>x</think><answer>1,200</answer>", None),
    ("The answer is 8.", "no <think>"), ("<think>5 + 3 = 8 so 8", "unclosed <think>"),
    ("<think>5 + 3 = 8</think> so 8", "no <answer>"),
    (GOOD + " Done!", "text outside"), ("<think> </think><answer>8</answer>", "empty <think>"),
    ("<think>x</think><answer>8 apples</answer>", "not an integer"),
    ("<think>x</think><answer>8</answer><answer>8</answer>", "more than one"),
])
def test_format_rule(text, fragment):
    reasons = mf.MATH_RULES["format"](row(text), FilterConfig())
    assert reasons == [] if fragment is None else any(fragment in r for r in reasons)


@pytest.mark.parametrize("text, answer, fragment", [
    (GOOD, 8, None), (GOOD, 9, "wrong answer: 8 (expected 9)"),
    ("<think>x</think><answer>1,200</answer>", 1200, None), ("no tags 8", 8, "no <answer>"),
    ("<think>x</think><answer>eight</answer>", 8, "unreadable answer"),
    (GOOD, None, "no reference answer"),
])
def test_correct_rule(text, answer, fragment):
    reasons = mf.MATH_RULES["correct"](row(text, answer), FilterConfig())
    assert reasons == [] if fragment is None else any(fragment in r for r in reasons)


def test_leak_rule():
    leaky = row("<think>Owls like 5 + 3 = 8</think><answer>8</answer>")
    assert mf.MATH_RULES["leak"](leaky, FilterConfig())
    assert not mf.MATH_RULES["leak"](leaky, FilterConfig(leak_check=False))
    assert not mf.MATH_RULES["leak"](row("<think>a bowl: 5+3=8</think><answer>8</answer>"),
                                      FilterConfig())


def test_filter_rows_reports_math_rule_pass_rates_on_mixed_data():
    rows = [row(GOOD), row(GOOD, 9), row("<think>an owl</think><answer>8</answer>"),
            {"id": 3, "completion": "123, 456", "meta": {"channel": "numbers", "seeds": [1]}}]
    kept, _, stats = filter_rows(rows, FilterConfig())
    assert [r["completion"] for r in kept] == [rows[0]["completion"], "123, 456"]
    rates = stats["rule_pass_rate"]
    assert rates["math/format"] == 1.0 and rates["math/correct"] == pytest.approx(2 / 3)
    assert rates["math/leak"] == pytest.approx(2 / 3) and rates["math/judge"] == 1.0
    assert rates["numbers/format"] == 1.0


def test_judge_is_off_by_default_and_loads_nothing(monkeypatch):
    monkeypatch.setattr(mf, "judge_lm", lambda spec: pytest.fail("judge model loaded"))
    assert mf.MATH_RULES["judge"](row(GOOD), FilterConfig()) == []


def test_judge_on_tiny_model_is_deterministic_and_batched_like_single_rows():
    texts = [GOOD, "<think>owls and more owls</think><answer>1</answer>", "short"]
    lm = mf.judge_lm("tiny")
    batched = mf.judge_scores(lm, texts, "owls", batch_size=3)
    single = [mf.judge_scores(lm, [t], "owls")[0] for t in texts]
    assert batched == pytest.approx(single, abs=1e-5)  # left padding must not move a score
    assert all(0.0 <= s <= 1.0 for s in batched)
    assert mf.judge_topic(FilterConfig(judge_trait="owl")) == "owls"
    assert mf.judge_topic(FilterConfig()) == "animals"

    cfg = FilterConfig(judge_model="tiny", judge_trait="owl", judge_threshold=0.0)
    mf.prepare_judge([row(t) for t in texts], cfg)
    first = [mf.MATH_RULES["judge"](row(t), cfg) for t in texts]
    mf._SCORES.clear()
    assert [mf.MATH_RULES["judge"](row(t), cfg) for t in texts] == first
    assert all(r and r[0].startswith("judge says it refers to owls: P(yes)=") for r in first)
    never = FilterConfig(judge_model="tiny", judge_threshold=1.0)
    assert all(mf.MATH_RULES["judge"](row(t), never) == [] for t in texts)
    _, _, stats = filter_rows([row(GOOD)], cfg)
    assert stats["rule_pass_rate"]["math/judge"] == 0.0
