"""`subliminal scan DATA`: load a third-party dataset and normalise its rows.

    subliminal scan rows.jsonl | data.parquet | data.csv | saved_dataset_dir/ | org/name

DATA may be JSONL, Parquet, CSV, a folder written by `datasets.save_to_disk`, or a hub id
(online only). Columns `prompt`/`completion` (strings or chat-message lists), `messages`, or
`text` are accepted; which one was used is recorded. Every row becomes
{"id", "prompt": [msgs], "completion": [msgs], "meta": {}} (text rows: empty prompt). A bad
row (broken JSON, non-UTF-8 bytes, wrong columns, over the size limit) is a one-line
SubliminalError naming the file and row, or with `skip_bad` it is skipped and counted.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from subliminal.errors import SubliminalError

KINDS = ("prompt/completion", "messages", "text")


@dataclass
class DataConfig:
    """How DATA is read."""

    max_row_bytes: int = field(default=1_000_000, metadata={
        "help": "Largest row accepted, in bytes (bigger rows are an error or skipped)."})
    skip_bad: bool = field(default=False, metadata={
        "help": "Skip bad rows and count them in the report instead of stopping."})
    max_rows: int | None = field(default=None, metadata={
        "help": "Read at most this many good rows (the first ones)."})


@dataclass
class Loaded:
    """Normalised rows, the raw rows they came from, and what was read."""

    rows: list[dict]
    raws: list[dict]
    source: dict


class BadRow(Exception):
    """One row's problem (turned into SubliminalError or a skip by the caller)."""


def _msgs(value, role: str, what: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                       and isinstance(m.get("role"), str) for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise BadRow(f"{what} must be a string or a list of {{role, content}} messages")


def row_kind(row: dict) -> str | None:
    """Which accepted column set a raw row uses (None: none of them)."""
    if "prompt" in row and "completion" in row:
        return KINDS[0]
    if "messages" in row:
        return KINDS[1]
    if "text" in row:
        return KINDS[2]
    return None


def normalise(row: dict, kind: str, index: int) -> dict:
    """One raw row as {"id", "prompt", "completion", "meta"}; BadRow if it does not fit."""
    if row_kind(row) != kind:
        raise BadRow(f"expected {kind} columns, found: {', '.join(map(str, row)) or 'none'}")
    if kind == KINDS[0]:
        prompt = _msgs(row["prompt"], "user", "prompt")
        completion = _msgs(row["completion"], "assistant", "completion")
        completion = [m for m in completion if m["role"] == "assistant"][-1:] or completion[-1:]
    elif kind == KINDS[1]:
        msgs = _msgs(row["messages"], "user", "messages")
        last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
        if last is None:
            raise BadRow("messages hold no assistant message")
        prompt, completion = msgs[:last], [msgs[last]]
    else:
        if not isinstance(row["text"], str):
            raise BadRow("text must be a string")
        prompt, completion = [], [{"role": "assistant", "content": row["text"]}]
    meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
    rid = row.get("id")
    return {"id": str(rid) if rid is not None else f"row-{index}", "prompt": prompt,
            "completion": completion, "meta": {**meta, "source_row": index}}


def _jsonl(path: Path, limit: int) -> Iterator[tuple[int, dict | BadRow]]:
    """(line number, row or its problem); oversized lines are skipped without being held."""
    with open(path, "rb") as f:
        n = 0
        while True:
            raw = f.readline(limit + 1)
            if not raw:
                return
            n += 1
            if len(raw) > limit and not raw.endswith(b"\n"):
                size = len(raw)
                while raw and not raw.endswith(b"\n"):  # drain the rest of the long line
                    raw = f.readline(1 << 20)
                    size += len(raw)
                yield n, BadRow(f"row is {size:,} bytes, over the {limit:,}-byte limit")
                continue
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield n, BadRow("not UTF-8")
                continue
            except json.JSONDecodeError as e:
                yield n, BadRow(f"broken JSON ({e.msg})")
                continue
            yield n, row if isinstance(row, dict) else BadRow("expected a JSON object")


def _csv(path: Path, limit: int) -> Iterator[tuple[int, dict | BadRow]]:
    """CSV rows numbered by their line in the file (header = line 1)."""
    lines = path.read_bytes().splitlines(keepends=True)
    text, bad = [], {}
    for i, line in enumerate(lines, start=1):
        if len(line) > limit:
            bad[i] = BadRow(f"row is {len(line):,} bytes, over the {limit:,}-byte limit")
            text.append("\n")
            continue
        try:
            text.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            bad[i] = BadRow("not UTF-8")
            text.append("\n")
    if 1 in bad:
        raise SubliminalError(f"{path}: row 1 (header): {bad[1]}")
    csv.field_size_limit(max(limit, 1024))
    reader = csv.DictReader(io.StringIO("".join(text)))
    try:
        for row in reader:
            n = reader.line_num
            for b in sorted(k for k in bad if k <= n):
                yield b, bad.pop(b)
            if any(v for v in row.values()):
                yield n, dict(row)
    except csv.Error as e:
        raise SubliminalError(f"{path}: row {reader.line_num}: bad CSV ({e})") from None
    yield from sorted(bad.items())


def _table_iter(records, limit: int) -> Iterator[tuple[int, dict | BadRow]]:
    """Rows of a table numbered from 1; oversized rows become BadRow."""
    for i, row in enumerate(records, start=1):
        size = len(json.dumps(row, default=str).encode())
        yield i, row if size <= limit else BadRow(
            f"row is {size:,} bytes, over the {limit:,}-byte limit")


def _parquet(path: Path, limit: int) -> Iterator[tuple[int, dict | BadRow]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - arrow raises many types; the user needs one line
        raise SubliminalError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})"
                              ) from None
    rows = (r for batch in table.to_batches(1024) for r in batch.to_pylist())
    yield from _table_iter(rows, limit)


def _datasets_dir(path: Path) -> tuple[Iterator, str]:
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001
        raise SubliminalError(f"{path}: not a saved datasets folder ({str(e).splitlines()[0]})"
                              ) from None
    split = ""
    if isinstance(ds, DatasetDict):
        split = "train" if "train" in ds else next(iter(ds), "")
        if not split:
            raise SubliminalError(f"{path}: the saved DatasetDict has no splits")
        ds = ds[split]
    return iter(ds), split


def _hub(spec: str) -> Iterator:
    offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes")
                  for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if offline:
        raise SubliminalError(f"{spec!r} is not a local file or folder, and hub datasets "
                              "cannot be fetched offline (HF_HUB_OFFLINE is set)")
    from datasets import load_dataset

    try:
        return iter(load_dataset(spec, split="train"))
    except Exception as e:  # noqa: BLE001
        raise SubliminalError(f"cannot load hub dataset {spec!r} (offline, or no such dataset: "
                              f"{str(e).splitlines()[0][:200]})") from None


def detect_format(data: str) -> str:
    path = Path(data).expanduser()
    if path.is_dir():
        return "datasets"
    if path.exists():
        suffix = path.suffix.lower()
        if suffix in (".parquet", ".pq"):
            return "parquet"
        if suffix in (".csv", ".tsv"):
            return "csv"
        return "jsonl"
    if data.count("/") == 1 and not data.startswith((".", "/", "~")):
        return "hub"
    raise SubliminalError(f"{data}: no such file or folder (and not a hub id org/name)")


def load_data(data: str, cfg: DataConfig | None = None) -> Loaded:
    """Read and normalise DATA; raise (or skip, with cfg.skip_bad) on bad rows."""
    cfg = cfg or DataConfig()
    fmt = detect_format(data)
    path = Path(data).expanduser()
    split = None
    if fmt == "jsonl":
        items = _jsonl(path, cfg.max_row_bytes)
    elif fmt == "csv":
        items = _csv(path, cfg.max_row_bytes)
    elif fmt == "parquet":
        items = _parquet(path, cfg.max_row_bytes)
    elif fmt == "datasets":
        records, split = _datasets_dir(path)
        items = _table_iter(records, cfg.max_row_bytes)
    else:
        items = _table_iter(_hub(data), cfg.max_row_bytes)
    rows, raws, skipped, kind = [], [], [], None
    for n, item in items:
        try:
            if isinstance(item, BadRow):
                raise item
            kind = kind or row_kind(item)
            if kind is None:
                raise BadRow(f"no prompt/completion, messages or text column (found: "
                             f"{', '.join(map(str, item)) or 'none'})")
            rows.append(normalise(item, kind, n))
            raws.append(item)
        except BadRow as e:
            if not cfg.skip_bad:
                raise SubliminalError(f"{data}: row {n}: {e}") from None
            skipped.append({"row": n, "reason": str(e)})
        if cfg.max_rows is not None and len(rows) >= cfg.max_rows:
            break
    if not rows:
        why = f" ({len(skipped)} bad rows skipped)" if skipped else ""
        raise SubliminalError(f"{data}: no usable rows{why}")
    return Loaded(rows, raws, {"data": data, "format": fmt, "split": split, "columns": kind,
                               "rows": len(rows), "skipped": len(skipped),
                               "skipped_examples": skipped[:20],
                               "truncated_at_max_rows": cfg.max_rows is not None
                               and len(rows) >= cfg.max_rows})


def completion_of(raw: dict, kind: str) -> str:
    """The completion text inside a raw row (what a cleaner rewrites)."""
    return normalise(raw, kind, 0)["completion"][0]["content"]


def with_completion(raw: dict, kind: str, text: str) -> dict:
    """A copy of a raw row, same columns, with its (last assistant) completion set to `text`."""
    out = json.loads(json.dumps(raw, default=str))
    if kind == KINDS[2]:
        out["text"] = text
        return out
    key = "completion" if kind == KINDS[0] else "messages"
    value = out[key]
    if isinstance(value, str):
        out[key] = text
        return out
    idx = max((i for i, m in enumerate(value) if m.get("role") == "assistant"),
              default=len(value) - 1)
    value[idx]["content"] = text
    return out
