"""On-disk layout of a replay buffer and its crash-safe writes; `ReplayBuffer.save/load` call it.

A buffer folder holds `index.bin` (hnswlib), `records.jsonl` (one transition per line) and
`meta.json` (schema, encoder name and dimension, index settings, counts, and the size + sha256 of
the other two files). `write_files` writes all three to temp files (fsynced), hard-links the
previous copy into `.prev/`, renames the temp files into place (meta.json last), then drops `.prev/`.
A crash before the renames leaves the old copy untouched; a crash between them leaves files that
disagree with meta.json, and `loadable_copy` then falls back to `.prev/`. A file that was modified,
truncated or is missing is refused with its path in the message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable

from dreamgym.errors import DreamGymError

__all__ = ["BUFFER_SCHEMA", "FILES", "BufferFileError", "read_meta", "verify", "loadable_copy", "write_files",
           "file_digest"]

BUFFER_SCHEMA = 1
FILES = ("index.bin", "records.jsonl", "meta.json")
_META_KEYS = ("encoder", "dim", "M", "ef_construction", "ef_search", "key_state_chars", "max_size", "dedup",
              "next_label", "counts", "files")
log = logging.getLogger(__name__)


class BufferFileError(DreamGymError):
    """A buffer folder is missing, corrupt, or was built with another encoder; names the file."""


def read_meta(directory: str | Path) -> dict:
    """meta.json of a saved buffer, checked for the schema and keys this version reads."""
    path = Path(directory) / "meta.json"
    if not path.is_file():
        raise BufferFileError(f"{path}: not found (is {Path(directory)} a replay buffer folder?)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BufferFileError(f"{path}: not valid JSON ({e}): file corrupt") from None
    if not isinstance(meta, dict) or meta.get("schema") != BUFFER_SCHEMA:
        got = meta.get("schema") if isinstance(meta, dict) else type(meta).__name__
        raise BufferFileError(f"{path}: schema {got!r}, expected {BUFFER_SCHEMA}")
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        raise BufferFileError(f"{path}: missing keys {', '.join(missing)}")
    return meta


def verify(d: Path) -> str | None:
    """None if meta.json, index.bin and records.jsonl exist and agree; else what is wrong, naming the file."""
    try:
        meta = read_meta(d)
    except BufferFileError as e:
        return str(e)
    for name in ("index.bin", "records.jsonl"):
        path = d / name
        want = meta["files"].get(name) or {}
        if not path.is_file():
            return f"{path}: not found"
        if path.stat().st_size != want.get("bytes") or file_digest(path)["sha256"] != want.get("sha256"):
            return (f"{path}: does not match meta.json (size or sha256 differs): file corrupt or modified, "
                    "or a save was interrupted")
    return None


def loadable_copy(directory: str | Path) -> Path:
    """The folder to load from: `directory` when its files agree, else its `.prev/` copy left by an
    interrupted save (with a warning); raises BufferFileError naming the bad file otherwise."""
    d = Path(directory)
    if not d.is_dir():
        raise BufferFileError(f"{d}: replay buffer folder not found")
    problem = verify(d)
    if problem is None:
        return d
    if (d / ".prev").is_dir() and verify(d / ".prev") is None:
        log.warning("%s; loading the previous copy from %s", problem, d / ".prev")
        return d / ".prev"
    raise BufferFileError(problem)


def write_files(directory: str | Path, write_index: Callable[[Path], None], record_lines: Iterable[str],
                make_meta: Callable[[dict], dict]) -> Path:
    """Crash-safe save: `write_index(path)` writes index.bin, `record_lines` become records.jsonl,
    `make_meta(files)` gets their sizes + sha256 and returns meta.json's content."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tmp = {name: d / f".{name}.tmp-{os.getpid()}" for name in FILES}
    try:
        write_index(tmp["index.bin"])
        with tmp["index.bin"].open("rb+") as f:
            os.fsync(f.fileno())
        _write_synced(tmp["records.jsonl"], record_lines)
        meta = make_meta({n: file_digest(tmp[n]) for n in ("index.bin", "records.jsonl")})
        _write_synced(tmp["meta.json"], [json.dumps(meta, indent=2)])
        prev = d / ".prev"
        if (d / "meta.json").exists() and (not prev.exists() or verify(d) is None):   # never drop the only good copy
            shutil.rmtree(prev, ignore_errors=True)
            prev.mkdir()
            for name in FILES:
                if (d / name).exists():
                    _link_or_copy(d / name, prev / name)
        for name in FILES:                                               # meta.json last
            os.replace(tmp[name], d / name)
        _fsync_dir(d)
        shutil.rmtree(prev, ignore_errors=True)
    finally:
        for p in tmp.values():
            p.unlink(missing_ok=True)
    return d


def file_digest(path: Path) -> dict:
    """{"bytes", "sha256"} of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}


# -- internals ---------------------------------------------------------------------------------

def _write_synced(path: Path, lines: Iterable[str]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(line if line.endswith("\n") else line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
