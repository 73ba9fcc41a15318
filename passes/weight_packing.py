"""Kernels and packed weights for matched sites: the kernel set of a target, the quantizer's view of a weight,
and each (weight, precision) packed once."""

from __future__ import annotations

import numpy as np
from tvm import relax

from tvm_tqs.errors import TQSError
from tvm_tqs.precision import precision as precision_of
from tvm_tqs.quantizers import QuantizedWeight
from tvm_tqs.targets.kernels import ActQuant, Epilogue, KernelSet
from tvm_tqs.targets.registry import TargetSpec, get_target

from .site_graph import static_shape
from .site_match import SiteMatch


class PlanError(TQSError):
    """A plan that cannot be applied: unknown sites or precisions, or shared weights split across precisions."""


def kernel_set_for(target: str | TargetSpec) -> KernelSet:
    """The kernel set of a registered target (its ISA features; kernels compiled for its exact target)."""
    spec = get_target(target)
    if spec.kind == "x86":
        from tvm_tqs.targets import x86

        return x86.kernel_set(frozenset(spec.features), spec.tvm_target)
    if spec.kind == "arm_cpu":
        from tvm_tqs.targets import arm

        return arm.kernel_set(spec.features, spec.tvm_target)
    if spec.kind in ("cuda", "opencl"):
        from tvm_tqs.targets import gpu

        return gpu.kernel_set(spec)
    raise PlanError(f"target '{spec.name}' ({spec.kind}) has no kernel set")


def quantize_weight(quantizer, w, bits: int, channel_axis: int, group_size: int | None) -> QuantizedWeight:
    qw = quantizer(w, bits, channel_axis, group_size)
    if not isinstance(qw, QuantizedWeight):
        raise TypeError(f"quantizer must return a QuantizedWeight, got {type(qw).__name__}")
    if qw.bits != bits or (bits == 4 and qw.group_size != group_size):
        raise ValueError(
            f"quantizer returned bits={qw.bits}, group_size={qw.group_size}; asked for bits={bits}, "
            f"group_size={group_size} (int4 groups must match the kernel's)"
        )
    lo = -127 if bits == 8 else -8
    hi = 127 if bits == 8 else 7
    q = np.asarray(qw.q)
    if q.size and (q.min() < lo or q.max() > hi):
        raise ValueError(f"quantizer produced {bits}-bit values outside [{lo}, {hi}] (the kernels' contract)")
    return qw


def quantizer_view(match: SiteMatch) -> np.ndarray:
    """The weight handed to the quantizer: graph layout, except conv1d ``[O, I, KW]`` -> ``[O, KW, I]``
    (channel axis still 0), the conv kernels' tap-major reduction order, so that int4 groups of
    consecutive reduction elements are the kernels' groups."""
    return np.ascontiguousarray(match.weight.transpose(0, 2, 1)) if match.op == "conv1d" else match.weight


class WeightPacker:
    """Packs each (weight, precision) once: sites sharing a weight get the very same constants."""

    def __init__(self, ks: KernelSet, quantizer, group_size: int):
        self.ks, self.quantizer, self.group_size = ks, quantizer, group_size
        self.cache: dict[tuple, tuple] = {}

    def packed(self, match: SiteMatch, precision: str):
        key = (match.weight_digest, match.op, precision)
        if key not in self.cache:
            w = quantizer_view(match)  # what the quantizer sees: the kernel's reduction order
            wmat = np.ascontiguousarray(w.reshape(w.shape[0], -1) if match.op != "dense" else w.T)  # [N, K]
            prec = precision_of(precision)
            if prec.integer:
                bits = prec.bits
                qw = quantize_weight(
                    self.quantizer, w, bits, match.channel_axis, self.group_size if bits == 4 else None
                )
                q = np.ascontiguousarray(qw.q.reshape(qw.q.shape[0], -1), np.int8)
                if bits == 8:
                    packed = self.ks.pack_int8(q, np.asarray(qw.scale, np.float32).reshape(-1))
                else:
                    packed = self.ks.pack_int4(q, np.asarray(qw.scale, np.float32), self.group_size)
            elif precision == "fp16":
                packed = self.ks.pack_fp16(wmat)
            else:
                packed = self.ks.pack_fp32(wmat)
            self.cache[key] = (packed, {})
        return self.cache[key]

    def consts(self, match: SiteMatch, precision: str, kern) -> list:
        packed, made = self.packed(match, precision)
        arrays = kern.const_args(packed, match.bias)
        out = []
        for spec, arr in zip(kern.consts, arrays, strict=True):
            if spec.name == "bias":
                out.append(relax.const(arr))
                continue
            if spec.name not in made:  # one constant object per packed array, reused by every site
                made[spec.name] = relax.const(arr)
            out.append(made[spec.name])
        return out


def kernel_for_site(ks: KernelSet, match: SiteMatch, precision: str, act: ActQuant, group_size: int):
    epi = Epilogue(
        bias=match.bias is not None, activation=match.activation, residual=match.residual is not None
    )
    if match.conv is not None:
        spec = match.conv
        if precision == "int8":
            return ks.conv1d_int8(spec, epi, act)
        if precision == "int4":
            return ks.conv1d_int4(spec, epi, act, group_size)
        if precision == "fp16":
            return ks.conv1d_fp16(spec, epi)
        return ks.conv1d_fp32(spec, epi)
    m, k, n = match.m, match.k, match.n
    lead = kernel_lead(match)
    if precision == "int8":
        return ks.dense_int8(m, k, n, epi, act, lead=lead)
    if precision == "int4":
        return ks.dense_int4(m, k, n, epi, act, group_size, lead=lead)
    if precision == "fp16":
        return ks.dense_fp16(m, k, n, epi, lead=lead)
    return ks.dense_fp32(m, k, n, epi, lead=lead)


def kernel_lead(match: SiteMatch) -> tuple[int, ...] | None:
    """Leading dims the kernel takes as they are (no reshape around it): x = [*lead, K], one dim > 1."""
    if match.op != "dense":
        return None
    xs = static_shape(match.x)
    if len(xs) <= 2 or sum(d > 1 for d in xs[:-1]) > 1:
        return None
    return tuple(xs[:-1])
