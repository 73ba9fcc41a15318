"""TE compute of the fp32 GEMM kernels (the fair baseline), and of weight-only fp16.

Packed ``[Np/L, K, L]`` weights, L-lane FMAs; fp16 weights are widened to fp32 in registers.
"""

from __future__ import annotations

from tvm import te

from .config import Epilogue, Isa
from .epilogue import epilogue_out
from .sources import Source
from .tiling import round_up

__all__ = ["fp32_compute"]


def fp32_compute(
    isa: Isa, src: Source, n: int, epi: Epilogue, wdtype: str = "float32"
) -> tuple[list, list, te.Tensor]:
    """fp32 GEMM stages ``acc`` and ``out``; returns (runtime inputs, constants, ``out``).

    Parameters
    ----------
    wdtype : str
        ``"float16"`` stores the weights in half precision (weight-only fp16: each weight is widened
        to fp32 in registers, products and sums stay fp32).
    """
    lanes = isa.fp32_lanes
    np_ = round_up(n, lanes)
    w = te.placeholder((np_ // lanes, src.k, lanes), wdtype, name="w")
    rk = te.reduce_axis((0, src.k), name="k")

    def wv(j, kk):
        v = w[j // lanes, kk, j % lanes]
        return v if wdtype == "float32" else v.astype("float32")

    acc = te.compute(
        (src.batch, src.m, np_),
        lambda b, i, j: te.sum(src.load(b, i, rk) * wv(j, rk), axis=rk),
        name="acc",
    )
    inputs, consts = [src.tensor], [w]
    return inputs, consts, epilogue_out(src, n, epi, lambda b, i, j: acc[b, i, j], inputs, consts)
