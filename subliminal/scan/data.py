"""`subliminal scan DATA`: the scan's view of a dataset (reading is the row layer's job).

    subliminal scan rows.jsonl | data.parquet | data.csv | saved_dataset_dir/ | org/name

Formats, columns, bad rows and the size limit are handled by `subliminal.rows` (one loader for
every command); this module keeps what only the scan needs: rewriting a raw row's completion
in its own columns, for the cleaner.
"""

from __future__ import annotations

import json

from subliminal.rows import (  # noqa: F401 - the scan's loader API, re-exported
    KINDS,
    BadRow,
    Loaded,
    completion_text,
    detect_format,
    normalise,
    row_kind,
)
from subliminal.rows import RowsConfig as DataConfig  # noqa: F401
from subliminal.rows import load_rows as load_data  # noqa: F401


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
