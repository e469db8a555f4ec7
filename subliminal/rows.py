"""The row layer: every command reads user rows through here (filter, distill, scan).

    subliminal filter rows.jsonl | data.parquet | data.csv | saved_dataset_dir/ --out filt/
    subliminal scan org/name          # hub datasets: online only

DATA may be JSONL, Parquet (recognised by suffix or by its `PAR1` magic bytes, so a Parquet
file is never read as "broken JSON"), CSV, a folder written by `datasets.save_to_disk`, or a
hub id. Columns `prompt`/`completion` (strings or chat-message lists), `messages`, or `text`
are accepted; which one was used is recorded. Every row becomes
{"id", "prompt": [msgs], "completion": [msgs], "meta": {...}} (text rows: empty prompt).
A bad row (broken JSON, non-UTF-8 bytes, wrong columns, a completion that is not text, over
the size limit) is a one-line SubliminalError naming the file and row, or with `skip_bad` it
is skipped and counted. Empty input is always an error: nothing trains on nothing.
`completion_text` is the one place that reads a row's answer text.
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
from subliminal.records import unique_ids

KINDS = ("prompt/completion", "messages", "text")
DATA_SUFFIXES = (".jsonl", ".json", ".ndjson", ".csv", ".tsv", ".parquet", ".pq")


@dataclass
class RowsConfig:
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


class BadRow(SubliminalError):
    """One row's problem, without its place (load_rows adds file and row, or skips it)."""


def _msgs(value, role: str, what: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                       and isinstance(m.get("role"), str) for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    got = type(value).__name__
    raise BadRow(f"{what} must be a string or a list of {{role, content}} messages (got {got})")


def row_kind(row: dict) -> str | None:
    """Which accepted column set a raw row uses (None: none of them)."""
    if "prompt" in row and "completion" in row:
        return KINDS[0]
    if "messages" in row:
        return KINDS[1]
    if "text" in row:
        return KINDS[2]
    return None


def completion_text(row: dict) -> str:
    """The assistant's answer text of any accepted row (lab rows, raw prompt/completion,
    messages, text). The one home for this: filters, distill and the scan all read it here."""
    kind = row_kind(row) or ("prompt/completion" if "completion" in row else None)
    if kind is None:
        raise BadRow("no completion, messages or text column")
    if kind == KINDS[2]:
        if not isinstance(row["text"], str):
            raise BadRow(f"text must be a string (got {type(row['text']).__name__})")
        return row["text"]
    if kind == KINDS[1]:
        msgs = _msgs(row["messages"], "user", "messages")
        answers = [m["content"] for m in msgs if m["role"] == "assistant"]
        if not answers:
            raise BadRow("messages hold no assistant message")
        return answers[-1]
    comp = _msgs(row["completion"], "assistant", "completion")
    return "".join(m["content"] for m in comp)


def normalise(row: dict, kind: str, index: int) -> dict:
    """One raw row as {"id", "prompt", "completion", "meta"}; BadRow if it does not fit."""
    if row_kind(row) != kind:
        raise BadRow(f"expected {kind} columns, found: {', '.join(map(str, row)) or 'none'}")
    if kind == KINDS[0]:
        prompt = _msgs(row["prompt"], "user", "prompt")
        completion = _msgs(row["completion"], "assistant", "completion")
        if not completion:
            raise BadRow("completion holds no message")
        completion = [m for m in completion if m["role"] == "assistant"][-1:] or completion[-1:]
    elif kind == KINDS[1]:
        msgs = _msgs(row["messages"], "user", "messages")
        last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
        if last is None:
            raise BadRow("messages hold no assistant message")
        prompt, completion = msgs[:last], [msgs[last]]
    else:
        prompt, completion = [], [{"role": "assistant", "content": completion_text(row)}]
    meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
    rid = row.get("id")
    return {"id": str(rid) if rid is not None else f"row-{index}", "prompt": prompt,
            "completion": completion, "meta": {**meta, "source_row": index}}


def _too_big(size: int, limit: int) -> BadRow:
    return BadRow(f"row is {size:,} bytes, over the {limit:,}-byte limit")


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
                yield n, _too_big(size, limit)
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
            bad[i] = _too_big(len(line), limit)
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
    reader = csv.DictReader(io.StringIO("".join(text)),
                            delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
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
        yield i, row if size <= limit else _too_big(size, limit)


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
        raise SubliminalError(f"{path}: a folder, but not a saved datasets folder "
                              f"({str(e).splitlines()[0][:200]})") from None
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
    # Deferred: bases imports torch; the row layer (under filter) stays light.
    from subliminal.bases import hub_reachable

    if not hub_reachable():
        raise SubliminalError(f"{spec!r} is not a local file or folder, and the Hugging Face "
                              "hub is unreachable (offline?)")
    from datasets import load_dataset

    try:
        return iter(load_dataset(spec, split="train"))
    except Exception as e:  # noqa: BLE001
        raise SubliminalError(f"cannot load hub dataset {spec!r} (offline, or no such dataset: "
                              f"{str(e).splitlines()[0][:200]})") from None


def detect_format(data: str) -> str:
    """jsonl, csv, parquet, datasets or hub; a missing local path is a one-line error."""
    path = Path(data).expanduser()
    if path.is_dir():
        return "datasets"
    if path.exists():
        if not path.is_file():
            raise SubliminalError(f"{data}: not a regular file")
        suffix = path.suffix.lower()
        with open(path, "rb") as f:
            magic = f.read(4)
        if suffix in (".parquet", ".pq") or magic == b"PAR1":
            return "parquet"
        if suffix in (".csv", ".tsv"):
            return "csv"
        return "jsonl"
    looks_local = data.startswith((".", "/", "~")) or path.suffix.lower() in DATA_SUFFIXES
    if data.count("/") == 1 and not looks_local:
        return "hub"
    raise SubliminalError(f"{data}: no such file or folder (and not a hub id org/name)")


def _items(data: str, fmt: str, cfg: RowsConfig) -> tuple[Iterator, str | None]:
    path = Path(data).expanduser()
    if fmt == "jsonl":
        return _jsonl(path, cfg.max_row_bytes), None
    if fmt == "csv":
        return _csv(path, cfg.max_row_bytes), None
    if fmt == "parquet":
        return _parquet(path, cfg.max_row_bytes), None
    if fmt == "datasets":
        records, split = _datasets_dir(path)
        return _table_iter(records, cfg.max_row_bytes), split
    return _table_iter(_hub(data), cfg.max_row_bytes), None


def load_rows(data: str | Path, cfg: RowsConfig | None = None,
              kinds: tuple[str, ...] = KINDS) -> Loaded:
    """Read and normalise DATA; raise (or skip, with cfg.skip_bad) on bad rows. `kinds`
    narrows the accepted column sets (training needs a prompt: no `text` rows)."""
    cfg, data = cfg or RowsConfig(), str(data)
    fmt = detect_format(data)
    items, split = _items(data, fmt, cfg)
    rows, raws, skipped, kind = [], [], [], None
    for n, item in items:
        try:
            if isinstance(item, BadRow):
                raise item
            kind = kind or row_kind(item)
            if kind is None or kind not in kinds:
                names = f"{', '.join(kinds[:-1])} or {kinds[-1]}" if len(kinds) > 1 else kinds[0]
                raise BadRow(f"no {names} column (found: {', '.join(map(str, item)) or 'none'})")
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


def training_rows(data: str | Path, cfg: RowsConfig | None = None) -> list[dict]:
    """Rows for `filter` and `distill`: prompt/completion or messages columns only, repeated
    ids dropped (the first kept), at least one row. Lab rows (meta.topk_*, meta.seeds, ...)
    keep their meta, so `distill --mode logits` and the filter rules see what they need."""
    loaded = load_rows(data, cfg, kinds=KINDS[:2])
    return unique_ids(loaded.rows, data)
