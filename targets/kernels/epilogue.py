"""The ``out`` stage shared by every GEMM kernel: bias, residual and activation, in the output layout."""

from __future__ import annotations

import math
from collections.abc import Callable

from tvm import te, tirx

from .config import Epilogue
from .sources import Source

__all__ = ["activation", "epilogue_out"]


def activation(y, name: str | None):
    """``name`` (one of ``config.ACTIVATIONS``) applied to the fp32 expression ``y``."""
    if name is None:
        return y
    if name == "relu":
        return tirx.max(y, tirx.const(0.0, "float32"))
    if name == "sigmoid":
        return tirx.sigmoid(y)
    if name == "tanh":
        return tirx.tanh(y)
    if name == "gelu":
        half = tirx.const(0.5, "float32")
        return (
            half * y * (tirx.const(1.0, "float32") + tirx.erf(y * tirx.const(1 / math.sqrt(2.0), "float32")))
        )
    raise ValueError(name)


def epilogue_out(
    src: Source, n: int, epi: Epilogue, value: Callable, inputs: list, consts: list
) -> te.Tensor:
    """``out = act(value(b, i, j) + bias[j] + residual)`` over the source's output layout.

    Parameters
    ----------
    value : Callable
        ``(b, i, j) -> expr``, the rescaled GEMM result (or the raw int32 dot for an int32 epilogue,
        which has no bias, residual or activation).
    inputs, consts : list
        The kernel's runtime inputs and constants; ``residual`` and ``bias`` are appended to them.
    """
    if epi.bias:
        bias = te.placeholder((n,), "float32", name="bias")
        consts.append(bias)
    if epi.residual:
        res = te.placeholder(src.out_shape, "float32", name="residual")
        inputs.append(res)

    def out_value(*idx):
        b, i, j = src.out_index(*idx)
        y = value(b, i, j)
        if epi.bias:
            y = y + bias[j]
        if epi.residual:
            y = y + res[idx]
        return activation(y, epi.activation)

    return te.compute(src.out_shape, out_value, name="out")
