"""Quantized lowering: rewrite the planned fused sites of a model into integer (or scheduled float) kernels.

A plan maps fused call sites (their index in ``tvm_tqs.graph.fused_ops(fuse(model))``) to a precision.
Each weighted site (matmul / conv1d against a constant) becomes ONE ``call_tir`` of a kernel from
``tvm_tqs.targets.kernels``: weights quantized offline by the chosen quantizer and packed for the
target's ISA, activations quantized to int8 inside the kernel, int32 accumulation, and the rescale,
bias and activation of the site fused into the kernel's epilogue. The site's other ops (residual
adds, reshapes, norms, recurrent gate math) stay ordinary ops and are fused again around the kernel.
Sites that cannot be quantized keep fp32 and the report says why. See docs/quantize.md.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import tvm
from tvm import relax

from tvm_tqs.precision import INT4_GROUP, PRECISION_ORDER
from tvm_tqs.quantizers import rtn
from tvm_tqs.targets.build import KERNEL_ATTR
from tvm_tqs.targets.kernels import ActQuant, KernelSet
from tvm_tqs.targets.registry import TargetSpec, get_target

from .fuse import OP_KINDS_ATTR, FuseOpsTagged
from .legalize_tagged import LegalizeOpsTagged
from .site_analysis import (
    SiteAnalysis,
    SiteWeight,
    analyze_sites,
    expose_anchor_inputs,
    quantizable_sites,
    site_kernel,
)
from .site_graph import static_shape, with_main
from .site_match import SiteMatch
from .weight_packing import PlanError, WeightPacker, kernel_for_site, kernel_lead, kernel_set_for

__all__ = [
    "PRECISIONS",
    "PlanError",
    "QuantizeResult",
    "QuantizeSites",
    "SiteAnalysis",
    "SiteReport",
    "SiteWeight",
    "analyze_sites",
    "expose_anchor_inputs",
    "kernel_set_for",
    "quantizable_sites",
    "quantize",
    "site_kernel",
]

PRECISIONS = PRECISION_ORDER


@dataclass(frozen=True)
class SiteReport:
    """What the pass did with one fused site of the fp32 graph.

    ``requested`` is the plan's precision (``fp32`` when the site is not in the plan), ``applied`` what
    runs. ``kernel`` names the kernel PrimFunc the site now calls (None: the site kept its plain ops).
    ``reason`` says why ``applied`` differs from ``requested`` (or why a weighted fp32 site has no
    kernel). ``fused`` lists the site's ops inside the kernel, ``left`` the ones that stay ordinary ops.
    ``weight`` is the `WeightInfo.id` of the site's quantized weight; sites with one weight share it.
    """

    index: int
    kinds: tuple[str, ...]
    requested: str
    applied: str
    kernel: str | None = None
    reason: str | None = None
    weight: str | None = None
    fused: tuple[str, ...] = ()
    left: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclass
class QuantizeResult:
    """The rewritten, fused module and the per-site report (`sites[i]` is fp32 site `i`)."""

    mod: tvm.IRModule
    sites: list[SiteReport]
    target: str
    kernel_set: str
    quantizer: str
    group_size: int
    act_quant: str = "dynamic"
    info: dict = field(default_factory=dict)

    @property
    def plan(self) -> dict[int, str]:
        """The precision each site runs at (after fallbacks)."""
        return {s.index: s.applied for s in self.sites}

    @property
    def kernels(self) -> dict[int, str]:
        """Site index -> kernel name, for the sites that call a kernel."""
        return {s.index: s.kernel for s in self.sites if s.kernel}

    def to_dict(self) -> dict:
        """JSON-ready summary (the module itself is not included): what ``plan.json`` holds."""
        return {
            "format": 1,
            "target": self.target,
            "kernel_set": self.kernel_set,
            "quantizer": self.quantizer,
            "group_size": self.group_size,
            "act_quant": self.act_quant,
            "plan": {str(s.index): s.applied for s in self.sites if s.applied != "fp32"},
            "sites": [s.to_dict() for s in self.sites],
            **self.info,
        }


# ---------------------------------------------------------------------------------------------------
# the pass


def _normalize_plan(plan: Mapping, n_sites: int) -> dict[int, str]:
    out, problems = {}, []
    for key, value in dict(plan or {}).items():
        try:
            idx = int(key)
        except (TypeError, ValueError):
            problems.append(f"site key {key!r} is not an integer")
            continue
        if not 0 <= idx < n_sites:
            problems.append(f"site {idx} does not exist (the fused graph has sites 0..{n_sites - 1})")
        prec = str(value)
        if prec not in PRECISIONS:
            problems.append(f"site {idx}: unknown precision {value!r} (one of {', '.join(PRECISIONS)})")
        out[idx] = prec
    if problems:
        raise PlanError("invalid plan: " + "; ".join(problems))
    return out


@tvm.transform.module_pass(opt_level=0, name="QuantizeSites")
class QuantizeSites:
    """Rewrite the planned sites of a loaded (unfused) Relax module into kernel calls, then fuse.

    The module is legalized as `fuse_pipeline` does (the fp32 fused graph's sites are defined there);
    each site's bindings are found by re-running FuseOps on the legalized graph. For a weighted site
    (``matmul`` with one constant operand, ``conv1d`` with a constant weight) the anchor op and the
    ops of the same site that directly follow it, if present (a constant per-channel bias add, a
    width crop of a conv, then relu / sigmoid / tanh / gelu), become ONE ``call_tir`` of the kernel
    (``targets.kernels``) for the site's precision; inputs with leading dims are flattened to
    ``M = prod(leading)`` around it. The remaining ops of the site stay ordinary ops. Finally
    FuseOps/FuseTIR run again: kernels are opaque (``op_pattern`` 8), the leftovers fuse among
    themselves. The result is a fused module like `fuse_pipeline`'s, ready for `targets.build`.

    After the pass ran, ``self.sites`` holds one `SiteReport` per fp32 site.

    Parameters
    ----------
    plan : mapping
        Fused-site index (of ``fused_ops(fuse(model))``) -> ``"fp32" | "fp16" | "int8" | "int4"``;
        missing sites are fp32. Sites sharing one weight must share one precision (`PlanError`).
    kernel_set : KernelSet
        Kernels of the target (`kernel_set_for(target)`).
    quantizer : callable
        ``quantizer(w, bits, channel_axis, group_size) -> QuantizedWeight`` (`tvm_tqs.quantizers.rtn`).
    group_size : int
        int4 group size along the reduction (the kernels' default, 32).
    fp32_kernels : bool
        Weighted sites left at fp32 call the scheduled fp32 kernel (default); False keeps them as the
        plain legalized ops.
    analysis : SiteAnalysis, optional
        `analyze_sites` of the module the pass will run on (used when it is that module; saves redoing it).
    """

    def __init__(
        self,
        plan: Mapping,
        kernel_set: KernelSet,
        quantizer: Callable = rtn,
        group_size: int = INT4_GROUP,
        fp32_kernels: bool = True,
        analysis: SiteAnalysis | None = None,
    ):
        self.plan = plan
        self.analysis = analysis
        self.ks = kernel_set
        self.quantizer = quantizer
        self.group_size = group_size
        self.fp32_kernels = fp32_kernels
        self.act = ActQuant("dynamic")
        self.sites: list[SiteReport] = []
        self.error: Exception | None = None

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        self.error = None
        try:
            return self._run(mod)
        except Exception as e:  # kept: TVM's pass machinery re-raises it as a plain RuntimeError
            self.error = e
            raise

    def _run(self, mod: tvm.IRModule) -> tvm.IRModule:
        an = self.analysis if self.analysis is not None and self.analysis.source.same_as(mod) else None
        an = an or analyze_sites(mod)
        legal, table, matches = an.legal, an.table, an.matches
        plan = _normalize_plan(self.plan, len(table))
        self._check_shared(plan, matches, an.weight_ids)
        weight_ids = an.weight_ids

        packer = WeightPacker(self.ks, self.quantizer, self.group_size)
        dataflow = [
            isinstance(block, relax.DataflowBlock)
            for block in legal["main"].body.blocks
            for _ in block.bindings
        ]
        bb = relax.BlockBuilder(legal)
        rewrites: dict[int, list] = {}  # position of a chain's last op -> new bindings
        kernels: dict[tuple, Any] = {}
        dropped: set[int] = set()
        reports = []
        for i, op in enumerate(table):
            requested = plan.get(i, "fp32")
            match = matches[i]
            base = {"index": i, "kinds": op.kinds, "requested": requested}
            if not isinstance(match, SiteMatch):
                reason = match if match != "unsupported op kind" else f"unsupported op kind: {op.anchor}"
                if requested == "fp32" and match == "unsupported op kind":
                    reason = None  # nothing to quantize, nothing asked
                reports.append(SiteReport(**base, applied="fp32", reason=reason, left=op.kinds))
                continue
            wid = weight_ids.get(match.weight_digest)
            if requested == "fp32" and not self.fp32_kernels:
                reports.append(
                    SiteReport(
                        **base, applied="fp32", weight=wid, reason="fp32 kept as plain ops", left=op.kinds
                    )
                )
                continue
            key = (
                requested,
                match.conv,
                match.m,
                match.k,
                match.n,
                kernel_lead(match),
                match.bias is not None,
                match.residual is not None,
                match.activation,
            )
            if key not in kernels:  # equal sites (every step of an unrolled RNN) share one kernel
                kernels[key] = kernel_for_site(self.ks, match, requested, self.act, self.group_size)
            kern = kernels[key]
            gv = bb.add_func(kern.func.with_attr(KERNEL_ATTR, list(match.fused)), kern.name)
            consts = packer.consts(match, requested, kern)
            at = max(match.absorbed)  # every input (x, a residual) is defined before the chain's last op
            rewrites[at] = self._emit(bb, match, gv, kern, consts, dataflow[at])
            dropped.update(p for p in match.absorbed if p != at)
            left = list(op.kinds)
            for kind in (
                match.fused
                if "gelu" not in match.fused
                else [*match.fused[:-1], "divide", "erf", "add", "multiply", "multiply"]
            ):
                if kind in left:
                    left.remove(kind)
            reports.append(
                SiteReport(
                    **base,
                    applied=requested,
                    kernel=kern.name,
                    weight=wid,
                    fused=tuple(match.fused),
                    left=tuple(left),
                )
            )
        self.sites = reports
        out = with_main(bb.get(), _rebuild_main(legal["main"], rewrites, dropped))
        fused = tvm.transform.Sequential(
            [
                LegalizeOpsTagged(),
                relax.transform.AnnotateTIROpPattern(),
                FuseOpsTagged(),
                relax.transform.DeadCodeElimination(),
            ]
        )(out)
        for gvar, func in list(fused.functions.items()):  # a kernel's kinds: the ops folded into it
            if isinstance(func, tvm.tirx.PrimFunc) and func.attrs and KERNEL_ATTR in func.attrs:
                fused[gvar] = func.with_attr(OP_KINDS_ATTR, list(func.attrs[KERNEL_ATTR]))
        return fused

    def _check_shared(self, plan: dict[int, str], matches: dict, weight_ids: dict[str, str]) -> None:
        by_weight: dict[str, list[int]] = {}
        for i, m in matches.items():
            if isinstance(m, SiteMatch):
                by_weight.setdefault(m.weight_digest, []).append(i)
        problems = []
        for digest, sites in by_weight.items():
            precs = {i: plan.get(i, "fp32") for i in sites}
            if len(set(precs.values())) > 1:
                groups: dict[str, list[int]] = {}
                for i, p in precs.items():
                    groups.setdefault(p, []).append(i)
                parts = ", ".join(f"{p} at {_ranges(v)}" for p, v in sorted(groups.items()))
                problems.append(
                    f"sites {_ranges(sites)} share weight {weight_ids.get(digest, digest)} and must get one "
                    f"precision, but the plan gives {parts}"
                )
        if problems:
            raise PlanError("invalid plan: " + "; ".join(problems))

    def _emit(self, bb, match: SiteMatch, gv, kern, consts, dataflow: bool) -> list:
        """New bindings replacing the anchor: [reshape/permute in], kernel call, [reshape/permute out]."""
        new = []

        def bind(expr, var=None):
            expr = bb.normalize(expr)
            if var is None:
                make = relax.DataflowVar if dataflow else relax.Var
                var = make(f"tqs{match.anchor.pos}_{len(new)}", expr.ty)
            new.append(relax.VarBinding(var, expr))
            return var

        x = match.x
        xs = static_shape(x)
        out_shape = static_shape(match.out_var)
        if match.op == "dense" and tuple(xs) != (match.m, match.k) and kernel_lead(match) is None:
            x = bind(relax.op.reshape(x, (match.m, match.k)))
        elif match.op == "dense_left":
            axes = [*range(len(xs) - 2), len(xs) - 1, len(xs) - 2]
            x = bind(relax.op.reshape(bind(relax.op.permute_dims(x, axes)), (match.m, match.k)))
        inputs = [x]
        if match.residual is not None:
            r = match.residual
            if tuple(static_shape(r)) != tuple(kern.output.shape):
                r = bind(relax.op.reshape(r, kern.output.shape))
            inputs.append(r)
        call = relax.call_tir(
            gv,
            relax.Tuple([*inputs, *consts]),
            relax.TensorType(shape=kern.output.shape, dtype=kern.output.dtype),
        )
        if match.op == "dense" and tuple(kern.output.shape) != tuple(out_shape):
            bind(relax.op.reshape(bind(call), out_shape), match.out_var)
        elif match.op == "dense_left":
            lead = out_shape[:-2]
            y = bind(relax.op.reshape(bind(call), (*lead, out_shape[-1], out_shape[-2])))
            axes = [*range(len(out_shape) - 2), len(out_shape) - 1, len(out_shape) - 2]
            bind(relax.op.permute_dims(y, axes), match.out_var)
        else:
            bind(call, match.out_var)
        return new


def _ranges(values: list[int]) -> str:
    values = sorted(values)
    if len(values) > 6:
        return f"{', '.join(map(str, values[:3]))}, ..., {values[-1]} ({len(values)} sites)"
    return ", ".join(map(str, values))


def _rebuild_main(main: relax.Function, rewrites: dict[int, list], dropped: set[int]) -> relax.Function:
    pos = 0
    blocks = []
    for block in main.body.blocks:
        dataflow = isinstance(block, relax.DataflowBlock)
        new = []
        for binding in block.bindings:
            if pos in rewrites:
                new.extend(rewrites[pos])
            elif pos not in dropped:
                new.append(binding)
            pos += 1
        blocks.append(relax.DataflowBlock(new) if dataflow else relax.BindingBlock(new))
    return relax.Function(
        main.params, relax.SeqExpr(blocks, main.body.body), main.ret_ty, main.is_pure, main.attrs
    )


def quantize(
    mod: Any,
    plan: Mapping,
    target: str | TargetSpec = "x86",
    quantizer: Callable = rtn,
    *,
    input_shapes: Mapping | None = None,
    group_size: int = INT4_GROUP,
    fp32_kernels: bool = True,
) -> QuantizeResult:
    """Apply a precision plan to a model for a target: `QuantizeSites` plus its report.

    Parameters
    ----------
    mod : tvm.IRModule, SiteAnalysis or model
        The loaded, unfused Relax module (`tvm_tqs.load`), its `analyze_sites` (reused), or anything `load`
        accepts (then ``input_shapes`` fixes its dynamic dims).
    plan : mapping
        ``{site index: "fp32" | "fp16" | "int8" | "int4"}`` over ``fused_ops(fuse(model))``.
    target : str or TargetSpec
        Registered target (``x86``, ``arm_cpu/cortex-a76``, ...): selects the kernel set.
    quantizer : callable
        Weight quantizer with the signature of `tvm_tqs.quantizers.rtn`.
    group_size : int
        int4 group size (multiple of 16; 32 by default, as the kernels').
    fp32_kernels : bool
        Weighted fp32 sites use the scheduled fp32 kernel (True) or stay plain ops.
    """
    analysis = mod if isinstance(mod, SiteAnalysis) else None
    if analysis is not None:
        mod = analysis.source
    elif not isinstance(mod, tvm.IRModule):
        from tvm_tqs.frontend.load import load

        mod = load(mod, input_shapes)
    spec = get_target(target)
    ks = kernel_set_for(spec)
    qpass = QuantizeSites(plan, ks, quantizer, group_size, fp32_kernels, analysis)
    try:
        out = qpass(mod)
    except Exception:
        if qpass.error is not None:  # the original exception (PlanError, ValueError, ...)
            raise qpass.error from None
        raise
    return QuantizeResult(
        mod=out,
        sites=qpass.sites,
        target=spec.name,
        kernel_set=ks.name,
        quantizer=getattr(quantizer, "__name__", type(quantizer).__name__),
        group_size=group_size,
    )
