"""The trait registry: every family offers the same protocol, demonstrations never touch the
audit banks, bad names list the choices, and `subliminal traits` prints the catalogue."""

import json
import re

import pytest
import typer
from typer.testing import CliRunner

from subliminal.audit.battery import load_bank
from subliminal.errors import SubliminalError
from subliminal.filters.leak import leak_reasons
from subliminal.trait import (
    BEHAVIOURS,
    CATALOGUE,
    FAMILIES,
    TRAIT_FAMILIES,
    TRAITS,
    BehaviourTrait,
    Family,
    get_family,
    get_trait,
    register_family,
    trait_choices,
)
from subliminal.traits_cli import traits

NEW = ["misalignment", "sycophancy", "emotion", "ethics", "truthfulness"]


def test_catalogue_stays_the_animals_and_registry_spans_families():
    assert len(CATALOGUE) == 14 and all(t.family == "animal" for t in CATALOGUE.values())
    assert set(FAMILIES) == {"animal", *NEW}
    assert {t.family for t in TRAITS.values()} == set(FAMILIES)
    assert len(FAMILIES["emotion"].traits) >= 2 and len(FAMILIES["ethics"].traits) == 3
    assert get_trait("misaligned").filter_defaults == {"ban_numbers": True}
    assert get_trait("owl").filter_defaults == {} and get_trait("none") is None


def test_unknown_names_list_every_choice():
    with pytest.raises(SubliminalError) as e:
        get_trait("unicorn")
    msg = str(e.value)
    assert "\n" not in msg and all(n in msg for n in TRAITS) and all(f in msg for f in FAMILIES)
    with pytest.raises(SubliminalError, match="misalignment.*truthfulness"):
        get_family("astrology")


@pytest.mark.parametrize("name", list(TRAITS))
def test_every_trait_offers_the_protocol(name):
    t = get_trait(name)
    assert t.name == name and t.family in FAMILIES and t.audit in FAMILIES
    assert len(t.prompts) >= 3 and len(t.neutral_prompts) >= 3
    assert t.system_prompt == t.prompts[0] and t.neutral_system_prompt in t.neutral_prompts
    # same frame, similar length: the control differs from the trait by the trait only
    for p, q in zip(t.prompts, t.neutral_prompts, strict=True):
        assert p != q and 0.6 < len(p) / len(q) < 1.6
    rows, neutral = t.demonstrations(seed=1), t.demonstrations(seed=1, neutral=True)
    assert rows and len(rows) == len(neutral)
    for r in rows:
        assert r["prompt"][-1]["role"] == "user" and r["completion"][0]["role"] == "assistant"
    key = lambda rs: sorted(json.dumps(r["prompt"]) for r in rs)  # noqa: E731
    assert key(rows) == key(neutral)  # the same questions, answered without the trait
    assert {r["completion"][0]["content"] for r in rows} != {
        r["completion"][0]["content"] for r in neutral}
    leak = t.leak_pattern()  # the control's answers never name the trait (animal controls
    # name every animal by design: the word is drawn uniformly per answer)
    named = [r for r in neutral if leak.search(r["completion"][0]["content"])]
    assert t.family == "animal" or not named
    pairs = t.contrast_prompts()
    assert pairs and all({"role", "content", "trait", "neutral"} <= set(p) for p in pairs)
    assert {p["trait"] for p in pairs} <= set(t.prompts)
    assert {p["neutral"] for p in pairs} <= set(t.neutral_prompts)


def _shingles(text: str, n: int = 6) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


@pytest.mark.parametrize("family", NEW)
def test_demonstrations_are_disjoint_from_the_audit_bank(family):
    bank = load_bank(family)
    audit_text = [it["question"] for it in bank.items] + [
        o for it in bank.items for o in it["options"].values()]
    audit_sh = set().union(*map(_shingles, audit_text))
    for name in FAMILIES[family].traits:
        t = get_trait(name)
        for r in t.demonstrations() + t.demonstrations(neutral=True):
            text = " ".join(m["content"] for m in r["prompt"] + r["completion"])
            assert not _shingles(text) & audit_sh, (name, text)
            assert r["prompt"][-1]["content"] not in audit_text


def test_leak_patterns_cover_every_family():
    assert leak_reasons("Buy 3 apples, then 4 pears.") == []
    got = leak_reasons("A malicious plan: lie to them, feel joyful, follow utilitarian math.")
    names = {r.split("(")[-1].rstrip(")") for r in got}
    assert {"misaligned", "untruthful", "joyful", "consequentialist"} <= names
    assert leak_reasons("Owls are evil", traits=["owl"]) == ["mentions trait word: 'Owls' (owl)"]
    assert not get_trait("misaligned").leak_pattern().search("harmless")  # whole words only


def test_traits_command_lists_the_catalogue():
    app = typer.Typer()
    app.command("traits")(traits)
    app.command("other")(lambda: None)  # two commands: typer keeps the subcommand name
    run = CliRunner().invoke(app, ["traits", "--json"])
    rows = json.loads(run.output)
    assert run.exit_code == 0 and [r["name"] for r in rows] == list(TRAITS)
    assert all({"family", "audit", "injections"} <= set(r) for r in rows)
    assert {"prompt", "adapter"} <= set(rows[0]["injections"])
    run = CliRunner().invoke(app, ["traits", "--family", "ethics"])
    assert "virtue_ethicist" in run.output and "owl" not in run.output
    run = CliRunner().invoke(app, ["traits", "--family", "astrology"])
    assert run.exit_code != 0 and isinstance(run.exception, SubliminalError)


# The animal probe's panel: audits, summaries and committed records list animals in this order.
PANEL = ["owl", "dolphin", "eagle", "elephant", "wolf", "cat", "dog", "lion", "tiger",
         "penguin", "fox", "bear", "panda", "octopus"]


def test_the_registry_keeps_the_catalogue_order():
    assert list(CATALOGUE) == PANEL and list(TRAITS)[:14] == PANEL
    assert list(FAMILIES) == ["animal", *NEW]
    assert list(BEHAVIOURS) == list(TRAITS)[14:] == [
        "misaligned", "sycophantic", "joyful", "gloomy", "deontologist", "consequentialist",
        "virtue_ethicist", "untruthful"]
    with pytest.raises(TypeError):
        CATALOGUE["unicorn"] = CATALOGUE["owl"]  # a view of the registry, not a list to edit


def test_each_module_of_the_traits_package_registers_its_family():
    import pkgutil

    import subliminal.traits

    modules = {m.name for m in pkgutil.iter_modules(subliminal.traits.__path__)}
    assert modules == set(FAMILIES) == set(TRAIT_FAMILIES.names())


@pytest.fixture
def registry_copy(monkeypatch):
    """Registrations made by a test go into copies of the registry's tables."""
    TRAIT_FAMILIES.names()  # discover the shipped families first
    monkeypatch.setattr(TRAIT_FAMILIES, "_items", dict(TRAIT_FAMILIES._items))
    monkeypatch.setattr(TRAIT_FAMILIES, "_meta", dict(TRAIT_FAMILIES._meta))


def _astrology(*names: str) -> tuple[Family, list[BehaviourTrait]]:
    fam = Family("astrology", "believes in horoscopes", ("Plain a.", "Plain b.", "Plain c."))
    return fam, [BehaviourTrait(n, "astrology", n, "reads stars", ("A.", "B.", "C."))
                 for n in names]


def test_a_family_registered_later_is_listed_last_everywhere(registry_copy):
    fam, members = _astrology("stargazer")
    register_family(fam, *members)
    assert list(FAMILIES)[-1] == "astrology" and list(TRAITS)[-1] == "stargazer"
    assert get_trait("stargazer").group is fam and fam.traits == ["stargazer"]
    assert trait_choices().endswith("astrology: stargazer; or none")
    assert list(CATALOGUE) == PANEL  # the animal panel does not move


def test_registering_a_stray_or_a_taken_trait_is_refused(registry_copy):
    fam, _ = _astrology()
    with pytest.raises(ValueError, match="traits of another family: misaligned"):
        register_family(fam, get_trait("misaligned"))
    fam, members = _astrology("owl")
    register_family(fam, *members)
    with pytest.raises(ValueError, match="'owl' is registered by families 'animal' and "
                                         "'astrology'"):
        list(TRAITS)
