"""Run directories: resolved config, environment, locks, per-stage outputs, completion records.

    subliminal chain --out runs/x      # init_run(runs/x, cfg) locks runs/x for the process

A stage writes its outputs, then `complete.json` *last*; a stage folder without it is
unfinished and is resumed (row files are append-only, so finished rows survive a kill).
Nothing is silently overwritten: a run directory made with a different config is refused, and
`complete.json` seals the hash of the config (or stage key) it was made from, so a finished
folder whose config.json was edited afterwards is refused too (`completed`).
One process at a time: a run folder (and any stage folder wrapped in `locked`) holds an
exclusive `.lock`; a second process is refused with a one-line error naming the holder.
Readers drop repeated row ids (keeping the first), so even a file written twice is read once.
Data files are recorded by logical name and content hash (`data_ref`), never by absolute path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from subliminal.errors import SubliminalError
from subliminal.progress import console

COMPLETE = "complete.json"
LOCK = ".lock"
DATA_DIR = Path(__file__).resolve().parent / "data"
PACKAGES = ("subliminal-lab", "torch", "transformers", "peft", "numpy", "datasets", "gguf",
            "accelerate", "vllm", "scikit-learn", "typer")


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths and tuples to plain JSON values (configs must serialise). Mappings
    first: a run record (subliminal.schema) is a dataclass that is the mapping of its keys."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename) so a kill never leaves half a record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A temp name of this process's own: two processes may write one shared record (the
    # audit cache under Ray) and must never interleave in one temp file.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")
        os.replace(tmp, path)
    except BaseException:  # a full disk or a kill: no half-written temp file stays behind
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


# Writes the destination refuses (read-only, no permission, full): the user can fix these, so
# they are one line naming the path (subliminal.cli.run), never a traceback. Any other OSError
# is a bug and keeps its traceback.
WRITE_ERRNOS = {errno.EACCES: "permission denied: check its permissions, or choose a --out "
                              "you may write to",
                errno.EPERM: "not permitted: check its permissions, or choose a --out you may "
                             "write to",
                errno.EROFS: "read-only file system: choose a writable --out",
                errno.ENOSPC: "the disk is full: free space, then run the same command again "
                              "(finished stages are kept)",
                errno.EDQUOT: "over the disk quota: free space, then run the same command again "
                              "(finished stages are kept)"}


def write_failure(e: OSError) -> str | None:
    """The one-line message for a refused write (None for any other OSError), naming the path
    the record was going to (not our temp name for it)."""
    if e.errno not in WRITE_ERRNOS:
        return None
    path = re.sub(r"\.\d+\.tmp$", "", str(e.filename)) if e.filename else "(unknown path)"
    return f"{path}: {WRITE_ERRNOS[e.errno]} ({e.strerror})"


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Around a tensor write: safetensors reports a failed write as its own error type with
    the OS error number only in its text; raise it as the OSError it is, naming `path`, and
    remove the half-written file (a full disk then reads like any other full disk)."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as e:
        found = re.search(r"\(os error (\d+)\)", str(e))
        if found is None:
            raise
        with contextlib.suppress(OSError):
            if Path(path).is_file():
                Path(path).unlink()
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from None


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


def unique_ids(rows: Iterable[dict], where: Path | str = "") -> list[dict]:
    """Rows with repeated ids dropped (the first kept): two writers, or a batch appended twice,
    must never make a row count twice. Rows without an id are all kept."""
    out, seen, dropped = [], set(), 0
    for row in rows:
        rid = row.get("id")
        key = json.dumps(rid, sort_keys=True) if rid is not None else None
        if key is not None and key in seen:
            dropped += 1
            continue
        if key is not None:
            seen.add(key)
        out.append(row)
    if dropped:
        console.print(f"[yellow]warning: {where}: {dropped} rows repeat an earlier id; "
                      "kept the first of each[/yellow]")
    return out


def read_jsonl(path: Path) -> list[dict]:
    """All rows of a JSONL file, repeated ids dropped (the first kept)."""
    return unique_ids(iter_jsonl(path), path)


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
    """Write the stage's completion record; call this only after every output is on disk.
    It seals the folder's identity records (`sealed`: the hash of config.json / stage.json)
    so a later edit of them is caught (`completed`). A metered stage (subliminal.meter) also
    records what it spent: wall and CPU seconds, model positions and estimated GFLOP."""
    spent = {k: v for read in READERS for k, v in read(Path(stage_dir)).items()}
    write_json(Path(stage_dir) / COMPLETE, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                            **(info or {}), "sealed": _identity(stage_dir),
                                            **spent})


# Who adds what a stage spent to its completion record: subliminal.meter registers its reading
# here when it is imported (every metered stage imports it), so this light module, under rows
# and filters, never imports torch.
READERS: list[Callable[[Path], dict]] = []


# The records that say what a folder's outputs were made from: a run's resolved config, a
# stage's key. They are compared with the command line on every resume, so an edit of one
# could make a finished folder pass for the output of another config.
IDENTITY = ("config.json", "stage.json")


def _identity(folder: Path) -> dict[str, str]:
    """sha256 of each identity record present, over its parsed content (canonical JSON)."""
    return {name: content_hash(json.dumps(read_json(Path(folder) / name), sort_keys=True))
            for name in IDENTITY if (Path(folder) / name).exists()}


def completed(folder: Path) -> bool:
    """Whether FOLDER finished, checking that its identity records still hash to what its
    completion sealed: outputs made from a 16-sample config must never be shown as a
    17-sample run because config.json was edited. A folder completed before records were
    sealed has nothing to check against and is taken as it is."""
    folder = Path(folder)
    if not is_complete(folder):
        return False
    sealed = read_json(folder / COMPLETE).get("sealed") or {}
    now = _identity(folder)
    changed = sorted(n for n in sealed if sealed[n] != now.get(n))
    if changed:
        name = changed[0]
        raise SubliminalError(
            f"{folder / name}: changed after {folder} finished (sealed sha256 "
            f"{sealed[name][:12]}, now {str(now.get(name, 'missing'))[:12]}); its outputs were "
            "made from the sealed version: restore it, or run into another --out")
    return True


# Keys a run's config.json may carry as provenance only (how the config was asked for, e.g. a
# preset's name): a resume compares the resolved config, never these.
PROVENANCE = ("preset",)


def recorded_decode(decode: dict) -> dict:
    """A decode config as records hold it. `hf` wrote every folder made before generation
    backends existed (their configs have no `backend`), so that value is left out and those
    folders resume; any other backend is named, since its rows differ."""
    return {k: v for k, v in decode.items() if not (k == "backend" and v == "hf")}


def _decodes_recorded(cfg: Any) -> Any:
    """`cfg` with every nested `decode` as records hold it."""
    if not isinstance(cfg, dict):
        return cfg
    return {k: recorded_decode(v) if k == "decode" and isinstance(v, dict)
            else _decodes_recorded(v) for k, v in cfg.items()}


_MISSING = object()  # a field one config does not have


def differing(configs: list[dict], skip: tuple[str, ...] = ()) -> list[str]:
    """The top-level fields (but SKIP) on which CONFIGS do not all agree, sorted; a field one
    of them lacks differs, even from an explicit None."""
    keys = {k for c in configs for k in c if k not in skip}
    return sorted(k for k in keys
                  if any(c.get(k, _MISSING) != configs[0].get(k, _MISSING) for c in configs))


def _compared(cfg: Any) -> Any:
    """The part of a stored config a resume must match: all but its provenance keys, its
    decodes as records hold them (a run written before backends existed resumes)."""
    if not isinstance(cfg, dict):
        return cfg
    return _decodes_recorded({k: v for k, v in cfg.items() if k not in PROVENANCE})


def _check_config(out: Path, cfg: Any, fresh: bool) -> None:
    """Write the run's config, or check it equals the stored one (a resume)."""
    cfg_path = out / "config.json"
    if cfg_path.exists():
        old, new = _compared(read_json(cfg_path)), _compared(cfg)
        if old != new:
            changed = differing([old, new])
            raise SubliminalError(
                f"{out}: holds a run with a different config (differs in: {', '.join(changed)});"
                " use another --out or the same flags to resume")
    elif not fresh:
        raise SubliminalError(f"{out}: not empty and has no config.json; refusing to write there")
    else:
        write_json(cfg_path, cfg)


def init_run(out: Path, config: Any, seed: int | None = None) -> Path:
    """Create or reopen a run directory, locked for this process until it exits (or
    `unlock(out)`); refuse one that holds a different config or is locked by another."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SubliminalError(f"{out}: exists and is not a directory")
    fresh = not out.exists() or not any(p.name != LOCK for p in out.iterdir())
    lock(out)
    try:
        _check_config(out, to_jsonable(config), fresh)
        completed(out)  # a finished run whose config.json was edited is refused here
    except SubliminalError:
        unlock(out)
        raise
    env_path = out / "environment.json"
    if env_path.exists():  # keep every session's environment: resumes may change machines
        write_json(out / f"environment.resumed-{int(time.time())}.json", environment(seed))
    else:
        write_json(env_path, environment(seed))
    return out


# --- locks -----------------------------------------------------------------------------------
# flock on FOLDER/.lock: the kernel drops it when the holder exits, however it exits, so a
# killed run never leaves a stale lock. The file keeps the holder's pid, host and start time
# for the error a second process gets. Re-entrant within one process (a stage folder may be
# locked inside a locked run).
_HELD: dict[str, tuple[int, int]] = {}  # resolved folder -> (fd, depth)


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        info = {}
    if not info:
        return "another process (no holder record)"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')}"


def lock(folder: Path) -> None:
    """Take FOLDER's exclusive lock (creating FOLDER) or raise naming the holder."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("RANK", "0")) > 0:
        return  # under `accelerate launch` rank 0 holds the lock and does all the writing
    key = str(folder.resolve())
    if key in _HELD:
        fd, depth = _HELD[key]
        _HELD[key] = (fd, depth + 1)
        return
    path = folder / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise SubliminalError(f"{folder}: in use by {_holder(path)} (lock file {path}); "
                              "wait for it or use another --out") from None
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                         "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    os.ftruncate(fd, 0)
    os.pwrite(fd, record.encode(), 0)
    _HELD[key] = (fd, 1)


def unlock(folder: Path) -> None:
    """Release one hold of FOLDER's lock (the last one clears the holder record)."""
    import fcntl

    key = str(Path(folder).resolve())
    if key not in _HELD:
        return
    fd, depth = _HELD.pop(key)
    if depth > 1:
        _HELD[key] = (fd, depth - 1)
        return
    os.ftruncate(fd, 0)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[Path]:
    """`with locked(stage_dir):` - the stage folder is this process's alone inside."""
    lock(folder)
    try:
        yield Path(folder)
    finally:
        unlock(folder)


# --- portable data references ----------------------------------------------------------------

def content_hash(data: bytes | str) -> str:
    """sha256 hex of bytes or text (UTF-8): what a config records instead of a path."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def run_relative(path: str | Path, home: str | Path) -> str:
    """A folder as a record names it: relative to the run (or stand-alone stage) folder HOME
    that holds the record, so the run moves between machines intact. Never absolute; what a
    folder *is* is its content hash, in stage.json."""
    return os.path.relpath(Path(path).resolve(), Path(home).resolve())


def resolve_data(name: str) -> Path:
    """A packaged data file by logical name (e.g. 'audits/animal_preference.json')."""
    path = (DATA_DIR / name).resolve()
    if DATA_DIR.resolve() not in path.parents or not path.is_file():
        known = sorted(str(p.relative_to(DATA_DIR)) for p in DATA_DIR.rglob("*.json"))
        raise SubliminalError(f"unknown data file {name!r}; packaged: {', '.join(known)}")
    return path


def data_ref(path: str | Path) -> dict:
    """{"name", "sha256"} of a data file: packaged files by their logical name (portable
    across machines and installs), other files by the name as given, never made absolute."""
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        p = resolve_data(str(path))
    try:
        data = p.read_bytes()
    except OSError as e:
        raise SubliminalError(f"{path}: cannot read ({e.strerror})") from None
    try:
        name = str(p.resolve().relative_to(DATA_DIR.resolve()))
    except ValueError:
        name = p.name if p.is_absolute() else str(path)
    return {"name": name, "sha256": content_hash(data)}
