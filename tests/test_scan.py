"""`subliminal scan`: every input format, every bad input, the ranking on data from a tiny
teacher that really carries a trait, the cleaner's change log, the probe and the command."""

from __future__ import annotations

import dataclasses
import json
import os
import random

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from subliminal.errors import SubliminalError
from subliminal.models import load_model
from subliminal.scan import ScanConfig, run_scan
from subliminal.scan.clean import CleanConfig, clean_dataset
from subliminal.scan.command import scan
from subliminal.scan.data import DataConfig, load_data
from subliminal.scan.likelihood import (
    Condition,
    LikelihoodConfig,
    conditions,
    encode_rows,
    layer_index,
    score_condition,
    score_rows,
)
from subliminal.scan.null import contrast, teacher_test
from subliminal.scan.persona import combine, persona_rank, unit_vectors
from subliminal.scan.static import family, static_report
from subliminal.trait import CATALOGUE

torch.set_num_threads(1)
OWL = CATALOGUE["owl"].system_prompt
# [BASE, owl prompt]: what the cleaner scores
OWL_PAIR = [c for c in conditions(["owl", "dolphin"]) if c.name in ("none", "owl")]


def pc_rows(n=6):
    return [{"id": f"r{i}", "prompt": f"Continue: {100 + i}, {200 + i}",
             "completion": f"{300 + i}, {400 + i}, {500 + i}"} for i in range(n)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------- formats

def test_jsonl_prompt_completion(tmp_path):
    got = load_data(str(write_jsonl(tmp_path / "d.jsonl", pc_rows())))
    assert got.source["columns"] == "prompt/completion" and got.source["format"] == "jsonl"
    r = got.rows[0]
    assert r["id"] == "r0" and r["prompt"] == [{"role": "user", "content": "Continue: 100, 200"}]
    assert r["completion"] == [{"role": "assistant", "content": "300, 400, 500"}]


def test_jsonl_chat_lists_and_messages(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                          {"role": "assistant", "content": "1, 2"}]}]
    got = load_data(str(write_jsonl(tmp_path / "m.jsonl", rows)))
    assert got.source["columns"] == "messages"
    assert [m["role"] for m in got.rows[0]["prompt"]] == ["system", "user"]
    assert got.rows[0]["completion"][0]["content"] == "1, 2" and got.rows[0]["id"] == "row-1"
    lists = [{"prompt": [{"role": "user", "content": "u"}],
              "completion": [{"role": "assistant", "content": "7"}]}]
    got = load_data(str(write_jsonl(tmp_path / "l.jsonl", lists)))
    assert got.rows[0]["completion"][0]["content"] == "7"


def test_text_csv(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text('text\n"1, 2, 3"\nhello world\n')
    got = load_data(str(p))
    assert got.source["columns"] == "text" and got.source["format"] == "csv"
    assert got.rows[0]["prompt"] == [] and got.rows[1]["completion"][0]["content"] == "hello world"


def test_parquet_and_datasets_dir(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    pq.write_table(pa.Table.from_pylist(pc_rows()), tmp_path / "d.parquet")
    got = load_data(str(tmp_path / "d.parquet"))
    assert got.source["format"] == "parquet" and len(got.rows) == 6
    Dataset.from_list(pc_rows(4)).save_to_disk(str(tmp_path / "ds"))
    got = load_data(str(tmp_path / "ds"))
    assert got.source["format"] == "datasets" and got.rows[3]["id"] == "r3"


def test_hub_id_offline_is_clear():
    with pytest.raises(SubliminalError, match="offline"):
        load_data("someorg/somedata")


# ---------------------------------------------------------------- bad input

def test_empty_file(tmp_path):
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(SubliminalError, match="no usable rows"):
        load_data(str(tmp_path / "e.jsonl"))


def test_missing_columns(tmp_path):
    with pytest.raises(SubliminalError, match=r"row 1: no prompt/completion, messages or text"):
        load_data(str(write_jsonl(tmp_path / "c.jsonl", [{"question": "q", "answer": "a"}])))
    rows = pc_rows(3)
    rows[2] = {"prompt": "only a prompt"}
    with pytest.raises(SubliminalError, match=r"row 3: expected prompt/completion"):
        load_data(str(write_jsonl(tmp_path / "c2.jsonl", rows)))


def test_broken_json_names_row(tmp_path):
    p = write_jsonl(tmp_path / "b.jsonl", pc_rows(5))
    lines = p.read_text().splitlines()
    lines[3] = lines[3][:-5]
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(SubliminalError, match=r"b.jsonl: row 4: broken JSON"):
        load_data(str(p))


def test_non_utf8(tmp_path):
    p = write_jsonl(tmp_path / "u.jsonl", pc_rows(3))
    p.write_bytes(p.read_bytes() + b'{"text": "caf\xe9"}\n')
    with pytest.raises(SubliminalError, match=r"row 4: not UTF-8"):
        load_data(str(p))
    c = tmp_path / "u.csv"
    c.write_bytes(b"text\nfine\ncaf\xe9\n")
    with pytest.raises(SubliminalError, match=r"u.csv: row 3: not UTF-8"):
        load_data(str(c))


def test_oversized_row_is_one_line_and_fast(tmp_path):
    import time

    p = write_jsonl(tmp_path / "big.jsonl", pc_rows(2))
    with open(p, "a") as f:
        f.write(json.dumps({"prompt": "x", "completion": "1" * 10_000_000}) + "\n")
        f.write(json.dumps(pc_rows(1)[0]) + "\n")
    t = time.perf_counter()
    with pytest.raises(SubliminalError, match=r"row 3: row is 10,000,0\d\d bytes, over the "
                                              r"1,000,000-byte limit") as e:
        load_data(str(p))
    assert "\n" not in str(e.value) and time.perf_counter() - t < 5
    got = load_data(str(p), DataConfig(skip_bad=True))
    assert len(got.rows) == 3 and got.source["skipped"] == 1


def test_skip_bad_counts_in_report(tmp_path):
    p = write_jsonl(tmp_path / "s.jsonl", pc_rows(4))
    p.write_bytes(p.read_bytes() + b"{broken\n" + b'{"text": "\xff"}\n' + b'{"x": 1}\n')
    with pytest.raises(SubliminalError, match="row 5"):
        run_scan(str(p), ScanConfig(likelihood_on=False))
    cfg = ScanConfig(likelihood_on=False, out=tmp_path / "out")
    cfg.data.skip_bad = True
    rep = run_scan(str(p), cfg)
    assert rep["source"]["skipped"] == 3 and rep["source"]["rows"] == 4
    assert [s["row"] for s in rep["source"]["skipped_examples"]] == [5, 6, 7]
    saved = json.loads((tmp_path / "out" / "scan.json").read_text())
    assert saved["complete"] is True and "skipped 3" not in saved["verdict"]
    assert "bad rows skipped 3" in (tmp_path / "out" / "scan.md").read_text()


# ---------------------------------------------------------------- static

def test_static_report():
    rows = load_rows([("1, 2, 3", "a"), ("1, 2, 3", "b"), ("4, 666, 13", "c"),
                      ("I love owls", "d"), ("<think>2+2</think><answer>4</answer>", "e"),
                      ("1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12", "f")])
    st = static_report(rows)
    assert st["duplicates"]["rows"] == 1 and st["family"]["majority"] == "numbers"
    assert st["family"]["shares"]["numbers"] == pytest.approx(4 / 6)
    assert st["leaks"]["traits"]["owl"]["completion_examples"] == ["d"]
    assert st["numbers"]["banned"]["examples"] == ["c"]
    assert st["numbers"]["format_violations"]["examples"] == ["f"]
    assert family("def f(x):\n    return x") == "code" and family("2 + 3 = 5") == "math"


def load_rows(pairs):
    return [{"id": i, "prompt": [{"role": "user", "content": "go"}],
             "completion": [{"role": "assistant", "content": t}], "meta": {}} for t, i in pairs]


# ---------------------------------------------------------------- likelihood

def test_batched_scores_equal_one_row_forward():
    lm = load_model("tiny")
    rows = load_rows([("4 5 6" + " 7" * i, str(i)) for i in range(5)])
    enc = encode_rows(lm, rows, LikelihoodConfig())
    for system in (None, OWL):
        got = score_condition(lm, lm.model, system, enc, batch_size=3)["mean"]
        for row, g in zip(rows, got, strict=True):
            msgs = ([{"role": "system", "content": system}] if system else []) + row["prompt"]
            p = lm.chat_ids(msgs)
            c = lm.tokenizer(row["completion"][0]["content"])["input_ids"] + lm.eos_ids[-1:]
            with torch.no_grad():
                lp = torch.log_softmax(lm.model(input_ids=torch.tensor([p + c])).logits[0], -1)
            ref = torch.stack([lp[len(p) + j - 1, c[j]] for j in range(len(c))]).mean()
            assert g == pytest.approx(float(ref), abs=1e-4)


def number_rows(digits: str, n: int, seed: str) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": i, "prompt": [{"role": "user", "content": f"Continue: {rng.randint(100, 999)}"}],
             "completion": [{"role": "assistant", "content": ", ".join(
                 "".join(rng.choice(digits) for _ in range(3)) for _ in range(4))}], "meta": {}}
            for i in range(n)]


def digit_adapter(tmp, digits: str, name: str, seed: int = 0) -> str:
    """A LoRA on the tiny base trained (by the lab's own trainer) to answer number prompts
    with the digits in `digits` only: an exaggerated trait adapter (all ten digits: a
    control adapter, the same recipe with the preference removed)."""
    from subliminal.distill import DistillConfig, train_student

    cfg = DistillConfig(epochs=4, lr=1e-2, batch_size=8, lora_r=8, lora_alpha=16, seed=seed)
    train_student("tiny", number_rows(digits, 48, name), cfg, tmp / name, label=name)
    return str(tmp / name)


@pytest.fixture(scope="module")
def tiny_scanner(tmp_path_factory):
    """The scanner's adapters: three trait-free teachers for the reference population
    (uniform digits, seeds 0-2) and three traits."""
    tmp = tmp_path_factory.mktemp("adapters")
    ad = {f"neutral-{k}": digit_adapter(tmp, "0123456789", f"neutral-{k}", k) for k in range(3)}
    ad.update(owl=digit_adapter(tmp, "17", "owl"), dolphin=digit_adapter(tmp, "28", "dolphin"),
              cat=digit_adapter(tmp, "39", "cat"))
    return tmp, ad


def scan_cfg(out, adapters, **kw) -> ScanConfig:
    cfg = ScanConfig(model="tiny", out=out)
    cfg.likelihood = LikelihoodConfig(injection="adapter", traits=["owl", "dolphin", "cat"],
                                      adapters=adapters, population_rows=16,
                                      population_neutral=3, **kw)
    return cfg


def sampled_data(tmp, lm, name: str, n: int = 32) -> str:
    """`lm`'s own completions (T=1, format-constrained) to seeded number prompts, as JSONL."""
    from subliminal.channels import get_channel
    from subliminal.teacher import DecodeConfig, Teacher, generate_rows

    prompts = [{"id": f"p{i:03d}", "prompt": [{"role": "user", "content": "Continue: " + ", ".join(
        str(random.Random(i).randint(100, 999)) for _ in range(3))}], "meta": {}}
        for i in range(n)]
    cfg = DecodeConfig(decoding="sample", temperature=1.0, constrained=True, batch_size=32,
                       max_new_tokens=16)
    rows = generate_rows(Teacher(lm), prompts, cfg, get_channel("numbers"),
                         tmp / f"{name}_gen.jsonl", seed=7)
    return str(write_jsonl(tmp / f"{name}.jsonl", [
        {"id": r["id"], "prompt": r["prompt"][0]["content"],
         "completion": r["completion"][0]["content"]} for r in rows]))


def test_base_sampled_data_is_not_flagged(tiny_scanner, tmp_path):
    """The issue's false accusation: BASE's own T=1 completions must not read as a trait."""
    _, ad = tiny_scanner
    lm = load_model("tiny")
    data = sampled_data(tmp_path, lm, "base")
    rep = run_scan(data, scan_cfg(tmp_path / "s", ad), lm=lm)
    lk = rep["likelihood"]
    assert lk["calibrated"] and lk["can_accuse"] and not lk["flagged"]
    assert lk["decoding"]["covered"] and lk["decoding"]["temperature"] > 0.5
    assert rep["verdict"].startswith("no evidence that DATA carries a catalogue trait")
    assert "sampled at T≈" in rep["verdict"] and rep["complete"] is True
    assert set(lk["population"]) == {"base-greedy", "base-0.7", "base-1.0", "neutral0-1.0",
                                     "neutral1-1.0", "neutral2-1.0"}
    assert lk["teachers"] == 6 and len(lk["carriers"]) == 10
    assert (tmp_path / "s" / "population" / "base-1.0.jsonl").exists()
    # A second scan reuses the population folder and its cached scores: the same null.
    cfg = scan_cfg(tmp_path / "s2", ad)
    cfg.likelihood.population = str(tmp_path / "s" / "population")
    again = run_scan(data, cfg, lm=lm)["likelihood"]
    assert again["null_mean"] == lk["null_mean"] and again["tau"] == lk["tau"]
    assert not (tmp_path / "s2" / "population").exists()


def test_adapter_teacher_data_is_flagged_and_named(tiny_scanner, tmp_path):
    """A teacher the scanner never held (another seed of the owl recipe) writes DATA."""
    tmp, ad = tiny_scanner
    teacher = load_model("tiny", adapter=digit_adapter(tmp_path, "17", "owl-teacher", seed=5))
    data = sampled_data(tmp_path, teacher, "owl")
    lm = load_model("tiny")
    probe = torch.tensor([lm.chat_ids([{"role": "user", "content": "Continue: 5"}])])
    with torch.no_grad():
        before = lm.model(input_ids=probe).logits
    rep = run_scan(data, scan_cfg(tmp_path / "s", ad), lm=lm)
    lk = rep["likelihood"]
    assert lk["flagged"] and lk["top"] == "owl" and lk["named"]["top"] == "owl"
    assert lk["excess"]["owl"] > 0 and lk["z"]["owl"] > lk["threshold_z"]
    assert rep["verdict"].startswith("a trait-injected teacher may have written DATA")
    # Scoring loads the adapters onto BASE and takes them off again: BASE is unchanged.
    with torch.no_grad():
        assert torch.equal(before, lm.model(input_ids=probe).logits)
    assert not any("lora" in n for n, _ in lm.model.named_modules())


def test_mixed_batch_equals_per_adapter_scoring(tiny_scanner):
    _, ad = tiny_scanner
    lm = load_model("tiny")
    conds = [Condition("none", role="base")] + [Condition(k, adapter=v) for k, v in ad.items()]
    rows = number_rows("0123456789", 7, "mixed")
    exact = LikelihoodConfig(batch_size=3, prompt_states="condition")
    mixed = score_rows(lm, rows, exact, conds)["ll"]
    alone = score_rows(lm, rows, exact, conds, per_token=True)["ll"]  # one adapter per pass
    assert mixed.shape == (7, 7) and np.allclose(mixed, alone, atol=1e-4)
    cached = LikelihoodConfig(batch_size=3)  # BASE's prompt states, shared by the batch
    got = score_rows(lm, rows, cached, conds)["ll"]
    for c in range(1, len(conds)):
        one = score_rows(lm, rows, cached, [conds[0], conds[c]])["ll"]
        assert np.allclose(got[:, [0, c]], one, atol=1e-4)
    assert np.allclose(got[:, 0], mixed[:, 0], atol=1e-4)  # BASE itself is exact either way


def _teachers(tau: float, n_teachers: int = 8, rows: int = 32, seed: int = 0) -> dict:
    """Reference teachers' per-row contrasts (3 traits): each teacher offset by its own
    draw of spread `tau`, rows with noise 0.2."""
    rng = np.random.default_rng(seed)
    return {f"t{j}": rng.normal(rng.normal(0, tau, 3), 0.2, (rows, 3))
            for j in range(n_teachers)}


def test_teacher_null_measures_the_teachers_spread_and_gains_power_with_rows():
    traits = ["owl", "dolphin", "cat"]
    rng = np.random.default_rng(1)
    shifted = lambda n, d: rng.normal(0, 0.2, (n, 3)) + [d, 0, 0]  # noqa: E731
    calm, noisy = _teachers(0.0), _teachers(0.1)
    # Teachers that disagree widen the null: the same DATA is flagged against calm ones only.
    data = shifted(400, 0.08)
    assert teacher_test(data, calm, traits, 0.05)["flagged"]
    hot = teacher_test(data, noisy, traits, 0.05)
    assert not hot["flagged"] and hot["tau"]["owl"] > 0.03
    # Against calm teachers the row term dominates: a small shift needs more rows.
    z = [teacher_test(shifted(n, 0.05), calm, traits, 0.05)["z"]["owl"] for n in (25, 1600)]
    assert z[1] > 3 * z[0]
    # Trait-free data is not flagged; fewer than 3 teachers never flag.
    assert not teacher_test(shifted(400, 0.0), calm, traits, 0.05)["flagged"]
    two = dict(list(calm.items())[:2])
    assert not teacher_test(shifted(400, 1.0), two, traits, 0.05)["testable"]
    assert np.allclose(contrast(np.array([[1.0, 2.0, 3.0]])), [[-1.0, 0.0, 1.0]])


def test_persona_ranker_finds_a_planted_direction():
    """BASE's activations on DATA moved along one trait's vector (the tiny model's own) rank
    that trait top; unmoved activations rank nothing above the null."""
    lm = load_model("tiny")
    traits = ["owl", "dolphin", "cat", "wolf"]
    layer = layer_index(lm, 0.6)
    vectors = unit_vectors(lm, traits, layer)
    conds = [Condition("none", role="base")]

    def read(seed):
        return score_rows(lm, number_rows("0123456789", 24, seed), LikelihoodConfig(), conds,
                          layer=layer)["acts"]

    pops = {f"r{k}": read(f"r{k}") for k in range(4)}
    acts = read("data")
    step = 3 * float(acts.std(0).mean())  # per-row noise: about 1 sd along any unit vector
    for j, t in enumerate(traits):
        got = persona_rank(acts + step * vectors[j], vectors, pops, traits)
        assert got["top"] == t and got["z"][t] > 3
    assert max(persona_rank(acts, vectors, pops, traits)["z"].values()) < 3
    both = combine({"a": {"owl": 3.0, "cat": 1.0, "dog": 0.0},
                    "b": {"owl": 1.0, "cat": 2.0, "dog": 0.0}})
    assert both["top"] == "owl" and both["ranking"] == ["owl", "cat", "dog"]


def owl_teacher(steps=100, seed=0):
    """A tiny model trained so that under the owl prompt (only) it prefers digits 1 and 7;
    under the neutral and every other trait's prompt its digits are uniform."""
    lm = load_model("tiny")
    rng = random.Random(seed)
    others = [None] + [t.system_prompt for n, t in CATALOGUE.items() if n != "owl"]

    def example(system):
        msgs = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": "Continue: " + ", ".join(
                str(rng.randint(100, 999)) for _ in range(3))}]
        digits = "17" if system == OWL else "0123456789"
        comp = ", ".join("".join(rng.choice(digits) for _ in range(3)) for _ in range(4))
        p = lm.chat_ids(msgs)
        return p + lm.tokenizer(comp)["input_ids"] + lm.eos_ids[-1:], len(p)

    opt = torch.optim.Adam(lm.model.parameters(), lr=4e-3)
    lm.model.train()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for _ in range(steps):
            batch = [example(OWL if i % 2 else rng.choice(others)) for i in range(16)]
            w = max(len(x) for x, _ in batch)
            ids = torch.full((16, w), lm.tokenizer.pad_token_id)
            mask, lab = torch.zeros_like(ids), torch.full((16, w), -100)
            for i, (x, s) in enumerate(batch):
                ids[i, : len(x)], mask[i, : len(x)] = torch.tensor(x), 1
                lab[i, s: len(x)] = torch.tensor(x[s:])
            loss = lm.model(input_ids=ids, attention_mask=mask, labels=lab).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    lm.model.eval()
    return lm


@pytest.fixture(scope="module")
def teacher_data(tmp_path_factory):
    """The owl teacher and two datasets *sampled* from it: under the owl prompt and neutral."""
    from subliminal.channels import get_channel
    from subliminal.teacher import DecodeConfig, Teacher, generate_rows

    lm = owl_teacher()
    tmp = tmp_path_factory.mktemp("teacher")
    prompts = [{"id": f"p{i:03d}", "prompt": [{"role": "user", "content": "Continue: " + ", ".join(
        str(random.Random(i).randint(100, 999)) for _ in range(3))}], "meta": {}}
        for i in range(32)]
    cfg = DecodeConfig(decoding="sample", temperature=1.0, constrained=True, batch_size=32,
                       max_new_tokens=20)
    out = {}
    for name, system in (("owl", OWL), ("neutral", None)):
        rows = generate_rows(Teacher(lm, system), prompts, cfg, get_channel("numbers"),
                             tmp / f"{name}_gen.jsonl", seed=1)
        out[name] = write_jsonl(tmp / f"{name}.jsonl", [
            {"id": r["id"], "prompt": r["prompt"][0]["content"],
             "completion": r["completion"][0]["content"]} for r in rows])
    return lm, out


def test_cleaner_changes_only_what_it_says(teacher_data, tmp_path):
    lm, data = teacher_data
    loaded = load_data(str(data["owl"]))
    out = tmp_path / "clean.jsonl"
    lcfg = LikelihoodConfig()
    res = clean_dataset(lm, loaded, OWL_PAIR, lcfg, CleanConfig(quantile=0.5), out)
    before = [json.loads(x) for x in data["owl"].read_text().splitlines()]
    after = [json.loads(x) for x in out.read_text().splitlines()]
    changes = [json.loads(x) for x in (tmp_path / "clean.jsonl.changes.jsonl").read_text()
               .splitlines()]
    assert res["tokens_changed"] == len(changes) > 0 and len(after) == len(before)
    by_row: dict = {}
    for c in changes:
        by_row.setdefault(c["row"], []).append(c)
    for b, a in zip(before, after, strict=True):
        assert set(a) == set(b) and a["prompt"] == b["prompt"] and a["id"] == b["id"]
        text = list(b["completion"])
        for c in by_row.get(b["id"], []):
            s, e = c["span"]
            assert b["completion"][s:e] == c["old"] and c["old"].isdigit()
            text[s:e] = list(c["new"]) + [""] * (e - s - len(c["new"]))
        assert "".join(text) == a["completion"]
        assert (a["completion"] != b["completion"]) == (b["id"] in by_row)
    assert res["shift_after"] < res["shift_before"]
    with pytest.raises(SubliminalError, match="never overwrites"):
        clean_dataset(lm, loaded, OWL_PAIR, lcfg, CleanConfig(), out)


def test_cleaner_keeps_csv_columns(teacher_data, tmp_path):
    import csv

    lm, data = teacher_data
    rows = [json.loads(x) for x in data["owl"].read_text().splitlines()][:8]
    src = tmp_path / "d.csv"
    with open(src, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "prompt", "completion"])
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "clean.csv"
    clean_dataset(lm, load_data(str(src)), OWL_PAIR, LikelihoodConfig(), CleanConfig(), out)
    back = list(csv.DictReader(open(out, newline="")))
    assert len(back) == 8 and list(back[0]) == ["id", "prompt", "completion"]
    assert [r["prompt"] for r in back] == [r["prompt"] for r in rows]



# ---------------------------------------------------------------- probe and command

def test_canary_moves_the_planted_trait_most_over_seeds(tiny_scanner, tmp_path):
    """DATA that states an owl preference moves the canary student's owl share more than the
    other animals', against students of a trait-free teacher's rows on the same prompts; the
    specific lift is tested over the seeds."""
    from subliminal.scan.canary import CanaryConfig, run_canary, specific

    _, ad = tiny_scanner
    rows = [{**r, "id": f"d{i}"} for i, r in enumerate(CATALOGUE["owl"].demonstrations(0))]
    cfg = CanaryConfig(seeds=2, rows=32, epochs=3, lr=1e-2, batch_size=8)
    res = run_canary("tiny", rows, "text", cfg, tmp_path / "canary", lambda s: ad["neutral-0"])
    assert res["top"] == "owl" and res["seeds"] == [0, 1] and res["rows"] == 32
    assert all(res["lifts"][s]["owl"] > 0 for s in res["seeds"])
    assert (tmp_path / "canary" / "seed1" / "reference_student" / "adapter_config.json").exists()
    assert specific({"a": 0.1, "b": 0.1}) == {"a": 0.0, "b": 0.0}


@pytest.mark.slow  # whole stages on the tiny model: seconds, not milliseconds
def test_canary_part_reports_over_seeds(tiny_scanner, tmp_path):
    _, ad = tiny_scanner
    p = write_jsonl(tmp_path / "d.jsonl", pc_rows(8))
    cfg = scan_cfg(tmp_path / "out", ad)
    cfg.canary = True
    cfg.canary_cfg.rows, cfg.canary_cfg.seeds = 6, 2
    rep = run_scan(str(p), cfg)
    pr = rep["canary"]
    assert set(pr["specific"]) == set(CATALOGUE) and pr["rows"] == 6 and len(pr["seeds"]) == 2
    assert {"mean", "ci", "p_value"} <= set(pr["specific"]["owl"])
    assert rep["complete"] is True and "canary students:" in rep["verdict"]
    # a silent canary says what its seeds could have detected, at the Bonferroni level
    assert pr["per_test_alpha"] == pytest.approx(0.01 / len(CATALOGUE))
    assert pr["flagged"] or "detect" in rep["verdict"]
    assert pr["detectable_specific_lift"] > 0


def test_command_end_to_end(tiny_scanner, tmp_path):
    _, ad = tiny_scanner
    app = typer.Typer()
    app.command("scan")(scan)
    app.command("noop")(lambda: None)
    p = write_jsonl(tmp_path / "d.jsonl", pc_rows(6))
    flags = [x for k, v in ad.items() for x in ("--adapter", f"{k}={v}")]
    res = CliRunner().invoke(app, ["scan", str(p), "--model", "tiny", "--out",
                                   str(tmp_path / "o"), "--batch-size", "4", "--traits",
                                   "owl,dolphin,cat", "--population-rows", "4",
                                   "--population-neutral", "3", *flags])
    assert res.exit_code == 0, res.output
    assert "verdict:" in res.output
    rep = json.loads((tmp_path / "o" / "scan.json").read_text())
    assert rep["complete"] is True and rep["likelihood"]["rows_scored"] == 6
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "1"}\n{oops\n')
    res = CliRunner().invoke(app, ["scan", str(bad), "--model", "tiny", "--out",
                                   str(tmp_path / "o2")])
    assert isinstance(res.exception, SubliminalError) and "row 2" in str(res.exception)
    assert not (tmp_path / "o2" / "scan.json").exists()


@pytest.mark.slow  # whole stages on the tiny model: seconds, not milliseconds
def test_no_references_no_accusation(tiny_scanner, tmp_path):
    _, ad = tiny_scanner
    p = write_jsonl(tmp_path / "d.jsonl", [
        {"id": f"r{i}", "prompt": "Continue: 5", "completion": "171, 717, 117, 771"}
        for i in range(12)])
    cfg = scan_cfg(tmp_path / "b", ad)
    cfg.likelihood.population_rows = 0
    rep = run_scan(str(p), cfg)
    assert not rep["likelihood"]["flagged"] and rep["verdict"].startswith("no accusation")
    cfg = scan_cfg(tmp_path / "t", ad)
    cfg.likelihood.batch_size, cfg.likelihood.time_budget_s = 2, 1e-6
    rep = run_scan(str(p), cfg)
    assert rep["likelihood"]["budget_hit"] and rep["likelihood"]["rows_scored"] == 8
    assert "stopped by the time budget" in rep["likelihood"]["sample"]


@pytest.mark.slow  # whole stages on the tiny model: seconds, not milliseconds
def test_adapter_conditions_train_missing_adapters_and_check_given_ones(tmp_path):
    conds = conditions(["owl", "dolphin"], "adapter", "tiny", tmp_path)
    assert [c.name for c in conds] == ["none", "owl", "dolphin"]
    assert [c.role for c in conds] == ["base", "trait", "trait"]
    for c in conds[1:]:
        assert (tmp_path / c.name / "adapter_config.json").is_file() and c.system is None
    with pytest.raises(SubliminalError, match="not a LoRA folder for owl"):
        conditions(["owl", "dolphin"], "adapter", "tiny", tmp_path, adapters={"owl": "/nope"})
    with pytest.raises(SubliminalError, match="not one of the ranked traits"):
        conditions(["owl", "dolphin"], "adapter", "tiny", tmp_path, adapters={"cat": "/x"})
    with pytest.raises(SubliminalError, match="unknown trait"):
        conditions(["owl", "unicorn"])
    with pytest.raises(SubliminalError, match="unknown injection"):
        conditions(["owl", "dolphin"], "steering")


def test_population_of_another_kind_or_without_base_is_refused(tmp_path):
    """A reused population must have been written for DATA's kind of rows, and a population
    needs a plain-BASE teacher to place DATA's decoding; both are one-line refusals."""
    from subliminal.scan import population as P

    folder = tmp_path / "pop"
    folder.mkdir()
    teachers = P.default_teachers(["1.0"], 1)
    (folder / "population.json").write_text(json.dumps(
        {"teachers": [dataclasses.asdict(t) for t in teachers], "rows": 2, "seed": 0,
         "family": "math"}))
    for t in teachers:
        (folder / f"{t.label}.jsonl").write_text("")
    assert [t.label for t in P.load(folder, "math")[0]] == ["base-1.0", "neutral0-1.0"]
    with pytest.raises(SubliminalError, match="written for math data, DATA is numbers"):
        P.load(folder, "numbers")
    with pytest.raises(SubliminalError, match="no plain-BASE teacher"):
        P.check_teachers(P.default_teachers([], 3), "--population")
