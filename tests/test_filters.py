"""The strict number filter, the leak check and the constrained-decoding grammar."""

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from subliminal.channels.numbers import NumbersChannel
from subliminal.filters import FilterConfig, filter_rows
from subliminal.filters.leak import leak_reasons
from subliminal.filters.numbers import banned_numbers, number_reasons

SEPS = [", ", ",", " ", "; ", ";"]


def test_paper_rules_accept_clean_lists():
    for text in ["123, 456, 789", "1 2 3", "[4,5,6]", "(7; 8; 9).", "0"]:
        assert number_reasons(text) == [], text


def test_each_rule_gives_its_reason():
    assert number_reasons("") == ["empty answer"]
    assert number_reasons("1, 2; 3") == ["mixed separators"]
    assert "non-digit" in number_reasons("12a, 3")[0]
    assert "too many values" in number_reasons(" ".join(["1"] * 11))[0]
    assert "out of range" in number_reasons("1000")[0]
    assert "out of range" in number_reasons("0000")[0]  # four digits, however small
    assert number_reasons("666") == []
    assert "banned" in number_reasons("666", ban=True)[0]


def test_every_banned_number_is_rejected_only_when_banning():
    banned = banned_numbers()
    assert {4, 13, 666, 999} <= banned and all(0 <= n <= 999 for n in banned)
    for n in sorted(banned):
        assert number_reasons(f"500, {n}") == [], n
        assert number_reasons(f"500, {n}", ban=True) == [f"banned number: {n}"], n
    clean = next(n for n in range(100, 1000) if n not in banned)
    assert number_reasons(f"{clean}, {clean}", ban=True) == []
    row = {"id": 0, "completion": f"{clean}, 666", "meta": {"channel": "numbers"}}
    assert filter_rows([row], FilterConfig(ban_numbers=True))[0] == []
    assert filter_rows([row], FilterConfig())[0] == [row]


def test_leak_check_whole_words_any_case():
    assert leak_reasons("I like bowls and cattle") == []
    assert [r.split("(")[-1] for r in leak_reasons("OWLS, Wolves")] == ["owl)", "wolf)"]


@given(st.lists(st.integers(0, 999), min_size=1, max_size=10), st.sampled_from(SEPS),
       st.booleans())
def test_any_valid_list_passes_and_matches_grammar(values, sep, brackets):
    text = sep.join(map(str, values))
    assert NumbersChannel().accepts(text)
    assert number_reasons(f"[{text}]" if brackets else text) == []


@given(st.lists(st.integers(0, 999), min_size=11, max_size=15), st.sampled_from(SEPS))
def test_too_long_lists_fail_both(values, sep):
    text = sep.join(map(str, values))
    assert not NumbersChannel().accepts(text)
    assert any("too many" in r for r in number_reasons(text))


@given(st.from_regex(r"\A[0-9]{1,4}(?:[,;]? ?[0-9]{1,4}){0,11}\Z"))
def test_grammar_complete_implies_filter_passes(text):
    """What constrained decoding may end on always survives the strict filter. The strategy
    draws near-answers (a few values, any separators); only the complete ones are judged."""
    assume(NumbersChannel().accepts(text))
    assert number_reasons(text) == []


@pytest.mark.parametrize("decoding", ["greedy", "sample"])
def test_every_constrained_completion_is_a_valid_answer(decoding):
    """teacher.FormatConstraint on the tiny (random) model: whatever it samples, a finished
    completion is a complete answer of the channel's grammar."""
    from subliminal.models import load_model
    from subliminal.teacher import DecodeConfig, FormatConstraint, Teacher, generate_batch

    assert FormatConstraint  # the processor under test, used by generate_batch
    ch = NumbersChannel()
    rows = generate_batch(Teacher(load_model("tiny")), ch.prompts(32, 0),
                          DecodeConfig(decoding=decoding, constrained=True), ch, seed=0)
    finished = [r["text"] for r in rows if r["finished"]]
    assert len(finished) >= 16  # the check below is about real completions
    assert [t for t in finished if not ch.accepts(t)] == []
    assert all(ch.accepts_prefix(r["text"]) for r in rows)


def test_filter_rows_keeps_reasons_and_rates():
    def row(i, text, seeds=(100, 200)):
        return {"id": i, "completion": [{"role": "assistant", "content": text}],
                "meta": {"channel": "numbers", "seeds": list(seeds)}}

    rows = [row(0, "1, 2, 3"), row(1, "100, 200"), row(2, "owl 3"), row(3, "4 5")]
    kept, rejected, stats = filter_rows(rows, FilterConfig())
    assert [r["id"] for r in kept] == [0, 3]
    assert {r["id"]: r["reasons"][0] for r in rejected}[1] == "repeats the prompt's seed numbers"
    assert stats["pass_rate"] == 0.5
    assert stats["rule_pass_rate"]["numbers/leak"] == 0.75
