"""ONNX DFT converter: one matmul against a constant DFT matrix.

The transform is linear in the interleaved (real, imaginary) input, so a single real matrix of
shape ``[n * c_in, k * c_out]`` holds cos/sin terms, the ``1/L`` of the inverse, zero-padding or
truncation to ``dft_length``, the one-sided crop and IRFFT's Hermitian weighting. The compiled
graph then has one matmul fused op whose weight is that constant, which per-op quantization
treats like any dense layer; an FFT would instead lower to many small ops.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter, get_constant

from .onnx_node import invalid_attribute, node_label, unsupported_attribute


def _constant_int(label: str, name: str, expr: relax.Expr | None, params, example: int) -> int | None:
    """The value of an optional scalar integer input, which must be a constant.

    A constant is an initializer, a Constant node, or shape arithmetic that `tvm_tqs.load` folds
    once the input shapes are static; a graph input is refused with the way to bind it.
    """
    if expr is None:
        return None
    expr = get_constant(expr, params)
    if not isinstance(expr, tvm.ir.GenericConst):
        source = f"the graph input '{expr.name}'" if isinstance(expr, relax.Var) else "computed at run time"
        tensor = expr.name if isinstance(expr, relax.Var) else name
        raise unsupported_attribute(
            label,
            f"a non-constant input '{name}' ({source})",
            f"the DFT matrix and the output shape are built at import time, so '{name}' must be a "
            f"constant. Bind it in the ONNX model before loading: add an int64 scalar initializer named "
            f"'{tensor}' holding its value, e.g. model.graph.initializer.append("
            f"onnx.numpy_helper.from_array(numpy.array({example}, numpy.int64), '{tensor}')) "
            f"(the graph input of that name may stay: the initializer binds it), or produce it with a "
            f"Constant node",
        )
    value = expr.value.numpy()
    if value.size != 1:
        raise invalid_attribute(label, f"input '{name}' of shape {list(value.shape)}", "expected a scalar")
    return int(value.reshape(()))


def _dft_matrix(n: int, length: int, inverse: bool, onesided: bool, complex_input: bool) -> np.ndarray:
    """The real matrix that maps an interleaved signal to its interleaved DFT.

    Parameters
    ----------
    n : int
        Signal length along the transformed axis (before truncation or zero-padding).
    length : int
        ``dft_length``, the transform size ``L``.
    inverse, onesided : bool
        The ONNX attributes. ``inverse and onesided`` is IRFFT: one-sided complex in, real out.
    complex_input : bool
        Whether each input element is a (real, imaginary) pair rather than a real value.

    Returns
    -------
    numpy.ndarray
        Float64 matrix of shape ``[n * c_in, k * c_out]``, rows ordered (m, part) and columns
        (k, part), matching a row-major ``[..., n, c_in]`` input and ``[..., k, c_out]`` output.
    """
    c_in = 2 if complex_input else 1
    if inverse and onesided:
        # IRFFT: bins 0 .. L//2 (the rest of the input is ignored, missing bins are zero) stand
        # for the Hermitian-symmetric full spectrum; every bin other than DC and Nyquist counts
        # twice. The imaginary parts of DC and Nyquist drop out because their sin terms vanish.
        bins = min(n, length // 2 + 1)
        k = np.arange(bins)[:, None]
        j = np.arange(length)[None, :]
        theta = 2 * np.pi * ((k * j) % length) / length
        weight = np.where((k == 0) | (2 * k == length), 1.0, 2.0) / length
        matrix = np.zeros([n, c_in, length, 1])
        matrix[:bins, 0, :, 0] = weight * np.cos(theta)
        matrix[:bins, 1, :, 0] = -weight * np.sin(theta)
        return matrix.reshape(n * c_in, length)

    used = min(n, length)  # rows past dft_length truncate the signal; a longer L zero-pads it
    bins = length // 2 + 1 if onesided else length
    m = np.arange(used)[:, None]
    k = np.arange(bins)[None, :]
    # Reduce k*m modulo L before scaling so that large products keep full angle precision.
    theta = 2 * np.pi * ((m * k) % length) / length
    sign = 1.0 if inverse else -1.0
    scale = 1.0 / length if inverse else 1.0
    cos, sin = scale * np.cos(theta), scale * sign * np.sin(theta)
    # (a + ib)(cos + i*sign*sin) = (a cos - b sign sin) + i (b cos + a sign sin)
    matrix = np.zeros([n, c_in, bins, 2])
    matrix[:used, 0, :, 0] = cos
    matrix[:used, 0, :, 1] = sin
    if complex_input:
        matrix[:used, 1, :, 0] = -sin
        matrix[:used, 1, :, 1] = cos
    return matrix.reshape(n * c_in, bins * 2)


class DFT(OnnxOpConverter):
    """Converts an ONNX DFT node into a matmul against a constant DFT matrix."""

    @classmethod
    def _impl_v17(cls, bb, inputs, attr, params):
        cls._check_attrs(attr, ("axis", "inverse", "onesided"))
        return cls._convert(bb, inputs[0], inputs[1], int(attr.get("axis", 1)), attr, params)

    @classmethod
    def _impl_v20(cls, bb, inputs, attr, params):
        cls._check_attrs(attr, ("inverse", "onesided"))  # axis became an input
        axis = _constant_int(node_label("DFT", attr), "axis", inputs[2], params, example=-2)
        return cls._convert(bb, inputs[0], inputs[1], -2 if axis is None else axis, attr, params)

    @staticmethod
    def _check_attrs(attr, known):
        for key in attr:
            if key != "tvm_custom" and key not in known:
                raise unsupported_attribute(
                    node_label("DFT", attr),
                    f"attribute '{key}'",
                    f"this opset's DFT knows {', '.join(known)}",
                )

    @classmethod
    def _convert(cls, bb, x, dft_length, axis, attr, params):
        label = node_label("DFT", attr)
        inverse, onesided = bool(attr.get("inverse", 0)), bool(attr.get("onesided", 0))
        shape = list(x.ty.shape.values) if isinstance(x.ty.shape, relax.ShapeExpr) else None
        if shape is None:
            raise unsupported_attribute(label, "an input of unknown shape", "give its shape in shape_dict")
        rank = len(shape)
        if not isinstance(shape[-1], tvm.tirx.IntImm) or int(shape[-1]) not in (1, 2):
            raise invalid_attribute(
                label, f"input of shape {shape}", "the last dimension must be 1 (real) or 2 (complex)"
            )
        c_in = int(shape[-1])
        complex_input = c_in == 2
        if not -rank <= axis <= rank - 2 or axis == -1:
            raise invalid_attribute(
                label, f"axis {axis}", f"expected [-{rank}, -2] or [0, {rank - 2}] for rank {rank}"
            )
        axis %= rank
        if not isinstance(shape[axis], tvm.tirx.IntImm):
            raise unsupported_attribute(
                label,
                f"a symbolic signal length ({shape[axis]})",
                "give the DFT axis a static size in shape_dict",
            )
        n = int(shape[axis])
        if onesided and not inverse and complex_input:
            raise invalid_attribute(
                label, "onesided=1 with complex input", "a forward one-sided DFT takes real input"
            )
        if onesided and inverse and not complex_input:
            raise invalid_attribute(
                label, "onesided=1, inverse=1 with real input", "IRFFT takes complex input"
            )

        length = _constant_int(label, "dft_length", dft_length, params, example=n)
        if length is None:
            length = 2 * (n - 1) if inverse and onesided else n
        if length < 1:
            raise invalid_attribute(label, f"dft_length {length}", "must be positive")

        matrix = _dft_matrix(n, length, inverse, onesided, complex_input)
        c_out = 1 if inverse and onesided else 2
        k = matrix.shape[1] // c_out

        # The signal axis goes next to the complex axis so that both flatten into the matmul's
        # reduction axis; the batch dims of the matmul are then all the other axes.
        perm = [d for d in range(rank - 1) if d != axis] + [axis, rank - 1]
        moved = perm != list(range(rank))
        if moved:
            x = relax.op.permute_dims(x, perm)
        lead = [shape[d] for d in perm[:-2]]
        x = bb.emit(relax.op.reshape(x, [*lead, n * c_in]))
        y = bb.emit(relax.op.matmul(x, relax.const(matrix.astype(str(x.ty.dtype)))))
        y = relax.op.reshape(y, [*lead, k, c_out])
        if moved:
            y = relax.op.permute_dims(y, [int(i) for i in np.argsort(perm)])
        return bb.emit(y)
