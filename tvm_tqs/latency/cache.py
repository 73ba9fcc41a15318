"""Append-only on-disk cache of measurements: one JSON line per measurement, fsync'd.

Why this shape:

- **Crash-safe.** Each record is ONE ``write()`` of a complete line on an ``O_APPEND`` descriptor,
  followed by ``fsync``. A crash, SIGKILL or Ctrl-C can leave at most a torn last line (no newline, or
  invalid JSON); loading skips it. Before appending to a file whose last byte is not a newline, a
  newline is written first, so the torn fragment stays on its own (ignored) line instead of gluing
  itself to the next record.
- **Concurrent writers.** Two processes appending to one file never interleave within a line:
  ``O_APPEND`` makes seek-to-end + write atomic, and a line is a single write (records are a few KB).
- **Nothing is measured twice.** The key (see `jobs.measurement_key`) is target (name + TVM target) +
  kernel structural hash + argument shapes/dtypes + measurement settings + TVM version. A second
  record for a key (two processes measuring the same kernel at once) is harmless: the last one wins.
- **Append-only** also means no rewrite can lose data; `compact()` rewrites through a temporary
  file and an atomic rename when the file grows too big.

Only successful measurements are stored: a failure may be transient (a dropped RPC session), and
the next run should try again.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from .jobs import Measurement

__all__ = ["LatencyCache", "default_cache_path"]

ENV = "TVM_TQS_LATENCY_CACHE"


def default_cache_path() -> Path:
    """``$TVM_TQS_LATENCY_CACHE``, else ``~/.cache/tvm_tqs/latency.jsonl``."""
    env = os.environ.get(ENV)
    return Path(env) if env else Path.home() / ".cache" / "tvm_tqs" / "latency.jsonl"


class LatencyCache:
    """Measurements by key, loaded from and appended to a JSONL file.

    Parameters
    ----------
    path : str or Path, optional
        The file (created with its directory on first write). Default: `default_cache_path()`.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_cache_path()
        self._records: dict[str, Measurement] = {}
        self._offset = 0  # bytes of the file already read
        self.skipped_lines = 0  # torn or unreadable lines seen while loading
        self.reload()

    # -- reading -------------------------------------------------------------------------------
    def reload(self) -> None:
        """Read what other processes appended since the last read (only the new bytes)."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        # Only complete lines count; an unterminated tail is either being written right now by
        # another process or torn by a crash: leave it for the next reload.
        end = data.rfind(b"\n") + 1
        for raw in data[:end].splitlines():
            self._ingest(raw)
        self._offset += end

    def _ingest(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            rec = Measurement.from_dict(json.loads(raw))
        except (ValueError, KeyError, TypeError):
            self.skipped_lines += 1
            return
        if rec.ok:
            self._records[rec.key] = rec

    def get(self, key: str) -> Measurement | None:
        return self._records.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Measurement]:
        return iter(list(self._records.values()))

    def for_target(self, target: str, kind: str = "kernel") -> list[Measurement]:
        """Every cached measurement of `target` (e.g. to train the latency model on all of them)."""
        return [m for m in self._records.values() if m.target == target and m.kind == kind]

    # -- writing -------------------------------------------------------------------------------
    def append(self, measurement: Measurement) -> bool:
        """Persist one successful measurement (one fsync'd line); failures are not stored."""
        if not measurement.ok:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(measurement.to_dict(), sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            # The torn-tail check and the write must be one step: without the lock a writer can see
            # another's in-flight append as a torn tail and emit a spurious blank line.
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _ends_torn(fd):
                line = b"\n" + line
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._records[measurement.key] = measurement
        return True

    def extend(self, measurements: Iterable[Measurement]) -> int:
        return sum(self.append(m) for m in measurements)

    def compact(self) -> None:
        """Rewrite the file with one line per key (atomic rename; concurrent appends during it are lost)."""
        self.reload()
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "w") as f:
            for m in self._records.values():
                f.write(json.dumps(m.to_dict(), sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._offset = self.path.stat().st_size


def _ends_torn(fd: int) -> bool:
    size = os.fstat(fd).st_size
    if size == 0:
        return False
    return os.pread(fd, 1, size - 1) != b"\n"
