"""What each fused site of a loaded module can become: the legalized graph, the fp32 fused sites, and per
site a `SiteMatch` or the reason it stays fp32. Computed once and handed to the quantize pass, the planner
and the latency table (`analyze_sites`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from tvm_tqs.errors import TQSError
from tvm_tqs.precision import INT4_GROUP, PRECISION_ORDER
from tvm_tqs.targets.kernels import ActQuant
from tvm_tqs.targets.registry import TargetSpec, get_target

from .fuse import FuseOpsTagged
from .site_graph import BindingGraph, Constant, legalize_for_sites, read_bindings, site_positions
from .site_match import SiteMatch, match_anchor, match_epilogue
from .weight_packing import PlanError, kernel_for_site, kernel_set_for, quantizer_view


@dataclass
class SiteAnalysis:
    """The legalized graph, its fused sites (as in the fp32 fused graph) and what each site can become."""

    source: tvm.IRModule  # the loaded module analysed
    legal: tvm.IRModule
    table: list  # FusedOp of every fp32 site
    matches: dict  # site -> SiteMatch, or the reason it cannot be lowered
    weight_ids: dict  # weight digest -> WeightInfo.id


def analyze_sites(mod: tvm.IRModule) -> SiteAnalysis:
    """Analyse a loaded (unfused) module once; pass the result on instead of the module."""
    from tvm_tqs.graph import fused_ops, is_fused

    if is_fused(mod):
        raise TQSError(
            "quantize takes the loaded (unfused) Relax module, e.g. tvm_tqs.load(model, shapes), "
            "not the output of fuse(): the fused PrimFuncs no longer show their ops"
        )
    legal, pre_calls = legalize_for_sites(mod)
    fp32 = relax.transform.DeadCodeElimination()(FuseOpsTagged()(legal))
    table = fused_ops(fp32)
    binds = read_bindings(legal, pre_calls)
    groups = site_positions(legal, binds)
    kinds = [tuple(binds[p].kind for p in grp) for grp in groups]
    if kinds != [op.kinds for op in table]:
        raise RuntimeError("internal error: the re-derived fused sites differ from the fp32 fused graph")
    graph = BindingGraph(binds, groups, legal["main"])
    matches: dict[int, SiteMatch | str] = {}
    for i, grp in enumerate(groups):
        m = match_anchor(graph, grp)
        if isinstance(m, SiteMatch):
            match_epilogue(graph, m, grp)
        matches[i] = m
    return SiteAnalysis(mod, legal, table, matches, {w.digest: w.id for op in table for w in op.weights})


def as_analysis(source: tvm.IRModule | SiteAnalysis) -> SiteAnalysis:
    return source if isinstance(source, SiteAnalysis) else analyze_sites(source)


@dataclass(frozen=True)
class SiteWeight:
    """The constant weight of a site the pass can lower, as the quantizer sees it.

    ``weight`` is what the quantizer is given: the graph layout (a Relax matmul weight is [K, N],
    channel_axis 1; a left operand ``W @ x`` is [N, K], channel_axis 0), except conv1d weights, given
    as ``[O, KW, I]`` (channel_axis 0: the conv kernels' tap-major reduction order, so int4 groups
    match the kernel's).
    ``digest`` equals the `WeightInfo.digest` of the fused graph (sites with one digest share it).
    ``fused`` lists the site's ops its kernel would compute (anchor, bias, crop, residual, activation).
    """

    site: int
    weight: np.ndarray = field(repr=False, compare=False)
    channel_axis: int
    digest: str
    op: str
    fused: tuple[str, ...]


def quantizable_sites(source: tvm.IRModule | SiteAnalysis) -> dict[int, SiteWeight]:
    """The sites of a loaded (unfused) module that the pass can lower to a kernel, with their weight.

    Site indices are those of ``fused_ops(fuse(model))``. Sites missing here stay fp32 whatever the
    plan says (`quantize` reports why).
    """
    an = as_analysis(source)
    return {
        i: SiteWeight(i, quantizer_view(m), m.channel_axis, m.weight_digest, m.op, tuple(m.fused))
        for i, m in an.matches.items()
        if isinstance(m, SiteMatch)
    }


def site_kernel(
    source: tvm.IRModule | SiteAnalysis,
    site: int,
    precision: str,
    target: str | TargetSpec = "x86",
    *,
    group_size: int = INT4_GROUP,
):
    """The kernel (``.func``, ``.name``) `quantize` would insert for ``site`` at ``precision``, or None when
    the site cannot be lowered. Same shapes, epilogue and ISA as in the built model."""
    if precision not in PRECISION_ORDER:
        raise PlanError(f"unknown precision {precision!r} (one of {', '.join(PRECISION_ORDER)})")
    match = as_analysis(source).matches.get(int(site))
    if not isinstance(match, SiteMatch):
        return None
    return kernel_for_site(
        kernel_set_for(get_target(target)), match, precision, ActQuant("dynamic"), group_size
    )


def expose_anchor_inputs(source: tvm.IRModule | SiteAnalysis, sites: list[int]) -> tvm.IRModule:
    """The legalized (unfused) module whose `main` returns ``(original result, x of site s for s in sites)``,
    where x is exactly the activation the site's anchor multiplies with its weight (the input a weight
    quantizer reconstructs against). Sites the pass cannot lower are refused."""
    from tvm_tqs.graph import with_extra_outputs

    an = as_analysis(source)
    flat = relax.transform.ToNonDataflow()(an.legal)
    main = flat["main"]
    bindings = [b for block in main.body.blocks for b in block.bindings]
    picked = []
    for site in sites:
        match = an.matches.get(site)
        if not isinstance(match, SiteMatch):
            raise TQSError(f"site {site} has no weighted anchor to read the input of")
        args = bindings[match.anchor.pos].value.args[1]
        fields = list(args.fields) if isinstance(args, relax.Tuple) else [args]
        picked.append(next(a for a in fields if not isinstance(a, Constant)))
    return with_extra_outputs(flat, picked)
