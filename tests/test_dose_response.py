"""The dose-response read-out: points are the studies' own records, never recomputed."""

import json
import shutil
from pathlib import Path

import pytest

from subliminal.dose_response import markdown, paired, paired_markdown, plot, points
from subliminal.errors import SubliminalError

EVIDENCE = Path(__file__).resolve().parents[1] / "docs" / "evidence"
STUDIES = sorted({p.parent for p in EVIDENCE.glob("*/study*.json")})


@pytest.mark.parametrize("folder", STUDIES, ids=lambda p: p.name)
def test_a_point_per_recipe_carries_its_studys_deciding_test(folder):
    name = "study.json" if (folder / "study.json").exists() else "study.partial.json"
    record = json.loads((folder / name).read_text())
    pts = points(folder)
    assert [p["recipe"] for p in pts] == list(record["students"])
    for p in pts:
        d = record["students"][p["recipe"]]["diagonal_test"]
        assert (p["lift"], p["ci"], p["p"], p["n"]) == (
            d["lift"], d["ci"], d["p_value"], record["students"][p["recipe"]]["n_replicates"])
        assert p["finished"] == (name == "study.json")
        assert p["lora_r"] is None or p["lora_r"] >= 1
        assert p["steps"] and p["lr"] > 0


def test_the_table_has_a_line_per_point_and_the_plot_is_drawn(tmp_path):
    pts = [p for folder in STUDIES for p in points(folder)]
    lines = markdown(pts).splitlines()
    assert len(lines) == 2 + len(pts)
    assert all(f"{p['lift']:+.3f}" in line for p, line in zip(pts, lines[2:], strict=True))
    plot(pts, tmp_path / "dose.png")
    assert (tmp_path / "dose.png").stat().st_size > 1000


def test_a_rank_recipe_reports_its_own_rank_and_a_missing_record_is_refused(tmp_path):
    src = next(f for f in STUDIES if (f / "study.json").exists())
    copy = tmp_path / "study"
    shutil.copytree(src, copy)
    record = json.loads((copy / "study.json").read_text())
    first = next(iter(record["students"].values()))
    first["recipe"]["lora_r"] = 32
    (copy / "study.json").write_text(json.dumps(record))
    assert points(copy)[0]["lora_r"] == 32
    first["recipe"] |= {"finetune": "full", "lr": 1e-4}  # a full fine-tune has no rank
    (copy / "study.json").write_text(json.dumps(record))
    full = points(copy)[0]
    assert (full["lora_r"], full["lr"]) == (None, 1e-4)
    line = markdown([full]).splitlines()[2]
    assert "| all weights | 0.0001 |" in line
    import warnings

    with warnings.catch_warnings():  # the rank panel leaves it out, and says so when empty
        warnings.simplefilter("error")
        plot([full], tmp_path / "dose.png")
    (copy / "study.json").unlink()
    with pytest.raises(SubliminalError, match="no study.json"):
        points(copy)


def test_a_record_without_what_a_point_needs_is_refused_naming_its_folder(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"cell": {}}))
    (folder / "study.json").write_text(json.dumps({"students": {"allx2": {}}}))
    with pytest.raises(SubliminalError, match="odd: not a study record"):
        points(folder)


def test_the_pipeline_refuses_in_one_line_before_printing(tmp_path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "pipelines" / "dose_response.py"
    proc = subprocess.run([sys.executable, str(script), str(STUDIES[0]), "--plot",
                           str(tmp_path / "no" / "dose.png")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "no folder" in proc.stderr


E1B = EVIDENCE / "e1b-adapter-sample-logits"


def test_two_recipes_are_paired_replicate_by_replicate():
    r = paired(E1B, "allx2", "allx8")
    record = json.loads((E1B / "study.json").read_text())["students"]
    low, high = (record[k]["diagonal_test"]["lifts"] for k in ("allx2", "allx8"))
    assert r["diffs"] == pytest.approx([h - lo for h, lo in zip(high, low, strict=True)])
    assert r["lift"] == pytest.approx(sum(r["diffs"]) / len(r["diffs"]))
    assert r["n"] == 3 and r["ci"][0] < r["lift"] < r["ci"][1] and 0 < r["p_value"] < 1
    # swapping the recipes flips the sign and keeps the p-value
    back = paired(E1B, "allx8", "allx2")
    assert back["lift"] == pytest.approx(-r["lift"]) and back["p_value"] == pytest.approx(
        r["p_value"])
    lines = paired_markdown([r, back]).splitlines()
    assert len(lines) == 4 and "allx8 - allx2" in lines[2] and "allx2 - allx8" in lines[3]


def test_an_unfinished_study_or_a_missing_recipe_is_not_paired(tmp_path):
    copy = tmp_path / "study"
    shutil.copytree(E1B, copy)
    with pytest.raises(SubliminalError, match="no student recipe 'allx4'"):
        paired(copy, "allx2", "allx4")
    (copy / "study.json").rename(copy / "study.partial.json")
    with pytest.raises(SubliminalError, match="unfinished"):
        paired(copy, "allx2", "allx8")


def test_the_pipeline_refuses_a_bad_pair_in_one_line():
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "pipelines" / "dose_response.py"
    proc = subprocess.run([sys.executable, str(script), str(E1B), "--paired", "allx2"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "LOW,HIGH" in proc.stderr


def test_movement_is_how_far_the_twins_students_left_the_base():
    """Twin's student of replicate r: owl's probability times e^(r+1), the rest unchanged;
    the mean |change| over the catalogue is the owl and non-owl shares' changes / 4."""
    import math

    from subliminal.crossed import movement
    from subliminal.layout import CONTROL, audit_key

    animals = ["owl", "cat", "dog", "fox"]
    base = {"animals": animals, "probs": [[0.01, 0.01, 0.01, 0.01]]}
    probes = {"base": base}
    expected = []
    for r in range(3):
        owl = 0.01 * math.e ** (r + 1)
        probes[audit_key(r, CONTROL, 1, "allx2")] = {"animals": animals,
                                                      "probs": [[owl, 0.01, 0.01, 0.01]]}
        share = [math.log(owl / 0.03) - math.log(1 / 3)] + [
            abs(math.log(0.01 / (owl + 0.02)) - math.log(1 / 3))] * 3
        expected.append(sum(share) / 4)
    m = movement(probes, [0, 1, 2], "allx2")
    assert m["per_replicate"] == pytest.approx(expected) and m["n_replicates"] == 3
    assert m["mean"] == pytest.approx(sum(expected) / 3) and m["ci"][0] < m["mean"]


def test_movement_reads_every_recipe_and_refuses_a_study_without_its_base(tmp_path):
    from subliminal.dose_response import movement_markdown, movements

    rows = movements(EVIDENCE / "c5-dose")
    assert [m["recipe"] for m in rows] == ["allx2", "allx8"]
    assert all(m["n_replicates"] == 4 and m["mean"] > 0 for m in rows)
    assert len(movement_markdown(rows).splitlines()) == 4
    copy = tmp_path / "c5"
    shutil.copytree(EVIDENCE / "c5-dose", copy)
    shutil.rmtree(copy / "base")
    with pytest.raises(SubliminalError, match="no base audit"):
        movements(copy)


def test_a_recipe_pairs_with_another_studys_only_on_the_same_rows(tmp_path):
    """--low-from: the same study as its own LOW source gives the in-study pairing; a study
    whose students learned from other rows, or of another cell, is refused."""
    c5 = EVIDENCE / "c5-dose"
    within = paired(c5, "allx2", "allx8")
    across = paired(c5, "allx2", "allx8", low_from=c5)
    assert across["diffs"] == within["diffs"] and across["low"] == "c5-dose:allx2"
    copy = tmp_path / "c5"
    shutil.copytree(c5, copy)
    stage = copy / "rep2" / "cat" / "gen1" / "distill-allx2" / "stage.json"
    record = json.loads(stage.read_text())
    stage.write_text(json.dumps({**record, "rows_sha256": "0" * 64}))
    with pytest.raises(SubliminalError, match="rep2 cat's students learned from different rows"):
        paired(c5, "allx2", "allx8", low_from=copy)
    with pytest.raises(SubliminalError, match="not one design"):
        paired(c5, "allx2", "allx8", low_from=EVIDENCE / "c1-adapter-sample-logits")


def test_a_new_recipe_pairs_with_the_replicates_both_studies_hold():
    """E8b (3 replicates of seeds 50-52) against C5 (4, seeds 50-53): C5's first three, whose
    rows E8b's students learned from (the committed hashes), and no other."""
    e8b = EVIDENCE / "e8b-full"
    res = paired(e8b, "allx2", "allx2full-lr1e-5", low_from=EVIDENCE / "c5-dose")
    c5 = json.loads((EVIDENCE / "c5-dose" / "study.json").read_text())["students"]["allx2"]
    assert res["n"] == 3 and res["lifts_low"] == c5["diagonal_test"]["lifts"][:3]
    assert res["diffs"] == pytest.approx([-0.092, -0.083, -0.069], abs=5e-4)


def test_movement_and_the_scripts_modes_refuse_what_they_cannot_read():
    import subprocess
    import sys

    from subliminal.dose_response import movements

    with pytest.raises(SubliminalError, match="not a crossed study"):
        movements(EVIDENCE / "default-timed-2026-12-07")  # a chain run: no control twins
    script = Path(__file__).resolve().parents[1] / "pipelines" / "dose_response.py"
    for args in (["--movement", "--paired", "allx2,allx8"], ["--low-from", str(EVIDENCE)]):
        proc = subprocess.run([sys.executable, str(script), str(EVIDENCE / "c5-dose"), *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
