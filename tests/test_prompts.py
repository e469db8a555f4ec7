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


def test_every_paraphrase_is_distinct_and_drawn():
    """Each part list has no duplicates, and 2,000 prompts use every entry of every list (a
    paraphrase that is never drawn adds no variety)."""
    texts = [r["prompt"][0]["content"] for r in get_channel("numbers").prompts(2000, seed=0)]
    for parts in (INTROS, INSTRUCTIONS, FORMATS, CLOSINGS):
        assert len(parts) >= 5 and len(set(parts)) == len(parts)
    for part in INSTRUCTIONS + FORMATS + CLOSINGS:
        assert any(part.format(k=10) in t for t in texts), part
    for intro in INTROS:
        head = intro.split("{seq}")[0]
        assert head and any(t.startswith(head) for t in texts), intro
