"""Weight groups: the units the planner decides. Sites that read one quantizable weight (every step of an
unrolled recurrence) share its storage and must share its precision."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..precision import INT4_GROUP, PRECISION_ORDER, PRECISIONS


@dataclass(frozen=True)
class WeightGroup:
    """One quantizable weight and the fused sites that read it.

    Parameters
    ----------
    name : str
        The weight's id in the fused graph (``"w3"``).
    sites : tuple of int
        Fused-site indices reading it, ascending.
    weight : ndarray
        The weight as the quantizer sees it.
    channel_axis : int
        Output-channel axis of `weight`.
    options : tuple of str
        Precisions the target offers this op kind, most precise first.
    """

    name: str
    sites: tuple[int, ...]
    weight: np.ndarray = field(repr=False, compare=False)
    channel_axis: int
    options: tuple[str, ...]

    def storage_bytes(self, precision: str, group_size: int = INT4_GROUP) -> float:
        channels = self.weight.shape[self.channel_axis]
        return PRECISIONS[precision].storage_bytes(self.weight.size, channels, group_size)


def weight_groups(ops: Sequence, weighted: Mapping, target) -> list[WeightGroup]:
    """One group per distinct quantizable weight (`quantizable_sites`), with the precisions `target` offers
    its op kind."""
    by_digest: dict[str, list[int]] = {}
    first: dict[str, object] = {}
    for site, sw in sorted(weighted.items()):
        by_digest.setdefault(sw.digest, []).append(site)
        first.setdefault(sw.digest, sw)
    ids = {w.digest: w.id for op in ops for w in op.weights}
    groups = []
    for digest, sites in by_digest.items():
        sw = first[digest]
        offered = target.precisions.get(ops[sites[0]].anchor, ("fp32",))
        options = tuple(p for p in PRECISION_ORDER if p in offered)
        groups.append(
            WeightGroup(ids.get(digest, f"site{sites[0]}"), tuple(sites), sw.weight, sw.channel_axis, options)
        )
    return groups


def fixed_float_bytes(ops: Sequence, quantizable_ids: set[str]) -> float:
    """Bytes of the constants no plan changes (every distinct non-quantizable weight once, at fp32)."""
    seen: dict[str, float] = {}
    for op in ops:
        for w in op.weights:
            if w.id not in quantizable_ids:
                seen[w.id] = w.nbytes
    return float(sum(seen.values()))
