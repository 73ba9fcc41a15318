"""Real series for the reliability benchmark: a CSV read into channels and timestamps, split, z-scored and
cut into (context, future) windows the way the model was trained on them."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import numpy as np

from ..errors import TQSError


@dataclass(frozen=True)
class Series:
    """A multichannel series: ``values [rows, channels]`` in raw units, one timestamp per row (or None)."""

    values: np.ndarray
    channels: tuple[str, ...]
    times: np.ndarray | None = None  # datetime64[s]


@dataclass(frozen=True)
class Windows:
    """Test windows in model units: contexts ``x [N, lookback, C]``, futures ``y [N, steps, C]``, and the
    timestamp of each future's first step (None without timestamps)."""

    x: np.ndarray
    y: np.ndarray
    starts: np.ndarray | None


def read_csv(
    path: str | os.PathLike, columns: list[str] | None = None, date_column: str | None = "date"
) -> Series:
    """The numeric `columns` of a CSV (default: every column but `date_column`), and its timestamps.

    Parameters
    ----------
    path : path
        A CSV with a header row.
    columns : list of str, optional
        Channels in the model's order.
    date_column : str or None
        Column of ISO timestamps; ignored when absent from the header.
    """
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as err:
        raise TQSError(f"cannot read --data '{path}': {err.strerror}") from None
    if len(rows) < 2:
        raise TQSError(f"--data '{path}' has no data rows")
    header = [h.strip() for h in rows[0]]
    has_date = date_column in header
    wanted = columns or [h for h in header if h != date_column]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise TQSError(f"--data '{path}' has no column(s) {missing}; its columns: {header}")
    idx = [header.index(c) for c in wanted]
    try:
        values = np.array([[float(r[i]) for i in idx] for r in rows[1:] if r], dtype=np.float64)
    except (ValueError, IndexError) as err:
        raise TQSError(f"--data '{path}': columns {wanted} must be numeric on every row ({err})") from None
    times = None
    if has_date:
        d = header.index(date_column)
        try:
            times = np.array([r[d].strip() for r in rows[1:] if r], dtype="datetime64[s]")
        except ValueError as err:
            raise TQSError(f"--data '{path}': column '{date_column}' is not ISO timestamps ({err})") from None
    return Series(values, tuple(wanted), times)


def parse_split(text: str, rows: int) -> tuple[int, int, int]:
    """``"8640,2880,2880"`` (rows) or ``"0.7,0.1,0.2"`` (fractions) -> (train end, val end, test end)."""
    try:
        parts = [float(v) for v in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or any(p <= 0 for p in parts):
        raise TQSError(f"--split '{text}' must be three positive numbers: rows (8640,2880,2880) or fractions")
    sizes = [int(round(p * rows)) for p in parts] if all(p < 1 for p in parts) else [int(p) for p in parts]
    ends = np.cumsum(sizes)
    if ends[-1] > rows:
        raise TQSError(f"--split '{text}' needs {ends[-1]} rows; the data has {rows}")
    return int(ends[0]), int(ends[1]), int(ends[2])


def standardize(series: Series, train_end: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-score every channel with the train rows' mean and std (ddof 0): (values, mean, std)."""
    mean = series.values[:train_end].mean(axis=0)
    std = series.values[:train_end].std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return ((series.values - mean) / std).astype(np.float32), mean, std


def windows(
    values: np.ndarray, times: np.ndarray | None, start: int, end: int, lookback: int, steps: int, count: int
) -> Windows:
    """`count` evenly spaced (context, future) pairs whose futures lie in rows [start, end)."""
    first, last = max(start, lookback), end - steps  # first / last forecast start row
    if last < first:
        raise TQSError(f"rows [{start}, {end}) are too few for lookback {lookback} + {steps} steps")
    pos = np.unique(np.linspace(first, last, min(count, last - first + 1)).round().astype(int))
    idx = pos[:, None] + np.arange(-lookback, steps)[None, :]
    w = values[idx]
    return Windows(
        np.ascontiguousarray(w[:, :lookback]),
        np.ascontiguousarray(w[:, lookback:]),
        None if times is None else times[pos],
    )
