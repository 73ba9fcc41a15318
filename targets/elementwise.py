"""CPU schedule for the ops the quantize pass leaves as ordinary ops: fast math + vectorized loops.

TVM's default CPU pipeline emits every elementwise PrimFunc as scalar loops, and `exp`, `sigmoid`,
`tanh`, `erf` become calls to the C library, one element at a time: the recurrent gate math of an
unrolled LSTM/GRU then costs more than its matmuls. Two rewrites, applied by
`tvm_tqs.targets.build.schedule` to every PrimFunc that is not a kernel:

* `fast_math`: float32 ``exp``/``sigmoid``/``tanh``/``erf`` become branch-free polynomial/rational
  approximations (Cephes ``expf`` with a two-constant range reduction; the Eigen/TVM ``fast_tanh``
  and ``fast_erf`` rationals, inputs clamped to [-9, 9] and [-4, 4]): plain arithmetic that
  vectorizes. Max abs error vs float64: sigmoid 1.2e-7, tanh 3e-7, erf 3e-7, exp 2 ulp relative.
* `vectorize`: in a purely spatial (no reduction) PrimFunc, producer blocks are inlined into their
  consumers and each remaining loop nest is fused and vectorized (16 / 8 / 4 lanes, whatever divides
  the extent).

Both are applied best effort: a function the schedule cannot handle is left as it was.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import s_tir, tirx

__all__ = ["fast_math", "vectorize"]

_F32 = "float32"


def _c(v: float):
    return tirx.const(v, _F32)


def _let(value, body_fn):
    var = tirx.Var("fm", _F32)
    return tirx.Let(var, value, body_fn(var))


def _clamp(x, lo: float, hi: float):
    return tirx.max(tirx.min(x, _c(hi)), _c(lo))


def fast_exp(x):
    """Cephes expf: 2^n * P(f), n = round(x log2 e), f = x - n ln2 (ln2 split in two constants)."""
    p = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)

    def body(xc):
        def with_n(n):
            def with_f(f):
                y = _c(p[0])
                for coef in p[1:]:
                    y = y * f + _c(coef)
                y = y * (f * f) + f + _c(1.0)
                bits = tirx.shift_left(
                    tirx.Cast("int32", n) + tirx.const(127, "int32"), tirx.const(23, "int32")
                )
                return tirx.reinterpret(_F32, bits) * y

            return _let(xc - n * _c(0.693359375) + n * _c(2.12194440e-4), with_f)

        return _let(tirx.floor(xc * _c(1.44269504088896341) + _c(0.5)), with_n)

    return _let(_clamp(x, -87.33654475, 88.02969193), body)


def fast_sigmoid(x):
    return _c(1.0) / (_c(1.0) + fast_exp(_c(0.0) - x))


def _odd_rational(x, bound: float, alpha, beta):
    """x * P(x^2) / Q(x^2) (Horner, highest coefficient first) with x clamped to [-bound, bound]."""

    def body(xc):
        def with_x2(x2):
            p = _c(alpha[0])
            for coef in alpha[1:]:
                p = p * x2 + _c(coef)
            q = _c(beta[0])
            for coef in beta[1:]:
                q = q * x2 + _c(coef)
            return xc * p / q

        return _let(xc * xc, with_x2)

    return _let(_clamp(x, -bound, bound), body)


def fast_tanh(x):
    """Rational approximation (Eigen's, as TVM's fast_tanh), input clamped to [-9, 9]."""
    alpha = (
        -2.76076847742355e-16,
        2.00018790482477e-13,
        -8.60467152213735e-11,
        5.12229709037114e-08,
        1.48572235717979e-05,
        6.37261928875436e-04,
        4.89352455891786e-03,
    )
    beta = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03)

    return _odd_rational(x, 9.0, alpha, beta)


def fast_erf(x):
    """Rational approximation (Eigen's, as TVM's fast_erf), input clamped to [-4, 4]."""
    alpha = (
        -2.72614225801306e-10,
        2.77068142495902e-08,
        -2.10102402082508e-06,
        -5.69250639462346e-05,
        -7.34990630326855e-04,
        -2.95459980854025e-03,
        -1.60960333262415e-02,
    )
    beta = (
        -1.45660718464996e-05,
        -2.13374055278905e-04,
        -1.68282697438203e-03,
        -7.37332916720468e-03,
        -1.42647390514189e-02,
    )

    return _odd_rational(x, 4.0, alpha, beta)


_FAST = {"tirx.exp": fast_exp, "tirx.sigmoid": fast_sigmoid, "tirx.tanh": fast_tanh, "tirx.erf": fast_erf}


def fast_math(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """Replace float32 exp / sigmoid / tanh / erf calls in ``func`` by the approximations above."""
    changed = []

    def rewrite(call):
        op = call.op
        if isinstance(op, tvm.ir.Op) and op.name in _FAST and str(call.ty) == _F32 and len(call.args) == 1:
            changed.append(op.name)
            return _FAST[op.name](call.args[0])
        return call

    out = tvm_ffi.structural_map(func, (tvm.ir.expr.Call, rewrite))
    return out if changed else func


def _blocks(sch: s_tir.Schedule) -> list[str]:
    names: list[str] = []
    tvm_ffi.structural_walk(sch.mod["main"].body, [(s_tir.SBlock, lambda b: names.append(b.name_hint))])
    return [n for n in names if n != "root"]


def _select_loop(sch: s_tir.Schedule, block, loops, max_unroll: int = 256):
    """The loop whose variable alone decides a chain of ``if_then_else`` selects (a concatenate).

    TVM lowers ``concat`` of n inputs to ``out[i] = i >= c_{n-1} ? x_{n-1}[..] : (i >= c_{n-2} ? ..)``,
    evaluated per element: O(n) per output. Unrolled over that axis, each copy's conditions are
    constants and fold, leaving n straight (vectorizable) copies.
    """
    stmt = sch.get(block)
    iter_vars = [iv.var for iv in stmt.iter_vars]
    conds: list = []

    def visit(call):
        if isinstance(call.op, tvm.ir.Op) and call.op.name in ("prim.if_then_else", "tirx.if_then_else"):
            conds.append(call.args[0])

    tvm_ffi.structural_walk(stmt.body, [(tvm.ir.expr.Call, visit)])
    if len(conds) < 3:
        return None
    used = set()
    for cond in conds:
        tvm_ffi.structural_walk(
            cond, [(tirx.Var, lambda v: used.update(i for i, iv in enumerate(iter_vars) if iv.same_as(v)))]
        )
    if len(used) != 1 or len(loops) != len(iter_vars):
        return None
    loop = loops[used.pop()]
    extent = sch.get(loop).extent
    if not isinstance(extent, tirx.IntImm) or int(extent.value) > max_unroll:
        return None
    return loop


def vectorize(func: tirx.PrimFunc, max_lanes: int = 16) -> tirx.PrimFunc:
    """Inline the producers of a purely spatial PrimFunc and vectorize each remaining loop nest."""
    sch = s_tir.Schedule(func)
    names = _blocks(sch)
    if not names:
        return func
    for name in names:
        if any(iv.iter_type != tirx.IterVar.DataPar for iv in sch.get(sch.get_sblock(name)).iter_vars):
            return func  # reductions are ReductionLoopOrder's business
    try:
        scratch = list(sch.get(sch.get_sblock("root")).alloc_buffers)
    except Exception:  # noqa: BLE001 - no root block: nothing to inline
        scratch = []
    for name in names:
        block = sch.get(sch.get_sblock(name))
        if not all(any(w.source.same_as(b) for b in scratch) for w in block.writes):
            continue  # writes a parameter: an output block, never inlined
        rv = sch.get_sblock(name)
        if _select_loop(sch, rv, sch.get_loops(rv)) is not None:
            continue  # a concatenate stays a block of its own (unrolled below)
        try:
            sch.compute_inline(sch.get_sblock(name))
        except Exception:  # noqa: BLE001 - not inlinable (e.g. read with a different index): keep it
            pass
    done = False
    for name in _blocks(sch):
        block = sch.get_sblock(name)
        loops = sch.get_loops(block)
        if not loops:
            continue
        select = _select_loop(sch, block, loops)
        if select is not None:  # concatenate: unroll the selecting loop, the if-chain folds away
            var = sch.get(select).loop_var
            rest = [lp for lp in loops if not sch.get(lp).loop_var.same_as(var)]
            sch.reorder(select, *rest)
            sch.unroll(select)
            loops = [lp for lp in sch.get_loops(block) if not sch.get(lp).loop_var.same_as(var)]
            if not loops:
                done = True
                continue
        fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
        extent = sch.get(fused).extent
        if not isinstance(extent, tirx.IntImm):
            continue
        n = int(extent.value)
        lanes = next((v for v in (max_lanes, 8, 4) if v <= max_lanes and n % v == 0), None)
        if lanes is None or n < 4:
            continue
        if n > lanes:
            _, inner = sch.split(fused, [None, lanes])
        else:
            inner = fused
        sch.vectorize(inner)
        done = True
    return sch.mod["main"] if done else func
