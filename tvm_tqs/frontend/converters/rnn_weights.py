"""Slicing, transposing and summing LSTM/GRU weights per direction and gate group.

Weights stay numpy when the ONNX input is a constant, so the graph holds the final (sliced,
transposed, summed) constant that the matmul reads; they become relax ops otherwise (weights kept
as function parameters), which FoldConstant folds once the parameters are bound.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

Weight = np.ndarray | relax.Expr


def as_weight(expr: relax.Expr | None) -> Weight | None:
    if isinstance(expr, tvm.ir.GenericConst):
        return expr.value.numpy()
    return expr


def take_weight(w: Weight, index: int) -> Weight:
    """``w[index]`` along the leading (direction) axis."""
    if isinstance(w, np.ndarray):
        return w[index]
    return relax.op.squeeze(weight_rows(w, index, index + 1), axis=[0])


def transpose_weight(w: Weight) -> Weight:
    if isinstance(w, np.ndarray):
        return np.ascontiguousarray(w.T)
    return relax.op.permute_dims(w, [1, 0])


def weight_rows(w: Weight, begin: int, end: int) -> Weight:
    """``w[begin:end]`` along the leading axis."""
    if isinstance(w, np.ndarray):
        return w[begin:end]
    return relax.op.strided_slice(w, axes=[0], begin=[begin], end=[end])


def add_weights(a: Weight, b: Weight) -> Weight:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a + b
    return relax.op.add(weight_expr(a, None), weight_expr(b, None))


def concat_weight_rows(a: Weight, b: Weight) -> Weight:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return np.concatenate([a, b])
    return relax.op.concat([weight_expr(a, None), weight_expr(b, None)], axis=0)


def weight_expr(w: Weight, dtype: str | None) -> relax.Expr:
    if isinstance(w, np.ndarray):
        return relax.const(w.astype(dtype) if dtype else w)
    return w
