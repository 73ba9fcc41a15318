"""Schedules of the GEMM kernels: tile ``out``, compute the register-tile accumulators at each tile.

``out`` is tiled and ``acc``/``acc_f`` are computed at each tile in ``local`` scope (``mr`` x ``nr``
intrinsic tiles, kept in registers by LLVM), so the epilogue reads the accumulators straight from
registers; the tile loop over (batch, M, N) is parallel when the problem is big enough.

GPU flavours (``isa.gpu``) use the same structure with a 1 x 1 tile: the tile loop is bound to
``blockIdx.x`` / ``threadIdx.x`` (one output per thread, its accumulator in a register), and every
other stage (scales, quantized activations) gets its spatial loops bound the same way: a GPU kernel
has no loop left to run on the host.
"""

from __future__ import annotations

from tvm import tirx

from .config import Isa, Tiling
from .sources import Source
from .tiling import divisor_at_most

__all__ = ["act_free", "bind_root_blocks", "schedule_fp32", "schedule_int"]


def _vectorize_inner(sch, block, width: int) -> None:
    """Vectorize the innermost loop of ``block`` by ``width`` lanes when it divides evenly."""
    loops = sch.get_loops(block)
    inner = loops[-1]
    extent = sch.get(inner).extent
    if not isinstance(extent, tirx.IntImm) or extent.value < 2:
        return
    e = int(extent.value)
    if e % width == 0 and e > width:
        _, inner = sch.split(inner, [None, width])
        sch.vectorize(inner)
    elif e <= width:
        sch.vectorize(inner)


def _bind_threads(sch, loop, threads: int) -> list:
    """Split ``loop`` into (blockIdx.x, threadIdx.x) with ``threads`` threads per block."""
    extent = sch.get(loop).extent
    if isinstance(extent, tirx.IntImm) and int(extent) < threads:
        threads = max(1, int(extent))
    bx, tx = sch.split(loop, [None, threads])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    return [bx, tx]


def _bind_tile(sch, tile: list, threads: int) -> list:
    """Bind a (..., rows, columns) tile nest: columns to (blockIdx.x, threadIdx.x), the rest fused to
    blockIdx.y. Rows and columns stay separate loops so the block bindings stay affine (a fused
    row-column loop needs div/mod, which tensorize cannot blockize)."""
    *outer, cols = tile
    extent = sch.get(cols).extent
    if isinstance(extent, tirx.IntImm):  # no tail block: a split predicate defeats tensorize
        threads = divisor_at_most(int(extent), threads)
    bound = _bind_threads(sch, cols, threads)
    if not outer:
        return bound
    by = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    sch.bind(by, "blockIdx.y")
    return [by, *bound]


def bind_root_blocks(sch, threads: int) -> None:
    """Bind the spatial loops of every block not yet under a thread binding (GPU kernels).

    A block's leading loops that carry its spatial axes are fused and bound; its reduction loops run
    serially inside the thread (TE blocks at the root keep spatial loops outside reduction loops).
    """
    root = sch.get_sblock("root")
    for block in sch.get_child_blocks(root):
        loops = sch.get_loops(block)
        if loops and sch.get(loops[0]).thread_binding is not None:
            continue
        spatial = sum(1 for iv in sch.get(block).iter_vars if iv.iter_type == tirx.IterVar.DataPar)
        lead = loops[:spatial]
        if not lead:
            lead = [sch.add_unit_loop(block)]
        _bind_threads(sch, sch.fuse(*lead) if len(lead) > 1 else lead[0], threads)


def _tile_out(sch, src: Source, rows: int, cols: int):
    """Tile the ``out`` block into (batch, M/rows, N/cols | rows, cols); returns (out, tile loops)."""
    out = sch.get_sblock("out")
    loops = dict(zip(src.out_roles, sch.get_loops(out), strict=True))
    mo, mi = sch.split(loops["m"], [None, rows])
    no, ni = sch.split(loops["n"], [None, cols])
    units = [lp for role, lp in loops.items() if role.startswith("u")]  # unit leading dims (N-d dense)
    tile = units + ([loops["b"]] if "b" in loops else []) + [mo, no]
    sch.reorder(*tile, mi, ni)
    return out, tile


def _schedule_im2col(sch, isa: Isa, src: Source) -> None:
    """conv1d: the im2col quantization ``x_q`` vectorized along the channels of one tap (contiguous
    in ``x_t`` and in ``x_q``: kk = kw * Cin + ci), or along the taps when Cin = 1."""
    spec = src.conv
    if spec is None or isa.family != "bcast":
        return
    xq = sch.get_sblock("x_q")
    b, i, kk = sch.get_loops(xq)
    kp = int(sch.get(kk).extent)
    cin = spec.in_channels
    if cin >= 4 and kp % cin == 0:
        sch.split(kk, [None, cin])
        _vectorize_inner(sch, xq, 16)
    elif cin == 1:
        _vectorize_inner(sch, xq, 16)


def act_free(sch) -> bool:
    """True when the kernel has no dynamic-scale stage (static / int8 activations)."""
    try:
        sch.get_sblock("x_amax")
    except Exception:  # noqa: BLE001
        return True
    return False


def _schedule_amax(sch, src: Source) -> None:
    """Dynamic scales: vectorize the lane-wise partial absmax (its k loop outside the lanes); for a
    conv, the per-position absmax over channels (NCW: positions contiguous, vectorized inside the
    channel loop, left to LLVM: TIR cannot vectorize a loop under a reduction loop)."""
    if src.conv is not None:
        if act_free(sch):
            return
        pos = sch.get_sblock("x_pamax")
        b, p, rc = sch.get_loops(pos)
        if src.conv.layout == "NCW":  # positions innermost: a unit-stride loop LLVM vectorizes
            sch.reorder(b, rc, p)
            sch.decompose_reduction(pos, rc)
        return
    try:
        part = sch.get_sblock("x_amax_part")
    except Exception:  # noqa: BLE001 - no such stage (static/int8 modes, strided conv input)
        return
    b, i, lane, ko = sch.get_loops(part)
    sch.reorder(b, i, ko, lane)
    sch.vectorize(lane)


def schedule_int(sch, isa: Isa, bits: int, til: Tiling, src: Source, intrin: str) -> None:
    """Epilogue-driven schedule: tile ``out``, compute the int32 register tile at each tile.

    The quantized activations (and the dynamic scales) are computed once, at the root; each
    (row-tile, n-tile) computes its accumulators in ``local`` scope with the intrinsic and applies
    the epilogue straight from them.
    """
    if not isa.gpu:
        _schedule_amax(sch, src)
        _schedule_im2col(sch, isa, src)
    elif not act_free(sch):
        # the scale is recomputed by its two readers: as its own kernel, storage reuse would run it in
        # place (one workspace behind two `restrict` pointers, undefined in OpenCL C and CUDA)
        sch.compute_inline(sch.get_sblock("x_scale"))
    out, tile = _tile_out(sch, src, til.mr * isa.mt, til.nr * isa.nt)
    no = tile[-1]
    acc = sch.get_sblock("acc")
    owner = acc if bits == 8 else sch.get_sblock("acc_f")
    sch.compute_at(owner, no, preserve_unit_loops=True)
    if isa.gpu:
        tile = _bind_tile(sch, tile, isa.gpu_threads)
    else:
        fused = sch.fuse(*tile)
        if til.parallel:  # before decompose/tensorize: parallel needs reduction blocks with their init
            sch.parallel(fused)
        tile = [fused]
    loops = sch.get_loops(owner)[len(tile) :]
    # loops of the register-tile owner under the tile: unit batch loop, spatial, then reduction
    if isa.family == "mmla":
        ub, mb, nb, r, c, *red = loops
        spatial = [mb, nb, r, c]
    elif isa.family == "rowdot":
        ub, i, j, *rest = loops
        spatial = [i, j, rest[0]] if bits == 8 else [i, j]
        red = rest[1:] if bits == 8 else rest
    else:
        ub, i, j, *red = loops
        spatial = [i, j]

    if bits == 8:
        plan = _order_acc(sch, isa, spatial, red, unit=[ub])
        _finish_acc(sch, isa, acc, *plan, intrin)
    else:
        (g,) = red
        sch.reorder(ub, g, *spatial)
        sch.compute_at(acc, g, preserve_unit_loops=True)
        sch.set_scope(owner, 0, "local")
        _vectorize_inner(sch, owner, {"bcast": isa.nt, "mmla": 2, "rowdot": 4}[isa.family])
        sch.decompose_reduction(owner, g)
        aloops = sch.get_loops(acc)[len(tile) + 2 :]
        if isa.family == "mmla":
            ab, amb, ag, anb, ar, ac, ak = aloops
            plan = _order_acc(sch, isa, [amb, anb, ar, ac], [ak], unit=[ab, ag])
        elif isa.family == "rowdot":
            ab, ai, ag, aj, al, akc, akh, akj = aloops
            plan = _order_acc(sch, isa, [ai, aj, al], [akc, akh, akj], unit=[ab, ag])
        else:
            ab, ai, ag, aj, ak = aloops
            plan = _order_acc(sch, isa, [ai, aj], [ak], unit=[ab, ag])
        _finish_acc(sch, isa, acc, *plan, intrin)

    if src.out_roles[-1] == "m":  # NCW conv: store along positions (contiguous), not channels
        mi, ni = sch.get_loops(out)[-2:]
        sch.reorder(ni, mi)
        _vectorize_inner(sch, out, 16)
    else:
        _vectorize_inner(sch, out, isa.nt if isa.family == "bcast" else 4)
    if isa.gpu:
        bind_root_blocks(sch, isa.gpu_threads)


def _order_acc(sch, isa: Isa, spatial_inner, red, unit=()):
    """Order (tile, unit loops, k-outer, row tiles, n-blocks, intrinsic tile); returns what to finish."""
    if isa.family == "bcast":
        mi, ni = spatial_inner
        nio, nii = sch.split(ni, [None, isa.nt])
        (k,) = red
        ko, ki = sch.split(k, [None, isa.kt])
        sch.reorder(*unit, ko, mi, nio, nii, ki)
        return ko, [mi, nio], ki if isa.gpu else nii  # GPU: a one-column tile, tensorize the k lanes
    if isa.family == "mmla":
        mi, ni, r, c = spatial_inner
        (k,) = red
        ko, ki = sch.split(k, [None, 8])
        sch.reorder(*unit, ko, mi, ni, r, c, ki)
        return ko, [mi, ni], r
    mi, ni, lane = spatial_inner
    kc, kh, kj = red
    sch.reorder(*unit, kc, mi, ni, lane, kh, kj)
    return kc, [mi, ni], lane


def _finish_acc(sch, isa: Isa, acc, ko, unroll, tensor_loop, intrin: str) -> None:
    """Accumulators to local scope, init hoisted out of the k loop, tensorize, unroll the tile."""
    sch.set_scope(acc, 0, "local")
    init = sch.decompose_reduction(acc, ko)
    if intrin:  # OpenCL has none: plain integer multiply-adds
        sch.tensorize(tensor_loop, intrin)
    for loop in unroll:
        sch.unroll(loop)
    _vectorize_inner(sch, init, isa.nt if isa.family == "bcast" else 4)


def schedule_fp32(sch, isa: Isa, til: Tiling, src: Source) -> None:
    """fp32 GEMM: ``mr`` rows x ``nr`` vectors of accumulators per tile, K outermost in the tile."""
    lanes = isa.fp32_lanes
    out, tile = _tile_out(sch, src, til.mr, til.nr * lanes)
    acc = sch.get_sblock("acc")
    sch.compute_at(acc, tile[-1], preserve_unit_loops=True)
    if isa.gpu:  # one output per thread, the accumulator in a register
        _bind_tile(sch, tile, isa.gpu_threads)
        k = sch.get_loops(acc)[-1]
        sch.set_scope(acc, 0, "local")
        sch.decompose_reduction(acc, k)
        bind_root_blocks(sch, isa.gpu_threads)
        return
    fused = sch.fuse(*tile)
    if til.parallel:
        sch.parallel(fused)
    ub, i, j, k = sch.get_loops(acc)[1:]
    jo, ji = sch.split(j, [None, lanes])
    sch.reorder(ub, k, i, jo, ji)
    sch.set_scope(acc, 0, "local")
    sch.vectorize(ji)
    sch.unroll(i)
    sch.unroll(jo)
    sch.decompose_reduction(acc, k)
    _vectorize_inner(sch, out, lanes if src.out_roles[-1] == "n" else 4)
