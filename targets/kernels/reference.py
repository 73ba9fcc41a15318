"""numpy references of the SAME math the kernels do, integer parts exactly, fp32 parts in kernel order.

What is bit-exact: the activation quantization (fp32 division, round-half-even, clip: IEEE-exact in
both), every integer product and sum (int32 accumulators; for int4 one int32 accumulator per group).
What is fp32 (compare with a tolerance): the rescale ``float(acc) * (s_x * s_w)``, the per-group
scale sum of int4, bias and activation; LLVM may contract ``a * b + c`` into an FMA, numpy does not.

``int_dot`` also replays each ISA's intermediate integer steps (VNNI's uint8 activations and
weight-sum correction, AVX2's int16 pair sums, NEON's int16 pair sums) and asserts that they fit,
so a test that passes here proves the saturation-free claims for its inputs.
"""

from __future__ import annotations

import math

import numpy as np

from .config import DEFAULT_ACT, DEFAULT_EPILOGUE, ActQuant, Conv1dSpec, Epilogue, Isa
from .packing import conv_matrix

__all__ = [
    "activation",
    "conv1d_fp32",
    "conv1d_int8",
    "dense_fp32",
    "dense_int4",
    "dense_int8",
    "im2col",
    "int_dot",
    "quantize_activations",
    "quantize_weights_int4",
    "quantize_weights_int8",
]

_I16 = 32767


def quantize_weights_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Round-to-nearest symmetric per-output-channel int8: q in [-127, 127], scale = absmax / 127."""
    w = np.asarray(w, dtype=np.float32)
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def quantize_weights_int4(w: np.ndarray, group_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Round-to-nearest symmetric int4 per (output channel, group of ``group_size`` along K).

    q in [-7, 7], scale[n, g] = absmax / 7; the last group may be partial (K is zero-padded).
    """
    w = np.asarray(w, dtype=np.float32)
    n, k = w.shape
    groups = -(-k // group_size)
    wp = np.zeros((n, groups * group_size), dtype=np.float32)
    wp[:, :k] = w
    wg = wp.reshape(n, groups, group_size)
    amax = np.abs(wg).max(axis=2)
    scale = np.where(amax > 0, amax / np.float32(7), np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(wg / scale[:, :, None]), -7, 7).astype(np.int8).reshape(n, -1)[:, :k]
    return np.ascontiguousarray(q), scale


def quantize_activations(
    x: np.ndarray, act: ActQuant, x_scale: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Kernel-identical activation quantization of ``x: f32[M, K]`` -> (q int8[M, K], s f32[M])."""
    x = np.asarray(x)
    m = x.shape[0]
    if act.mode == "int8":
        s = np.ones(m, np.float32) if x_scale is None else np.asarray(x_scale, np.float32).reshape(m)
        return x.astype(np.int8), s
    x = x.astype(np.float32)
    if act.mode == "dynamic":
        amax = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(m, np.float32)
        s = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    else:
        s = np.full(m, np.asarray(x_scale, np.float32).reshape(-1)[0], np.float32)
    inv = (np.float32(1) / s).astype(np.float32)  # one fp32 reciprocal per row, then multiplies
    q = np.clip(np.rint(x * inv[:, None]), -128, 127).astype(np.int8)
    return q, s


def int_dot(isa: Isa, qx: np.ndarray, qw: np.ndarray) -> np.ndarray:
    """``sum_k qx[m, k] * qw[n, k]`` computed the way ``isa``'s intrinsic does; int64 [M, N]."""
    a = qx.astype(np.int64)
    b = qw.astype(np.int64)
    exact = a @ b.T
    if isa.act_zero_point:  # VNNI: uint8 activations, correction by the weight sums
        u = a + isa.act_zero_point
        assert u.min(initial=0) >= 0 and u.max(initial=0) <= 255
        acc_u = u @ b.T
        assert np.abs(acc_u).max(initial=0) < 2**31, "uint8 accumulator overflows int32"
        out = acc_u - isa.act_zero_point * b.sum(axis=1)[None, :]
    elif isa.family == "bcast" and isa.name.startswith("x86"):  # AVX2 sign trick: int16 pairs (k, k+1)
        kp = -(-a.shape[1] // 2) * 2
        ap = np.zeros((a.shape[0], kp), np.int64)
        bp = np.zeros((b.shape[0], kp), np.int64)
        ap[:, : a.shape[1]] = a
        bp[:, : b.shape[1]] = b
        assert bp.min(initial=0) >= -127, "weight -128 breaks vpsignb"
        pairs = ap[:, None, 0::2] * bp[None, :, 0::2] + ap[:, None, 1::2] * bp[None, :, 1::2]
        assert np.abs(pairs).max(initial=0) <= _I16, "vpmaddubsw pair saturates"
        out = pairs.sum(axis=2)
    elif isa.family == "rowdot":  # NEON: int16 lane = products at e and e+8 of each 16-chunk
        kp = -(-a.shape[1] // 16) * 16
        ap = np.zeros((a.shape[0], kp), np.int64)
        bp = np.zeros((b.shape[0], kp), np.int64)
        ap[:, : a.shape[1]] = a
        bp[:, : b.shape[1]] = b
        ar = ap.reshape(a.shape[0], -1, 2, 8)
        br = bp.reshape(b.shape[0], -1, 2, 8)
        lanes = (ar[:, None, :, 0] * br[None, :, :, 0]) + (ar[:, None, :, 1] * br[None, :, :, 1])
        assert np.abs(lanes).max(initial=0) <= _I16, "smull+smlal2 int16 lane overflows"
        out = lanes.sum(axis=(2, 3))
    else:  # sdot / smmla: products summed straight into int32
        out = exact
    assert np.array_equal(out, exact)
    assert np.abs(out).max(initial=0) < 2**31, "int32 accumulator overflow"
    return out


def activation(y: np.ndarray, name: str | None) -> np.ndarray:
    y = y.astype(np.float32)
    if name is None:
        return y
    if name == "relu":
        return np.maximum(y, np.float32(0))
    if name == "sigmoid":
        return (1.0 / (1.0 + np.exp(-y.astype(np.float64)))).astype(np.float32)
    if name == "tanh":
        return np.tanh(y)
    if name == "gelu":
        erf = np.vectorize(math.erf, otypes=[np.float64])
        return (0.5 * y.astype(np.float64) * (1.0 + erf(y.astype(np.float64) / math.sqrt(2.0)))).astype(
            np.float32
        )
    raise ValueError(name)


def dense_int8(
    isa: Isa,
    x: np.ndarray,
    q: np.ndarray,
    w_scale: np.ndarray,
    bias: np.ndarray | None = None,
    epilogue: Epilogue = DEFAULT_EPILOGUE,
    act: ActQuant = DEFAULT_ACT,
    x_scale: np.ndarray | None = None,
    residual: np.ndarray | None = None,
) -> np.ndarray:
    """Reference of ``KernelSet.dense_int8``: int32[M, N] for an int32 epilogue, else fp32[M, N]."""
    qx, s = quantize_activations(x, act, x_scale)
    acc = int_dot(isa, qx, q)
    if epilogue.out_dtype == "int32":
        return acc.astype(np.int32)
    y = acc.astype(np.float32) * (s[:, None] * np.asarray(w_scale, np.float32)[None, :])
    if epilogue.bias:
        y = y + np.asarray(bias, np.float32)[None, :]
    if epilogue.residual:
        y = y + np.asarray(residual, np.float32).reshape(y.shape)
    return activation(y, epilogue.activation)


def dense_int4(
    isa: Isa,
    x: np.ndarray,
    q: np.ndarray,
    w_scale: np.ndarray,
    group_size: int = 32,
    bias: np.ndarray | None = None,
    epilogue: Epilogue = DEFAULT_EPILOGUE,
    act: ActQuant = DEFAULT_ACT,
    x_scale: np.ndarray | None = None,
    residual: np.ndarray | None = None,
) -> np.ndarray:
    """Reference of ``KernelSet.dense_int4``: ``act(s_x[m] * sum_g s_w[n, g] * dot_g[m, n] + bias[n])``.

    ``dot_g`` (one exact int32 per group) is summed in fp32 in group order, as the kernel does.
    """
    qx, s = quantize_activations(x, act, x_scale)
    m, k = qx.shape
    n = q.shape[0]
    groups = -(-k // group_size)
    f = np.zeros((m, n), np.float32)
    for g in range(groups):
        sl = slice(g * group_size, min(k, (g + 1) * group_size))
        dot = int_dot(isa, qx[:, sl], q[:, sl])
        f = f + dot.astype(np.float32) * np.asarray(w_scale, np.float32)[None, :, g]
    y = f * s[:, None]
    if epilogue.bias:
        y = y + np.asarray(bias, np.float32)[None, :]
    if epilogue.residual:
        y = y + np.asarray(residual, np.float32).reshape(y.shape)
    return activation(y, epilogue.activation)


def dense_fp32(
    w: np.ndarray,
    x: np.ndarray,
    bias: np.ndarray | None = None,
    activation_name: str | None = None,
    residual: np.ndarray | None = None,
):
    y = x.astype(np.float32) @ w.astype(np.float32).T
    if bias is not None:
        y = y + bias.astype(np.float32)[None, :]
    if residual is not None:
        y = y + np.asarray(residual, np.float32).reshape(y.shape)
    return activation(y, activation_name)


def im2col(spec: Conv1dSpec, x: np.ndarray) -> np.ndarray:
    """``x`` in ``spec.layout`` -> f32[B * Wout, KW * Cin], column ``kw * Cin + ci`` (zero padding): the
    conv kernels' reduction order (weights as ``packing.conv_matrix(w)``)."""
    x = np.asarray(x, np.float32)
    if spec.layout == "NWC":
        x = x.transpose(0, 2, 1)
    b, c, w = x.shape
    pl, pr = spec.padding
    xp = np.zeros((b, c, w + pl + pr), np.float32)
    xp[:, :, pl : pl + w] = x
    cols = np.zeros((b, spec.out_width, spec.kernel_size, c), np.float32)
    for kw in range(spec.kernel_size):
        start = kw * spec.dilation
        cols[:, :, kw, :] = xp[
            :, :, start : start + spec.stride * (spec.out_width - 1) + 1 : spec.stride
        ].transpose(0, 2, 1)
    return cols.reshape(b * spec.out_width, spec.kernel_size * c)


def to_layout(spec: Conv1dSpec, y: np.ndarray) -> np.ndarray:
    """GEMM rows [B * W, N] -> the conv's output layout [B, N, W] (NCW) / [B, W, N] (NWC)."""
    y = y.reshape(spec.batch, spec.out_width, spec.out_channels)
    return np.ascontiguousarray(y.transpose(0, 2, 1) if spec.layout == "NCW" else y)


def conv1d_int8(
    isa: Isa,
    spec: Conv1dSpec,
    x: np.ndarray,
    q: np.ndarray,
    w_scale: np.ndarray,
    bias: np.ndarray | None = None,
    epilogue: Epilogue = DEFAULT_EPILOGUE,
    act: ActQuant = DEFAULT_ACT,
    x_scale: np.ndarray | None = None,
) -> np.ndarray:
    """Reference of ``KernelSet.conv1d_int8``: im2col then ``dense_int8`` (per-row = per output position)."""
    q = conv_matrix(q) if np.ndim(q) == 3 else q
    y = dense_int8(isa, im2col(spec, x), q, w_scale, bias, epilogue, act, x_scale)
    return to_layout(spec, y)


def conv1d_fp32(
    spec: Conv1dSpec, x: np.ndarray, w: np.ndarray, bias=None, activation_name=None
) -> np.ndarray:
    w = conv_matrix(w) if np.ndim(w) == 3 else w
    return to_layout(spec, dense_fp32(w, im2col(spec, x), bias, activation_name))
