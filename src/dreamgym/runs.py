"""Run directories: where every command writes its resolved config, provenance, TensorBoard logs,
checkpoints and `summary.json` (layout and keys fixed by docs/contracts).

`RunDir.open` creates `logs/<command>/<YYYYmmdd-HHMMSS>/` (or the `--run-dir` given), refuses an
existing non-empty folder unless resuming, writes `config.yaml` and `provenance.json`; `phase` times
named phases; `write_summary` adds the keys every run carries and writes `summary.json` atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from dreamgym.config import to_yaml
from dreamgym.errors import DreamGymError

__all__ = ["RunDir", "RunDirError", "atomic_write_text", "file_sha256", "process_rank", "RUN_DIR_ENV"]

RUN_DIR_ENV = "DREAMGYM_RUN_DIR"
"""set by rank 0's `RunDir.open`; the worker processes of a multi-device trainer inherit it"""


class RunDirError(DreamGymError):
    """The run directory cannot be used as asked (exists without --resume, missing on resume, ...)."""


@dataclass
class RunDir:
    command: str
    path: Path
    seed: int
    started_at: str
    wall_clock_s: dict[str, float] = field(default_factory=dict)
    input_files: dict[str, str] = field(default_factory=dict)
    _t0: float = field(default_factory=time.perf_counter)
    follower: bool = False
    """a non-zero rank of a multi-process run (DDP/FSDP): it uses rank 0's run dir and writes nothing there"""

    @classmethod
    def open(cls, command: str, run_dir: str | Path | None, cfg: Any, resume: bool = False,
             logs_root: str | Path = "logs") -> "RunDir":
        """Create (or, with resume, reopen) the run dir and write config.yaml + provenance.json. In the worker
        processes a multi-device trainer launches (rank > 0), the run dir is rank 0's (RUN_DIR_ENV) and
        nothing is written."""
        rank = process_rank()
        if rank > 0:
            shared = os.environ.get(RUN_DIR_ENV) or run_dir
            if shared is None:
                raise RunDirError(f"rank {rank}: no run dir from rank 0 (environment variable {RUN_DIR_ENV})")
            return cls(command=command, path=Path(shared), seed=int(getattr(cfg, "seed", 0)),
                       started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), follower=True)
        if resume and run_dir is None:
            raise RunDirError("--resume needs --run-dir DIR (the run to continue)")
        if run_dir is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            path = Path(logs_root) / command / stamp
            n = 1
            while path.exists():  # two runs in the same second get distinct folders
                path = Path(logs_root) / command / f"{stamp}-{n}"
                n += 1
        else:
            path = Path(run_dir)
        if resume:
            if not (path / "config.yaml").is_file():
                raise RunDirError(f"{path}: cannot resume, no config.yaml there")
        elif path.exists() and any(path.iterdir()):
            raise RunDirError(f"{path}: run dir exists and is not empty; pass --resume to continue it "
                              "or choose another --run-dir")
        path.mkdir(parents=True, exist_ok=True)
        run = cls(command=command, path=path, seed=int(getattr(cfg, "seed", 0)),
                  started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        if not resume:
            atomic_write_text(path / "config.yaml", to_yaml(cfg))
        run.write_provenance()
        os.environ[RUN_DIR_ENV] = str(path)  # the worker processes a multi-device trainer launches find it
        return run

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def tb_dir(self) -> Path:
        return self.path / "tb"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a named phase; durations add up in summary['wall_clock_s'][name]."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.wall_clock_s[name] = self.wall_clock_s.get(name, 0.0) + time.perf_counter() - t

    def record_input(self, path: str | Path) -> None:
        """Hash an input file (dataset, model) into provenance.json."""
        p = Path(path)
        if p.is_file() and not self.follower:
            self.input_files[str(p)] = file_sha256(p)
            self.write_provenance()

    def write_provenance(self) -> None:
        if self.follower:
            return
        prov = {"git_sha": _git_sha(), "command": self.command, "started_at": self.started_at,
                "machine": _machine(), "input_files": self.input_files, "packages": _pip_freeze()}
        atomic_write_text(self.path / "provenance.json", json.dumps(prov, indent=2))

    def write_summary(self, **keys: Any) -> dict:
        """summary.json = the keys every run carries + the command's own; returns it."""
        wall = {k: round(v, 3) for k, v in self.wall_clock_s.items()}
        wall["total"] = round(time.perf_counter() - self._t0, 3)
        summary = {"command": self.command, "run_dir": str(self.path), "config_path": str(self.config_path),
                   "started_at": self.started_at, "wall_clock_s": wall, "seed": self.seed, **keys}
        if not self.follower:
            atomic_write_text(self.path / "summary.json", json.dumps(summary, indent=2, default=_json_default))
        return summary


def process_rank() -> int:
    """Global rank of this process in a multi-process run (RANK / LOCAL_RANK / SLURM_PROCID, as Lightning
    reads them; 0 in a single-process run)."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key):
            return int(os.environ[key])
    return 0


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path` (crash-safe)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# -- internals ---------------------------------------------------------------------------------

def _json_default(x: Any) -> Any:
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, (set, tuple)):
        return list(x)
    if hasattr(x, "item"):  # numpy / torch scalars
        return x.item()
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


_FREEZE: list[str] | None = None


def _pip_freeze() -> list[str]:
    global _FREEZE
    if _FREEZE is None:
        _FREEZE = sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()
                          if d.metadata["Name"]})
    return _FREEZE


def _machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "processor": platform.machine(), "cpu_count": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info
