"""``KernelSet``: the per-target entry point the quantize pass calls."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tvm_tqs.precision import INT4_GROUP

from . import build, packing
from .config import DEFAULT_ACT, DEFAULT_EPILOGUE, ActQuant, Conv1dSpec, Epilogue, Isa, Kernel, PackedWeights
from .isa import ISAS

__all__ = ["KernelSet", "get_kernel_set", "kernel_set_names"]

DEFAULT_GROUP_SIZE = INT4_GROUP  # the precision registry's int4 group


def _tag(act: ActQuant, epi: Epilogue) -> str:
    parts = [act.mode]
    if epi.out_dtype == "int32":
        parts.append("i32")
    if epi.bias:
        parts.append("bias")
    if epi.residual:
        parts.append("res")
    if epi.activation:
        parts.append(epi.activation)
    return "_".join(parts)


@dataclass(frozen=True)
class KernelSet:
    """Kernels of one ISA. Every builder returns a scheduled :class:`Kernel` (PrimFunc + call specs).

    Typical use by a rewrite (weights are constants, ``x`` the site's fp32 input)::

        ks = get_kernel_set("x86-avx512-vnni")
        q, s = my_quantizer(w)                      # int8 [N, K] in [-127, 127], f32 [N]
        packed = ks.pack_int8(q, s)
        kern = ks.dense_int8(M, K, N, Epilogue(bias=True, activation="relu"))
        gv = bb.add_func(kern.func, kern.name)
        consts = [relax.const(a) for a in kern.const_args(packed, bias)]
        y = bb.emit(relax.call_tir(gv, [x, *consts], relax.TensorType(kern.output.shape, kern.output.dtype)))
    """

    isa: Isa

    @property
    def name(self) -> str:
        return self.isa.name

    @property
    def target(self) -> dict[str, Any]:
        return dict(self.isa.target)

    def with_target(self, target: dict[str, Any]) -> KernelSet:
        """Same kernels for another target dict of the same ISA (e.g. ``mcpu`` of the real host)."""
        return KernelSet(replace(self.isa, target=dict(target)))

    # -- packing (numpy, offline) ---------------------------------------------------------------

    def pack_int8(self, q: np.ndarray, scale: np.ndarray) -> PackedWeights:
        """int8[N, K] in [-127, 127] + f32[N] per-channel scales -> packed constants."""
        return packing.pack_int8(self.isa, q, scale)

    def pack_int4(
        self, q: np.ndarray, scale: np.ndarray, group_size: int = DEFAULT_GROUP_SIZE
    ) -> PackedWeights:
        """int4 values (int8[N, K] in [-8, 7]) + f32[N, ceil(K / group_size)] scales -> packed constants."""
        return packing.pack_int4(self.isa, q, scale, group_size)

    def pack_fp32(self, w: np.ndarray) -> PackedWeights:
        return packing.pack_fp32(self.isa, w)

    def pack_fp16(self, w: np.ndarray) -> PackedWeights:
        """fp32 weights ``[N, K]`` stored as float16 in the fp32 layout (for ``dense_fp16``)."""
        return packing.pack_fp32(self.isa, w, "float16")

    def pack_conv1d_int8(self, q: np.ndarray, scale: np.ndarray) -> PackedWeights:
        """Conv weights int8[Cout, Cin, KW] (PyTorch order) -> the im2col dense packing (tap-major K)."""
        return self.pack_int8(packing.conv_matrix(q), scale)

    def pack_conv1d_int4(self, q, scale, group_size: int = DEFAULT_GROUP_SIZE) -> PackedWeights:
        """Conv weights as int4 values int8[Cout, Cin, KW]; groups run along the kernels' reduction order
        ``kw * Cin + ci`` (quantize `packing.conv_matrix(w)` group-wise to get matching scales)."""
        return self.pack_int4(packing.conv_matrix(q), scale, group_size)

    def pack_conv1d_fp32(self, w: np.ndarray) -> PackedWeights:
        return self.pack_fp32(packing.conv_matrix(w))

    def pack_conv1d_fp16(self, w: np.ndarray) -> PackedWeights:
        return self.pack_fp16(packing.conv_matrix(w))

    # -- kernels ---------------------------------------------------------------------------------

    def _name(self, op: str, dims: str, act: ActQuant | None, epi: Epilogue) -> str:
        isa = self.isa.name.replace("-", "_")
        tag = _tag(act, epi) if act is not None else _tag(ActQuant(), epi).replace("dynamic", "f32")
        return f"tqs_{op}_{isa}_{dims}_{tag}"

    def dense_int8(
        self,
        m: int,
        k: int,
        n: int,
        epilogue: Epilogue = DEFAULT_EPILOGUE,
        act: ActQuant = DEFAULT_ACT,
        *,
        lead: tuple[int, ...] | None = None,
    ) -> Kernel:
        """``out[M, N] = epilogue(x[M, K] . W[N, K]^T)`` with int8 weights (see ``ActQuant`` for x).

        ``lead``: take ``x[*lead, K]`` and return ``out[*lead, N]`` (prod(lead) = M, at most one
        leading dim > 1, e.g. ``(1, 1)`` for an RNN step), so the caller needs no reshapes.
        """
        name = self._name("dense_w8", _dense_dims(m, k, n, lead), act, epilogue)
        return build.dense_int(self.isa, 8, m, k, n, epilogue, act, DEFAULT_GROUP_SIZE, name, lead)

    def dense_int4(
        self,
        m: int,
        k: int,
        n: int,
        epilogue: Epilogue = DEFAULT_EPILOGUE,
        act: ActQuant = DEFAULT_ACT,
        group_size: int = DEFAULT_GROUP_SIZE,
        *,
        lead: tuple[int, ...] | None = None,
    ) -> Kernel:
        """int4 group-wise weights: ``y = s_x[m] * sum_g s_w[n, g] * dot_g[m, n]``; fp32 output."""
        name = self._name("dense_w4", _dense_dims(m, k, n, lead) + f"g{group_size}", act, epilogue)
        return build.dense_int(self.isa, 4, m, k, n, epilogue, act, group_size, name, lead)

    def dense_fp32(
        self,
        m: int,
        k: int,
        n: int,
        epilogue: Epilogue = DEFAULT_EPILOGUE,
        *,
        lead: tuple[int, ...] | None = None,
    ) -> Kernel:
        name = self._name("dense_f32", _dense_dims(m, k, n, lead), None, epilogue)
        return build.dense_fp32(self.isa, m, k, n, epilogue, name, lead=lead)

    def dense_fp16(
        self,
        m: int,
        k: int,
        n: int,
        epilogue: Epilogue = DEFAULT_EPILOGUE,
        *,
        lead: tuple[int, ...] | None = None,
    ) -> Kernel:
        """Weight-only fp16: half-precision weights (``pack_fp16``) widened in registers, fp32 math."""
        name = self._name("dense_f16w", _dense_dims(m, k, n, lead), None, epilogue)
        return build.dense_fp32(self.isa, m, k, n, epilogue, name, "float16", lead)

    def conv1d_int8(
        self, spec: Conv1dSpec, epilogue: Epilogue = DEFAULT_EPILOGUE, act: ActQuant = DEFAULT_ACT
    ) -> Kernel:
        """Conv1d via in-kernel im2col into the int8 GEMM (per-output-position dynamic scales)."""
        name = self._name("conv1d_w8", _conv_dims(spec), act, epilogue)
        return build.conv1d_int(self.isa, 8, spec, epilogue, act, DEFAULT_GROUP_SIZE, name)

    def conv1d_int4(
        self,
        spec: Conv1dSpec,
        epilogue: Epilogue = DEFAULT_EPILOGUE,
        act: ActQuant = DEFAULT_ACT,
        group_size: int = DEFAULT_GROUP_SIZE,
    ) -> Kernel:
        name = self._name("conv1d_w4", _conv_dims(spec) + f"g{group_size}", act, epilogue)
        return build.conv1d_int(self.isa, 4, spec, epilogue, act, group_size, name)

    def conv1d_fp32(self, spec: Conv1dSpec, epilogue: Epilogue = DEFAULT_EPILOGUE) -> Kernel:
        name = self._name("conv1d_f32", _conv_dims(spec), None, epilogue)
        return build.conv1d_fp32(self.isa, spec, epilogue, name)

    def conv1d_fp16(self, spec: Conv1dSpec, epilogue: Epilogue = DEFAULT_EPILOGUE) -> Kernel:
        """Weight-only fp16 conv1d (``pack_conv1d_fp16``)."""
        name = self._name("conv1d_f16w", _conv_dims(spec), None, epilogue)
        return build.conv1d_fp32(self.isa, spec, epilogue, name, "float16")


def _dense_dims(m: int, k: int, n: int, lead: tuple[int, ...] | None) -> str:
    dims = f"m{m}k{k}n{n}"
    return dims if lead is None else dims + "_l" + "x".join(str(int(d)) for d in lead)


def _conv_dims(s: Conv1dSpec) -> str:
    pad = f"p{s.padding[0]}_{s.padding[1]}"
    return (
        f"b{s.batch}c{s.in_channels}w{s.width}o{s.out_channels}k{s.kernel_size}"
        f"s{s.stride}d{s.dilation}{pad}_{s.layout.lower()}"
    )


def kernel_set_names() -> tuple[str, ...]:
    return tuple(ISAS)


def get_kernel_set(name: str) -> KernelSet:
    """``x86-avx512-vnni``, ``x86-avx2``, ``aarch64-neon``, ``aarch64-dotprod`` or ``aarch64-i8mm``."""
    try:
        return KernelSet(ISAS[name])
    except KeyError:
        raise ValueError(f"unknown kernel set {name!r}; known: {', '.join(ISAS)}") from None
