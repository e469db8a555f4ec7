"""Run directories: resolved config, environment, per-stage outputs, completion records.

A stage writes its outputs, then `complete.json` *last*; a stage folder without it is
unfinished and is resumed (row files are append-only, so finished rows survive a kill).
Nothing is silently overwritten: a run directory made with a different config is refused.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from subliminal.errors import SubliminalError

COMPLETE = "complete.json"
PACKAGES = ("subliminal", "torch", "transformers", "peft", "numpy", "datasets", "gguf",
            "accelerate", "vllm", "scikit-learn", "typer")


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths and tuples to plain JSON values (configs must serialise)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename) so a kill never leaves half a record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """Read a JSON record, naming the file if it is corrupt."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SubliminalError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SubliminalError(f"{path}: corrupt JSON ({e})") from None


def iter_jsonl(path: Path) -> Iterator[dict]:
    """Yield the rows of a JSONL file; a bad row raises naming file and row number."""
    path = Path(path)
    with open(path, "rb") as f:
        for i, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise SubliminalError(f"{path}: row {i}: not UTF-8") from None
            except json.JSONDecodeError as e:
                raise SubliminalError(f"{path}: row {i}: broken JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise SubliminalError(f"{path}: row {i}: expected a JSON object")
            yield row


def read_jsonl(path: Path) -> list[dict]:
    return list(iter_jsonl(path))


def append_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Append rows in one write and fsync, so a batch is either on disk or not."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(to_jsonable(r)) + "\n" for r in rows)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def recover_jsonl(path: Path) -> list[dict]:
    """Rows of an append-only file we wrote ourselves; a torn last line (killed mid-write)
    is cut off so the batch it belonged to is redone. Any other bad row is an error."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(cut)
    return read_jsonl(path)


def git_revision() -> str | None:
    """The project's git commit (with '+dirty' when the tree has changes), if any."""
    here = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (rev + ("+dirty" if dirty.strip() else "")) if rev else None


def environment(seed: int | None = None) -> dict:
    """What a reader needs to reproduce a run: versions, commit, device, threads, seed."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    env: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "git": git_revision(),
        "seed": seed,
    }
    try:
        import torch

        env["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        env["torch_threads"] = torch.get_num_threads()
    except ImportError:
        env["device"] = None
    return env


def is_complete(stage_dir: Path) -> bool:
    return (Path(stage_dir) / COMPLETE).exists()


def mark_complete(stage_dir: Path, info: dict | None = None) -> None:
    """Write the stage's completion record; call this only after every output is on disk."""
    write_json(Path(stage_dir) / COMPLETE, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                            **(info or {})})


def init_run(out: Path, config: Any, seed: int | None = None) -> Path:
    """Create or reopen a run directory; refuse one that holds a different config."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SubliminalError(f"{out}: exists and is not a directory")
    cfg = to_jsonable(config)
    cfg_path = out / "config.json"
    if cfg_path.exists():
        old = read_json(cfg_path)
        if old != cfg:
            changed = sorted(k for k in set(old) | set(cfg) if old.get(k) != cfg.get(k))
            raise SubliminalError(
                f"{out}: holds a run with a different config (differs in: {', '.join(changed)});"
                " use another --out or the same flags to resume")
    elif out.exists() and any(out.iterdir()):
        raise SubliminalError(f"{out}: not empty and has no config.json; refusing to write there")
    else:
        write_json(cfg_path, cfg)
    env_path = out / "environment.json"
    if env_path.exists():  # keep every session's environment: resumes may change machines
        write_json(out / f"environment.resumed-{int(time.time())}.json", environment(seed))
    else:
        write_json(env_path, environment(seed))
    return out
