"""The numbers channel's prompt grammar is seeded and follows the paper's shape."""

from subliminal.channels import get_channel
from subliminal.channels.numbers import CLOSINGS, FORMATS, INSTRUCTIONS, INTROS


def test_same_seed_same_prompts_and_row_independence():
    ch = get_channel("numbers")
    a, b = ch.prompts(50, seed=3), ch.prompts(50, seed=3)
    assert a == b
    assert ch.prompts(10, seed=3) == a[:10]  # row i depends only on (seed, i): resumable
    assert ch.prompts(50, seed=4) != a


def test_prompt_parts_and_seed_numbers():
    ch = get_channel("numbers")
    for row in ch.prompts(200, seed=0):
        seeds = row["meta"]["seeds"]
        assert 3 <= len(seeds) <= 8 and all(100 <= s <= 999 for s in seeds)
        text = row["prompt"][0]["content"]
        assert ", ".join(map(str, seeds)) in text
        assert any(c in text for c in CLOSINGS) and any(f in text for f in FORMATS)


def test_paraphrase_lists_are_rich():
    assert (len(INTROS), len(INSTRUCTIONS), len(FORMATS), len(CLOSINGS)) == (25, 10, 15, 19)
    assert len(set(INTROS)) == 25
