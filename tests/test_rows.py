"""The row layer (subliminal/rows.py): one loader for every command, one completion_text, and
every bad input a one-line error naming the file and row."""

from __future__ import annotations

import json

import pytest

from subliminal.errors import SubliminalError
from subliminal.rows import (
    BadRow,
    RowsConfig,
    completion_text,
    detect_format,
    load_rows,
    training_rows,
)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def lab_row(i, text="1, 2, 3"):
    return {"id": i, "prompt": [{"role": "user", "content": f"q{i}"}],
            "completion": [{"role": "assistant", "content": text}],
            "meta": {"channel": "numbers", "seeds": [100 + i], "topk_ids": [[1, 2]]}}


@pytest.mark.parametrize("row, text", [
    ({"completion": "7, 8"}, "7, 8"),
    ({"completion": [{"role": "assistant", "content": "a"},
                     {"role": "assistant", "content": "b"}]}, "ab"),
    ({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "x"},
                   {"role": "user", "content": "v"}, {"role": "assistant", "content": "y"}]},
     "y"),
    ({"text": "plain"}, "plain"),
])
def test_completion_text_reads_every_accepted_shape(row, text):
    assert completion_text(row) == text


@pytest.mark.parametrize("row, fragment", [
    ({"completion": 42}, "completion must be a string"),
    ({"completion": None}, "completion must be a string"),
    ({"messages": [{"role": "user", "content": "u"}]}, "no assistant message"),
    ({"prompt": "only"}, "no completion"),
    ({"text": 3}, "text must be a string"),
])
def test_completion_text_refuses_what_is_not_text(row, fragment):
    with pytest.raises(BadRow, match=fragment):
        completion_text(row)


def test_filter_and_distill_share_the_one_completion_text():
    import subliminal.distill as distill
    import subliminal.filters as filters
    import subliminal.filters.math as fmath
    import subliminal.rows as rows

    assert filters.completion_text is rows.completion_text
    assert distill.completion_text is rows.completion_text
    assert fmath.completion_text is rows.completion_text


def test_lab_rows_keep_their_meta_and_repeated_ids_are_read_once(tmp_path):
    path = write_jsonl(tmp_path / "kept.jsonl", [lab_row(0), lab_row(1), lab_row(0, "9")])
    got = training_rows(path)
    assert [r["id"] for r in got] == ["0", "1"]
    assert got[0]["completion"][0]["content"] == "1, 2, 3"  # the first of a repeated id
    assert got[0]["meta"]["topk_ids"] == [[1, 2]] and got[0]["meta"]["seeds"] == [100]
    assert got[1]["meta"]["source_row"] == 2


def test_parquet_is_recognised_by_its_bytes_whatever_its_name(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": f"r{i}", "prompt": "p", "completion": f"{i}, {i + 1}"} for i in range(3)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "kept.jsonl")  # misnamed Parquet
    assert detect_format(str(tmp_path / "kept.jsonl")) == "parquet"
    got = training_rows(tmp_path / "kept.jsonl")
    assert [completion_text(r) for r in got] == ["0, 1", "1, 2", "2, 3"]


def test_training_rows_need_a_prompt(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "1, 2"}])
    assert load_rows(path).rows[0]["prompt"] == []  # the scan accepts text rows
    with pytest.raises(SubliminalError, match=r"t.jsonl: row 1: no prompt/completion or "
                                              r"messages column \(found: text\)"):
        training_rows(path)


def test_skip_bad_keeps_the_good_rows_and_counts_the_rest(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [lab_row(0), {"prompt": "p", "completion": 5},
                                              lab_row(1)])
    got = load_rows(path, RowsConfig(skip_bad=True))
    assert len(got.rows) == 2 and got.source["skipped"] == 1
    assert got.source["skipped_examples"][0]["row"] == 2
    assert "completion must be a string" in got.source["skipped_examples"][0]["reason"]


def test_a_missing_data_file_is_never_taken_for_a_hub_id(tmp_path):
    with pytest.raises(SubliminalError, match="no such file or folder"):
        detect_format("data/rows.jsonl")
    assert detect_format("someorg/somedata") == "hub"
