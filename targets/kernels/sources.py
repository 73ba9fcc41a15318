"""Where a GEMM kernel's rows come from (a dense input or im2col rows of a conv1d) and where ``out`` goes."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from tvm import te, tirx

from .config import Conv1dSpec

__all__ = ["Source", "check_lead", "conv_source", "dense_source"]


@dataclass(frozen=True)
class Source:
    """Where the GEMM rows come from: ``load(b, i, kk)`` for i < m, kk < k; how ``out`` maps back."""

    tensor: te.Tensor
    batch: int
    m: int
    k: int
    load: Callable
    out_shape: tuple[int, ...]
    out_index: Callable  # out iteration vars -> (b, i, n)
    out_roles: tuple[str, ...]  # role of each out axis: "b" batch, "m" GEMM row, "n" GEMM column
    contiguous_k: bool = False  # load(b, i, k) is a plain unit-stride read along k
    conv: Conv1dSpec | None = None  # im2col source: its spec (for the per-position absmax)


def check_lead(m: int, lead: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """Validate the leading dims of an N-d dense input (prod = M, at most one of them > 1)."""
    if lead is None:
        return None
    lead = tuple(int(d) for d in lead)
    if not lead or math.prod(lead) != m or sum(d > 1 for d in lead) > 1:
        raise ValueError(f"lead {lead} must multiply to M={m} with at most one dim > 1")
    return lead


def dense_source(m: int, k: int, n: int, dtype: str, lead: tuple[int, ...] | None = None) -> Source:
    """``x[M, K]`` -> ``out[M, N]``; with ``lead`` (e.g. ``(1, 1)`` or ``(96, 1)``) x is ``[*lead, K]`` and
    out ``[*lead, N]``: the same memory, so a caller needs no reshape around the kernel."""
    if lead is None:
        x = te.placeholder((m, k), dtype, name="x")
        return Source(x, 1, m, k, lambda b, i, kk: x[i, kk], (m, n), lambda i, j: (0, i, j), ("m", "n"), True)
    big = next((a for a, d in enumerate(lead) if d > 1), len(lead) - 1)  # the axis that carries M
    x = te.placeholder((*lead, k), dtype, name="x")

    def index(i):
        return tuple(i if a == big else 0 for a in range(len(lead)))

    roles = tuple("m" if a == big else f"u{a}" for a in range(len(lead))) + ("n",)
    return Source(
        x,
        1,
        m,
        k,
        lambda b, i, kk: x[(*index(i), kk)],
        (*lead, n),
        lambda *idx: (0, idx[big], idx[-1]),
        roles,
        True,
    )


def conv_source(spec: Conv1dSpec, transpose: bool = True) -> Source:
    """im2col rows of a conv1d. The reduction index is tap-major, ``kk = kw * Cin + ci`` (weights
    ``[Cout, KW, Cin]``: `packing.conv_matrix`), so that consecutive ``kk`` of a row are consecutive
    channels at one input position; NCW input is transposed once (``x_t``, Cin*W values) to make
    them contiguous in memory too: the im2col quantization then runs on whole vectors."""
    x = te.placeholder(spec.input_shape, "float32", name="x")
    cin, pl = spec.in_channels, spec.padding[0]
    if spec.layout == "NCW" and transpose:
        xt = te.compute((spec.batch, spec.width, cin), lambda b, p, c: x[b, c, p], name="x_t")
        read = lambda b, p, c: xt[b, p, c]  # noqa: E731
    elif spec.layout == "NCW":  # (the fp32 kernels broadcast one value at a time: no gain from x_t)
        read = lambda b, p, c: x[b, c, p]  # noqa: E731
    else:
        read = lambda b, p, c: x[b, p, c]  # noqa: E731

    def load(b, i, kk):
        kw, ci = kk // cin, kk % cin
        pos = i * spec.stride + kw * spec.dilation - pl
        inside = tirx.all(pos >= 0, pos < spec.width)
        return tirx.if_then_else(inside, read(b, pos, ci), tirx.const(0.0, "float32"))

    if spec.layout == "NCW":
        out_index, roles = (lambda b, co, w: (b, w, co)), ("b", "n", "m")
    else:
        out_index, roles = (lambda b, w, co: (b, w, co)), ("b", "m", "n")
    return Source(
        x, spec.batch, spec.out_width, spec.reduction, load, spec.output_shape, out_index, roles, conv=spec
    )
