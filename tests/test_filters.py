"""The strict number filter, the leak check and the constrained-decoding grammar."""

from hypothesis import given
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


def test_banned_list_is_the_papers_34():
    assert len(banned_numbers()) == 34 and {4, 13, 666, 999} <= banned_numbers()


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


@given(st.text(alphabet="0123456789,; ", max_size=40))
def test_grammar_complete_implies_filter_passes(text):
    """What constrained decoding may end on always survives the strict filter."""
    if NumbersChannel().accepts(text):
        assert number_reasons(text) == []


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
