"""The groups over which worst-case error is taken: time segments, channels, volatility regimes, and
corrupted inputs at three severities (after Yuan et al. 2023, "Benchmarking the Reliability of
Post-training Quantization")."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SEVERITIES = (1, 2, 3)
SEASONS = {12: "DJF", 1: "DJF", 2: "DJF", 3: "MAM", 4: "MAM", 5: "MAM", 6: "JJA", 7: "JJA", 8: "JJA"}


@dataclass(frozen=True)
class Group:
    """Windows (`rows` of the clean test set) scored on `channels` (None: all targets), from the inputs of
    corruption `corruption` at `severity` (None: clean)."""

    name: str
    kind: str  # "all" | "month" | "season" | "volatility" | "channel" | "corruption"
    rows: np.ndarray
    channels: tuple[int, ...] | None = None
    corruption: str | None = None
    severity: int = 0


def _scale(x: np.ndarray) -> np.ndarray:
    """Per-channel spread of the contexts, ``[1, 1, C]``: corruptions are sized in it, so they mean the same
    on any data scale."""
    return np.maximum(x.std(axis=(0, 1), keepdims=True), 1e-6)


def noise(x, severity, rng):
    """Additive Gaussian noise of 0.1 / 0.3 / 0.5 channel spreads."""
    return x + rng.standard_normal(x.shape) * (0.1, 0.3, 0.5)[severity - 1] * _scale(x)


def missing(x, severity, rng):
    """10% / 25% / 50% of the time steps lost and forward-filled (a leading gap takes the first value seen)."""
    lost = rng.random(x.shape[:2]) < (0.1, 0.25, 0.5)[severity - 1]
    lost[:, -1] = False  # the latest observation is always there
    out = x.copy()
    for b in range(len(x)):
        kept = np.flatnonzero(~lost[b])
        src = kept[np.clip(np.searchsorted(kept, np.arange(x.shape[1]), side="right") - 1, 0, None)]
        out[b] = x[b, src]
    return out


def level_shift(x, severity, rng):
    """The whole context offset by +-0.5 / 1 / 2 channel spreads (a recalibrated sensor)."""
    sign = rng.choice((-1.0, 1.0), size=(len(x), 1, x.shape[2]))
    return x + sign * (0.5, 1.0, 2.0)[severity - 1] * _scale(x)


def scaling(x, severity, rng):
    """Deviations from each window's mean amplified 1.2 / 1.5 / 2 times."""
    mean = x.mean(axis=1, keepdims=True)
    return mean + (x - mean) * (1.2, 1.5, 2.0)[severity - 1]


def spikes(x, severity, rng):
    """1% / 3% / 5% of the values replaced by spikes of +-6 channel spreads."""
    hit = rng.random(x.shape) < (0.01, 0.03, 0.05)[severity - 1]
    sign = rng.choice((-1.0, 1.0), size=x.shape)
    return np.where(hit, x + sign * 6.0 * _scale(x), x)


CORRUPTIONS: dict[str, Callable] = {
    "noise": noise,
    "missing": missing,
    "level_shift": level_shift,
    "scaling": scaling,
    "spikes": spikes,
}


def corrupt(x: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Corruption `name` at `severity` of contexts `x`, the same for the same seed."""
    rng = np.random.default_rng([seed, list(CORRUPTIONS).index(name), severity])
    return CORRUPTIONS[name](np.asarray(x, np.float64), severity, rng).astype(x.dtype)


def volatility(x: np.ndarray) -> np.ndarray:
    """Per window: the spread of its first differences, averaged over channels."""
    return np.diff(x, axis=1).std(axis=1).mean(axis=1)


def build_groups(
    x: np.ndarray, starts: np.ndarray | None, targets: list[int], channel_names: list[str] | None = None
) -> list[Group]:
    """Every group over the test windows: all, months and seasons (with timestamps), volatility terciles,
    one per target channel, and each corruption at each severity."""
    n = len(x)
    every = np.arange(n)
    groups = [Group("all", "all", every)]
    if starts is not None:
        months = starts.astype("datetime64[M]")
        for m in np.unique(months):
            groups.append(Group(str(m), "month", np.flatnonzero(months == m)))
        month_of_year = (months.astype(int) % 12) + 1
        season = np.array([SEASONS.get(int(m), "SON") for m in month_of_year])
        for s in ("DJF", "MAM", "JJA", "SON"):
            if (season == s).any():
                groups.append(Group(s, "season", np.flatnonzero(season == s)))
    vol = volatility(x)
    cuts = np.quantile(vol, [1 / 3, 2 / 3])
    tercile = np.searchsorted(cuts, vol, side="right")
    for t, label in enumerate(("calm", "moderate", "volatile")):
        groups.append(Group(f"{label} (volatility)", "volatility", np.flatnonzero(tercile == t)))
    for j, c in enumerate(targets):
        name = channel_names[c] if channel_names else f"channel {c}"
        groups.append(Group(name, "channel", every, channels=(j,)))
    for name in CORRUPTIONS:
        for s in SEVERITIES:
            groups.append(Group(f"{name} s{s}", "corruption", every, corruption=name, severity=s))
    return [g for g in groups if len(g.rows)]
