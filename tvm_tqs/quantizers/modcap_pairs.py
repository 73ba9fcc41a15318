"""ModCap's grouping (Ma et al., CVPR 2023): module capacities, which weight groups are adjacent along the
fused graph, and the top-k capacity differentials that `tvm_tqs.quantizers.modcap` reconstructs jointly."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np


def data_free_capacity(params: Mapping[str, int], bits: int | Mapping[str, int]) -> dict[str, float]:
    """Paper's data-free module capacity: parameter count x bit-width per group.

    Parameters
    ----------
    params : mapping
        Group name -> number of weight elements.
    bits : int or mapping
        One bit-width for all groups or one per group.
    """
    return {g: float(n) * float(bits if isinstance(bits, int) else bits[g]) for g, n in params.items()}


def data_dependent_capacity(errors: Mapping[str, float]) -> dict[str, float]:
    """Capacity from reconstruction: ``-log2(relative output reconstruction error)`` per group (the bits of
    output SNR the group keeps after per-site quantization; larger is more capacity)."""
    return {g: float(-np.log2(max(e, 1e-12))) for g, e in errors.items()}


def adjacent_groups(
    edges: Iterable[tuple[int, int]], group_sites: Mapping[str, Sequence[int]]
) -> list[tuple[str, str]]:
    """Ordered pairs (upstream group, downstream group) such that a site of the first reaches a site of the
    second along `edges` through sites that read no group's weight (the modules are the weight groups; the
    ops between two of them do not count as modules)."""
    owner = {s: g for g, sites in group_sites.items() for s in sites}
    succ: dict[int, list[int]] = {}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
    pairs = set()
    for g, sites in group_sites.items():
        seen, stack = set(), [t for s in sites for t in succ.get(s, ())]
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            if t in owner:
                if owner[t] != g:
                    pairs.add((g, owner[t]))
                continue  # a weighted site ends the path: modules beyond it are not adjacent to g
            stack.extend(succ.get(t, ()))
    return sorted(pairs)


def self_reaching(edges: Iterable[tuple[int, int]], group_sites: Mapping[str, Sequence[int]]) -> set[str]:
    """Groups one of whose sites reaches a site of the same group along `edges` (a recurrent weight unrolled
    over time: its inputs depend on its own outputs). Rows captured with such a group's fp32 weight are not
    the inputs it will see once its weight changes, so it cannot be refitted as a pair's downstream."""
    succ: dict[int, list[int]] = {}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
    out = set()
    for g, sites in group_sites.items():
        own = set(sites)
        seen, stack = set(), [t for s in sites for t in succ.get(s, ())]
        while stack:
            t = stack.pop()
            if t in own:
                out.add(g)
                break
            if t not in seen:
                seen.add(t)
                stack.extend(succ.get(t, ()))
    return out


def differentials(
    capacity: Mapping[str, float], pairs: Iterable[tuple[str, str]]
) -> list[tuple[float, str, str]]:
    """``(|C_up - C_down|, up, down)`` per adjacent pair, largest first (ties by name: deterministic)."""
    rows = [(abs(capacity[a] - capacity[b]), a, b) for a, b in pairs]
    return sorted(rows, key=lambda r: (-r[0], r[1], r[2]))


def choose_pairs(
    ranked: Sequence[tuple[float, str, str]], k: int, eligible: Iterable[tuple[str, str]] | None = None
) -> list[tuple[str, str]]:
    """The top-`k` differentials among `eligible` pairs (all when None), no group in two pairs (a group's
    weights come from one reconstruction); a pair whose groups are taken is skipped, not counted."""
    allowed = None if eligible is None else set(eligible)
    used: set[str] = set()
    chosen = []
    for _, a, b in ranked:
        if len(chosen) >= k:
            break
        if (allowed is not None and (a, b) not in allowed) or a in used or b in used:
            continue
        chosen.append((a, b))
        used.update((a, b))
    return chosen
