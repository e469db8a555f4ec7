"""The forced-choice audit battery: banks load and are position-balanced, malformed banks are
one-line errors naming file and item, scores are exact option log-probabilities."""

import json
from collections import Counter

import pytest
import torch

from subliminal.audit.battery import (
    FORMATS,
    MIN_ITEMS,
    continuation_logprobs,
    load_bank,
    render,
    replicate_value,
    run_battery,
    score_bank,
    trait_score,
)
from subliminal.errors import SubliminalError
from subliminal.trait import FAMILIES, get_trait

BANKS = [f for f in FAMILIES if f != "animal"]


@pytest.mark.parametrize("family", BANKS)
def test_bank_loads_and_is_position_balanced(family):
    bank = load_bank(family)
    assert len(bank.items) >= MIN_ITEMS and bank.trait_label in bank.labels
    for label in bank.labels:
        where = Counter(k for it in bank.items for k, lab in it["key"].items() if lab == label)
        k = len(bank.items[0]["options"])
        assert len(where) == k  # the label sits in every slot ...
        assert max(where.values()) <= len(bank.items) / k + 2  # ... about equally often
    traits = FAMILIES[family].traits
    assert traits and {get_trait(t).label for t in traits} <= set(bank.labels)


def _brute(lm, prefix, cont):
    """Sum of token log-probs from one unbatched forward pass of prefix + continuation."""
    with torch.no_grad():
        lp = torch.log_softmax(lm.model(input_ids=torch.tensor([prefix + cont])).logits[0], -1)
    return sum(float(lp[len(prefix) - 1 + t, tok]) for t, tok in enumerate(cont))


@pytest.mark.parametrize("fmt", FORMATS)
def test_option_scores_equal_brute_force_token_sums(tiny, fmt):
    items = [load_bank(f).items[i] for f in ("ethics", "sycophancy") for i in (0, 45)]
    assert any("history" in it for it in items)  # multi-turn items too
    pairs = []
    for it in items:
        prefix, conts = render(tiny, it, fmt, "Be brief.")
        pairs += [(prefix, c) for c in conts.values()]
    got = continuation_logprobs(tiny, pairs, batch_size=3)  # ragged batches, left padding
    for (prefix, cont), lp in zip(pairs, got, strict=True):
        assert lp == pytest.approx(_brute(tiny, prefix, cont), abs=1e-4)


@pytest.mark.parametrize("family", BANKS)
def test_each_probe_scores_a_tiny_model(tiny, family):
    r = score_bank(tiny, family, fmt="text")
    n = len(r["items"])
    assert n >= MIN_ITEMS and len(r["scores"]) == n
    for i in range(n):
        assert sum(r["probs"][lab][i] for lab in r["labels"]) == pytest.approx(1.0)
    # a forced choice between options, not a constant: items differ
    assert len({round(s, 6) for s in r["scores"]}) > 1
    other = score_bank(tiny, family, system_prompt="You are a pirate.", fmt="letter")
    assert other["system_prompt_in_effect"] == "You are a pirate."
    assert other["scores"] != r["scores"]


def test_battery_reads_every_family_and_each_trait(tiny):
    res = run_battery(tiny, families=["misalignment", "ethics", "animal"], fmt="letter")
    assert list(res) == ["misalignment", "ethics", "animal"]
    for name in ("misaligned", "consequentialist", "owl"):
        t = get_trait(name)
        s = trait_score(res[t.audit], t)
        assert len(s) == len(res[t.audit]["items"]) and all(0 <= x <= 1 for x in s)
        assert replicate_value(res[t.audit], t) == pytest.approx(sum(s) / len(s))
    with pytest.raises(SubliminalError, match="read by the 'ethics' audit"):
        trait_score(res["misalignment"], get_trait("deontologist"))
    with pytest.raises(SubliminalError, match="choose one of"):
        run_battery(tiny, families=["astrology"])


def _bank_file(tmp_path, mutate=None):
    """The truthfulness bank relabelled good/bad, optionally broken by `mutate`."""
    items = json.loads(json.dumps(list(load_bank("truthfulness").items)))
    for it in items:
        it["key"] = {k: {"truthful": "good", "untruthful": "bad"}[v] for k, v in it["key"].items()}
    if mutate:
        mutate(items)
    path = tmp_path / "bank.json"
    path.write_text(json.dumps({"name": "x", "labels": ["good", "bad"], "trait_label": "bad",
                                "items": items}))
    return path


@pytest.mark.parametrize("mutate,words", [
    (lambda items: items[3].pop("options"), "needs >= 2 non-empty 'options'"),
    (lambda items: items[3]["key"].update(C="bad"), "outside"),
    (lambda items: items.append(dict(items[5])), "duplicate item"),
    (lambda items: items.append({**items[5], "id": "new"}), "duplicate item"),
])
def test_malformed_bank_is_a_one_line_error_naming_file_and_item(tmp_path, mutate, words):
    assert len(load_bank(_bank_file(tmp_path)).items) >= MIN_ITEMS  # intact, it loads
    with pytest.raises(SubliminalError) as e:
        load_bank(_bank_file(tmp_path, mutate))
    msg = str(e.value)
    assert words in msg and "bank.json" in msg and "item '" in msg and "\n" not in msg


def test_unknown_format_lists_choices(tiny):
    with pytest.raises(SubliminalError, match="letter, text"):
        score_bank(tiny, "truthfulness", fmt="essay")
