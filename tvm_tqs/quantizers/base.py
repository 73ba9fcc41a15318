"""The quantized-weight container and the layout convention every quantizer shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


def as_matrix(w: np.ndarray, channel_axis: int) -> np.ndarray:
    """View a weight as [out_channels, reduction]: the channel axis first, all other axes flattened.

    Matmul weights in Relax are [K, N] (channel_axis=1); conv weights are [O, I, k] (channel_axis=0).
    """
    return np.moveaxis(w, channel_axis, 0).reshape(w.shape[channel_axis], -1)


def blocks_of(m: np.ndarray, group_size: int | None) -> np.ndarray:
    """[out, reduction] -> [out, n_groups, group] (the last group zero-padded): one scale per block."""
    out, red = m.shape
    group = red if group_size is None else int(group_size)
    if group < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    n_groups = -(-red // group)
    padded = np.zeros((out, n_groups * group), m.dtype)
    padded[:, :red] = m
    return padded.reshape(out, n_groups, group)


def from_matrix(m: np.ndarray, shape: tuple[int, ...], channel_axis: int) -> np.ndarray:
    """Inverse of `as_matrix`."""
    moved = (shape[channel_axis],) + tuple(s for i, s in enumerate(shape) if i != channel_axis)
    return np.moveaxis(m.reshape(moved), 0, channel_axis)


@dataclass(frozen=True)
class QuantizedWeight:
    """Signed symmetric integers and their fp32 scales, in the [out_channels, reduction] matrix layout.

    ``q`` holds the integers (int8 storage also for 4-bit values in [-8, 7]; packing two per byte is the
    kernel's business). ``scale`` is [out_channels, n_groups]: one scale per output channel and group
    of `group_size` consecutive reduction elements (n_groups = 1 means per channel).
    """

    q: np.ndarray
    scale: np.ndarray
    bits: int
    group_size: int | None
    shape: tuple[int, ...]
    channel_axis: int

    def dequantize_matrix(self) -> np.ndarray:
        out, red = self.q.shape
        group = self.group_size or red
        scale = np.repeat(self.scale, group, axis=1)[:, :red]
        return (self.q.astype(np.float32) * scale).astype(np.float32)

    def dequantize(self) -> np.ndarray:
        """The fp32 weight the integers stand for, in the original shape (fake quantization)."""
        return from_matrix(self.dequantize_matrix(), self.shape, self.channel_axis)


class WeightQuantizer(Protocol):
    def __call__(
        self, w: np.ndarray, bits: int, channel_axis: int, group_size: int | None = None
    ) -> QuantizedWeight: ...
