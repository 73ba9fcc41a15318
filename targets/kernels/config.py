"""Frozen configuration and result types of the kernel layer (plain data, no TVM objects but Kernel)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_ACT",
    "DEFAULT_EPILOGUE",
    "ActQuant",
    "Conv1dSpec",
    "Epilogue",
    "Isa",
    "Kernel",
    "PackedWeights",
    "TensorSpec",
    "Tiling",
]

ACTIVATIONS = (None, "relu", "gelu", "sigmoid", "tanh")


@dataclass(frozen=True)
class Epilogue:
    """What the kernel does after the integer accumulation.

    ``out_dtype="float32"`` (default): ``y = act(float(acc - corr) * (s_x[m] * s_w[n]) + bias[n])``,
    fused in the same PrimFunc. ``out_dtype="int32"``: the raw exact int32 dot products
    ``sum_k q_x[m, k] * q_w[n, k]`` (int8 weights with ``ActQuant("int8")`` only; tests and integer
    consumers). ``activation`` is one of ``ACTIVATIONS`` (``gelu`` is the erf form, as torch's default).
    ``residual``: the kernel takes one more runtime input ``residual`` shaped like its output (fp32)
    and adds it after the bias, before the activation: ``y = act(acc * s + bias + residual)`` (a
    skip connection, or an LSTM's input projection added to the recurrent matmul).
    """

    bias: bool = False
    activation: str | None = None
    out_dtype: str = "float32"
    residual: bool = False

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.out_dtype not in ("float32", "int32"):
            raise ValueError(f"out_dtype must be float32 or int32, got {self.out_dtype!r}")
        if self.out_dtype == "int32" and (self.bias or self.activation or self.residual):
            raise ValueError("an int32 epilogue has no bias, residual or activation")


@dataclass(frozen=True)
class ActQuant:
    """How the fp32 activations become int8 at run time (symmetric, zero point 0 in the int8 domain).

    * ``"dynamic"``: per row (per token / per output position of a conv), ``s[m] = absmax_k |x[m, k]| / 127``
      (``s = 1`` for an all-zero row), computed inside the kernel. Needs no calibration data.
    * ``"static"``: one per-tensor scale passed as the runtime input ``x_scale: float32[1]`` (bind a
      calibrated constant there).
    * ``"int8"``: the kernel takes already-quantized ``int8[M, K]`` activations, and for a float
      epilogue their scale ``x_scale: float32[M]`` (per row).

    Quantization is ``q = clip(round_half_even(x / s), -128, 127)``. On x86 AVX-512 VNNI the kernel
    feeds ``u = q + 128`` (uint8) to ``vpdpbusd`` and subtracts ``128 * sum_k w[n, k]`` (precomputed
    per column at packing time), so every target computes the same integer ``sum_k q_x * q_w``.
    """

    mode: str = "dynamic"

    def __post_init__(self) -> None:
        if self.mode not in ("dynamic", "static", "int8"):
            raise ValueError(f"ActQuant.mode must be dynamic, static or int8, got {self.mode!r}")


DEFAULT_EPILOGUE = Epilogue()
DEFAULT_ACT = ActQuant()


@dataclass(frozen=True)
class Conv1dSpec:
    """A 1-D convolution site (groups = 1). ``layout`` applies to input and output: NCW or NWC.

    Weights are PyTorch's ``[out_channels, in_channels, kernel_size]``. ``padding`` is (left, right);
    a causal TCN layer uses ``((kernel_size - 1) * dilation, 0)``.
    """

    batch: int
    in_channels: int
    width: int
    out_channels: int
    kernel_size: int
    stride: int = 1
    dilation: int = 1
    padding: tuple[int, int] = (0, 0)
    layout: str = "NCW"

    def __post_init__(self) -> None:
        if self.layout not in ("NCW", "NWC"):
            raise ValueError(f"layout must be NCW or NWC, got {self.layout!r}")
        if self.out_width < 1:
            raise ValueError(f"empty output width for {self}")

    @property
    def out_width(self) -> int:
        pl, pr = self.padding
        return (self.width + pl + pr - self.dilation * (self.kernel_size - 1) - 1) // self.stride + 1

    @property
    def reduction(self) -> int:
        """K of the im2col dense: in_channels * kernel_size (index ci * kernel_size + kw)."""
        return self.in_channels * self.kernel_size

    @property
    def input_shape(self) -> tuple[int, int, int]:
        b, c, w = self.batch, self.in_channels, self.width
        return (b, c, w) if self.layout == "NCW" else (b, w, c)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        b, c, w = self.batch, self.out_channels, self.out_width
        return (b, c, w) if self.layout == "NCW" else (b, w, c)


@dataclass(frozen=True)
class Isa:
    """One instruction-set flavour: its micro-kernel family, tile shape and intrinsic names.

    ``family``: ``bcast`` (C[i] += A[k] * B[i, k], nt lanes x kt), ``mmla`` (2x8 . 8x2 -> 2x2) or
    ``rowdot`` (16-byte row chunks, 4 int32 partial lanes). ``act_dtype``/``act_zero_point``: what
    the intrinsic multiplies (uint8 with +128 on VNNI, int8 elsewhere). ``target``: a TVM target dict.
    ``intrin_int8``/``intrin_int4`` may be empty: the accumulation stays plain integer loops (OpenCL).
    ``gpu_threads`` > 0 marks a GPU flavour (threads per block of the one-output-per-thread schedule).
    """

    name: str
    family: str
    nt: int
    kt: int
    act_dtype: str
    act_zero_point: int
    intrin_int8: str
    intrin_int4: str
    fp32_lanes: int
    vector_bits: int
    target: dict[str, Any] = field(hash=False)
    max_acc: int = 16
    description: str = ""
    gpu_threads: int = 0

    @property
    def gpu(self) -> bool:
        """A GPU flavour: one output per thread, ``gpu_threads`` threads per block, no register tile."""
        return self.gpu_threads > 0

    @property
    def mt(self) -> int:
        """Rows of activations per intrinsic call (2 for smmla, else 1)."""
        return 2 if self.family == "mmla" else 1


@dataclass(frozen=True)
class Tiling:
    """Register tile of the integer GEMM: ``mr`` x ``nr`` intrinsic tiles (rows x n-blocks)."""

    mr: int
    nr: int
    parallel: bool


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class PackedWeights:
    """Offline-packed constants of one site, in the order the kernel's PrimFunc takes them.

    ``arrays`` maps names to numpy arrays (e.g. ``w``, ``w_scale``, ``w_corr``); ``bits`` is 8, 4 or
    32 (fp32); ``n``/``k`` are the logical (unpadded) output and reduction sizes.
    """

    isa: str
    bits: int
    n: int
    k: int
    arrays: tuple[tuple[str, np.ndarray], ...] = field(hash=False, compare=False)
    group_size: int | None = None

    def __getitem__(self, name: str) -> np.ndarray:
        for key, value in self.arrays:
            if key == name:
                return value
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.arrays)


@dataclass(frozen=True)
class Kernel:
    """A scheduled PrimFunc and how to call it (destination-passing style, output last).

    Call order: ``*inputs`` (runtime tensors), ``*consts`` (packed weights then optional bias:
    bind them as ``relax.const``), then ``output``. ``const_args(packed, bias)`` returns the constant
    arrays in that order, checked against the specs.
    """

    name: str
    func: Any = field(hash=False, compare=False)
    inputs: tuple[TensorSpec, ...] = ()
    consts: tuple[TensorSpec, ...] = ()
    output: TensorSpec | None = None
    tiling: Tiling | None = None

    def const_args(self, packed: PackedWeights, bias: np.ndarray | None = None) -> list[np.ndarray]:
        out = []
        for spec in self.consts:
            if spec.name == "bias":
                if bias is None:
                    raise ValueError(f"kernel {self.name} was built with a bias epilogue: pass bias")
                arr = np.ascontiguousarray(bias, dtype=spec.dtype)
            else:
                arr = packed[spec.name]
            if tuple(arr.shape) != spec.shape or str(arr.dtype) != spec.dtype:
                raise ValueError(
                    f"{self.name}: constant {spec.name} is {arr.dtype}{list(arr.shape)}, "
                    f"expected {spec.dtype}{list(spec.shape)} (packed for another kernel set or shape?)"
                )
            out.append(arr)
        if bias is not None and all(s.name != "bias" for s in self.consts):
            raise ValueError(f"kernel {self.name} has no bias epilogue, but a bias was passed")
        return out

    @property
    def params(self) -> tuple[TensorSpec, ...]:
        return (*self.inputs, *self.consts, self.output)
