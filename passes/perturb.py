"""Runtime-controlled perturbation of fused call sites: the probe TQS scores a compiled graph with.

After fusion every call site ``k`` of ``main`` (the unit of every decision, see `tvm_tqs.graph.FusedOp`)
gets a small kernel behind it that adds ``scale[b, k] * rms_b(out_k) * noise[b]`` to batch row ``b`` of
the site's result (``output`` mode), or that reruns the site with perturbed weight constants for the rows
with ``scale[b, k] != 0`` (``weight`` mode). ``scale`` is a runtime input, so ONE compiled module perturbs
any site in any batch row, and rows with ``scale[b, k] == 0`` are copied through untouched: with
``scale == 0`` the module computes exactly what the unperturbed module computes, bit for bit.

The perturbation kernels are PrimFuncs of our own, called after the site's call and never fused into it:
the site's own PrimFunc is unchanged, so its numerics are those of the compiled graph. One kernel serves
every site with the same output shape and batch layout (the site index arrives as a tiny int64 tensor).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import tvm
from tvm import relax
from tvm.script import tirx as T

Constant = tvm.ir.expr.GenericConst

PERTURB_ATTR = "tvm_tqs.perturb"
SCALE_INPUT = "tqs_scale"
NOISE_INPUT = "tqs_noise"
DWEIGHT_INPUT = "tqs_dweight"
MODES = ("output", "weight")
# Stream tags mixed into the seed so that output noise, weight noise and contexts never share a stream.
NOISE_STREAM = {"output": 0x7A5_0001, "weight": 0x7A5_0002}


# ------------------------------------------------------------------------------------------------
# Batch layout of each site's result


@dataclass(frozen=True)
class FieldLayout:
    """Where the batch rows sit in one tensor result of a site.

    The tensor of shape `shape` is viewed as ``[pre, batch, inner]`` (row-major): the batch axis of the
    graph may be merged with neighbouring axes (``[batch * channels, ...]`` in channel-independent models)
    or moved (``[1, batch, hidden]`` RNN states), and this view covers both as long as the batch is the
    major factor of the axis it lives in. Row ``b`` is ``view[:, b, :]``, ``pre * inner`` elements.
    """

    shape: tuple[int, ...]
    pre: int
    inner: int
    merged: bool = False  # the batch shares its axis with other dims (its order there is assumed)

    @property
    def row_size(self) -> int:
        return self.pre * self.inner


@dataclass(frozen=True)
class SiteLayout:
    """The perturbable tensor results of one call site; `skipped` says why a site has none."""

    site: int
    fields: tuple[FieldLayout, ...]
    skipped: str | None = None

    @property
    def row_size(self) -> int:
        return max((f.row_size for f in self.fields), default=0)

    @property
    def merged(self) -> bool:
        return any(f.merged for f in self.fields)


def _tensor_types(ty) -> list:
    if isinstance(ty, relax.TupleType):
        return [t for field in ty.fields for t in _tensor_types(field)]
    return [ty]


def _shape(ty) -> tuple[int, ...]:
    return tuple(int(d) for d in ty.shape.values)


def _field_layout(shape: tuple[int, ...], probe: tuple[int, ...], batch: int, probe_batch: int):
    """Layout of a tensor whose shape is `shape` at `batch` and `probe` at `probe_batch`, or a reason."""
    if len(shape) != len(probe):
        return "its rank depends on the batch size"
    moved = [a for a, (s, p) in enumerate(zip(shape, probe, strict=True)) if s != p]
    if not moved:
        return "its result does not depend on the batch (one value shared by all rows)"
    if len(moved) > 1:
        return f"the batch is spread over axes {moved} of its result {list(shape)}"
    (axis,) = moved
    per_row, rem = divmod(shape[axis], batch)
    if rem or per_row * probe_batch != probe[axis]:
        return f"axis {axis} of its result {list(shape)} is not a multiple of the batch"
    pre = int(np.prod(shape[:axis], dtype=np.int64))
    inner = per_row * int(np.prod(shape[axis + 1 :], dtype=np.int64))
    return FieldLayout(shape, pre, inner, merged=per_row > 1)


def batch_layouts(mod: tvm.IRModule, batch: int, probe: tvm.IRModule, probe_batch: int) -> list[SiteLayout]:
    """Batch layout of every call site's result, found by comparing two fusions of the same model.

    Parameters
    ----------
    mod, probe : tvm.IRModule
        The same model fused at batch sizes `batch` and `probe_batch` (different). The axis whose size
        changes between them holds the batch; the graphs must have the same call sites.

    Returns
    -------
    list of SiteLayout
        One per call site of `mod`, in `call_sites` order. A site is skipped when none of its float
        results has exactly one batch-dependent axis (for example an integer index result).
    """
    from tvm_tqs.graph import call_sites

    if batch == probe_batch:
        raise ValueError("batch_layouts needs two different batch sizes")
    sites, probe_sites = call_sites(mod), call_sites(probe)
    if len(sites) != len(probe_sites):
        raise ValueError(
            f"the model fuses into {len(sites)} call sites at batch {batch} but {len(probe_sites)} at batch "
            f"{probe_batch}; its graph depends on the batch size, so batch rows cannot be located"
        )
    layouts = []
    for index, (b, p) in enumerate(zip(sites, probe_sites, strict=True)):
        fields, reasons = [], []
        for ty, probe_ty in zip(_tensor_types(b.var.ty), _tensor_types(p.var.ty), strict=True):
            if not str(ty.dtype).startswith("float"):
                reasons.append(f"its result is {ty.dtype}, not floating point")
                continue
            found = _field_layout(_shape(ty), _shape(probe_ty), batch, probe_batch)
            (fields if isinstance(found, FieldLayout) else reasons).append(found)
        skipped = None if fields else ("; ".join(dict.fromkeys(reasons)) or "it has no tensor result")
        layouts.append(SiteLayout(index, tuple(fields), skipped))
    return layouts


def whole_tensor_layouts(mod: tvm.IRModule) -> list[SiteLayout]:
    """Every call site's float results taken whole, as one row: the layouts of a module whose batch rows
    are not scored independently (each row of a scoring execution is then its own call of the module)."""
    from tvm_tqs.graph import call_sites

    layouts = []
    for index, b in enumerate(call_sites(mod)):
        fields, reasons = [], []
        for ty in _tensor_types(b.var.ty):
            if not str(ty.dtype).startswith("float"):
                reasons.append(f"its result is {ty.dtype}, not floating point")
                continue
            shape = _shape(ty)
            fields.append(FieldLayout(shape, 1, int(np.prod(shape, dtype=np.int64))))
        skipped = None if fields else ("; ".join(dict.fromkeys(reasons)) or "it has no tensor result")
        layouts.append(SiteLayout(index, tuple(fields), skipped))
    return layouts


# ------------------------------------------------------------------------------------------------
# The plan: what the runtime inputs mean


@dataclass(frozen=True)
class WeightSlot:
    """One weight constant of a site in weight mode: its slice of the flat ``tqs_dweight`` input."""

    arg: int  # position among the site's call arguments
    shape: tuple[int, ...]
    offset: int
    rms: float  # RMS of the constant, for relative perturbations

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class PerturbPlan:
    """How to drive a perturbed module: stored as JSON in its ``tvm_tqs.perturb`` attribute.

    ``main(*inputs, tqs_scale[batch, columns], tqs_noise[batch, noise_width])`` in output mode,
    ``main(*inputs, tqs_scale[batch, columns], tqs_dweight[dweight_size])`` in weight mode. Column ``k`` of
    the scale belongs to call site ``k`` of the unperturbed module (``FusedOp.index``); ``batch`` is the
    number of rows the perturbation tells apart (1 when every site's result is taken whole).
    """

    mode: Literal["output", "weight"]
    batch: int
    columns: int
    perturbable: tuple[int, ...]
    skipped: dict  # site index -> reason
    noise_width: int = 0  # output mode: noise values per row
    row_sizes: dict = dataclasses.field(default_factory=dict)  # output mode: site -> noise values it reads
    weights: dict = dataclasses.field(default_factory=dict)  # weight mode: site -> tuple of WeightSlot
    dweight_size: int = 0
    merged: tuple[int, ...] = ()  # sites whose batch axis is merged with other dims (layout assumed)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["skipped"] = {str(k): v for k, v in self.skipped.items()}
        d["row_sizes"] = {str(k): v for k, v in self.row_sizes.items()}
        d["weights"] = {str(k): [dataclasses.asdict(s) for s in v] for k, v in self.weights.items()}
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PerturbPlan:
        d = json.loads(text)
        d["perturbable"] = tuple(d["perturbable"])
        d["merged"] = tuple(d.get("merged", ()))
        d["skipped"] = {int(k): v for k, v in d["skipped"].items()}
        d["row_sizes"] = {int(k): v for k, v in d["row_sizes"].items()}
        d["weights"] = {
            int(k): tuple(WeightSlot(s["arg"], tuple(s["shape"]), s["offset"], s["rms"]) for s in v)
            for k, v in d["weights"].items()
        }
        return cls(**d)


def perturb_plan_of(mod: tvm.IRModule) -> PerturbPlan:
    """The plan `PerturbSites` attached to `mod`."""
    if mod.attrs is None or PERTURB_ATTR not in mod.attrs:
        raise ValueError("module has no perturbation plan: run passes.perturb.PerturbSites on it first")
    return PerturbPlan.from_json(str(mod.attrs[PERTURB_ATTR]))


# ------------------------------------------------------------------------------------------------
# The seeded noise


def noise_rng(seed: int, replicate: int, site: int, mode: str = "output") -> np.random.Generator:
    """The generator of the noise perturbing `site` in replicate `replicate` of a run seeded `seed`.

    ``numpy.random.Generator(PCG64(SeedSequence([seed, replicate, site, stream])))`` with ``stream`` a
    fixed tag per mode: every (seed, replicate, site) triple gets an independent stream, and a site's
    noise does not depend on which other sites are scored or how rows are batched.
    """
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([seed, replicate, site, NOISE_STREAM[mode]]))
    )


def site_noise(seed: int, replicate: int, site: int, size: int, mode: str = "output") -> np.ndarray:
    """`size` standard normal float32 values from `noise_rng` (the unit noise of one site and replicate)."""
    return noise_rng(seed, replicate, site, mode).standard_normal(size, dtype=np.float32)


# ------------------------------------------------------------------------------------------------
# Kernels (one per distinct shape and layout; shared by every site that has it)


def _output_kernel(shape, pre: int, batch: int, inner: int, columns: int, width: int, dtype: str):
    n = pre * batch * inner
    count = float(pre * inner)

    # Rows with scale == 0 are copied through; the others get scale * rms(row) * noise[row] added.
    # The sum of squares is accumulated in float32 in a fixed order, so the result is deterministic.
    @T.prim_func(private=True)
    def perturb_output(
        x: T.handle, scale: T.handle, noise: T.handle, column: T.Buffer((1,), "int64"), y: T.handle
    ):
        X = T.match_buffer(x, shape, dtype)
        Y = T.match_buffer(y, shape, dtype)
        S = T.match_buffer(scale, (batch, columns), "float32")
        N = T.match_buffer(noise, (batch, width), "float32")
        Xf = T.decl_buffer((n,), dtype, data=X.data)
        Yf = T.decl_buffer((n,), dtype, data=Y.data)
        acc = T.alloc_buffer((1,), "float32", scope="local")
        for b in range(batch):
            if S[b, column[0]] != T.float32(0):
                acc[0] = T.float32(0)
                for p, q in T.grid(pre, inner):
                    acc[0] = acc[0] + T.Cast("float32", Xf[(p * batch + b) * inner + q]) * T.Cast(
                        "float32", Xf[(p * batch + b) * inner + q]
                    )
                for p, q in T.grid(pre, inner):
                    Yf[(p * batch + b) * inner + q] = Xf[(p * batch + b) * inner + q] + T.Cast(
                        dtype, S[b, column[0]] * T.sqrt(acc[0] / T.float32(count)) * N[b, p * inner + q]
                    )
            else:
                for p, q in T.grid(pre, inner):
                    Yf[(p * batch + b) * inner + q] = Xf[(p * batch + b) * inner + q]

    return perturb_output


def _select_kernel(shape, pre: int, batch: int, inner: int, columns: int, dtype: str):
    n = pre * batch * inner

    # Row b comes from the perturbed call where scale[b, k] != 0, else from the reference call.
    @T.prim_func(private=True)
    def select_rows(
        ref: T.handle, alt: T.handle, scale: T.handle, column: T.Buffer((1,), "int64"), y: T.handle
    ):
        A = T.match_buffer(ref, shape, dtype)
        P = T.match_buffer(alt, shape, dtype)
        Y = T.match_buffer(y, shape, dtype)
        S = T.match_buffer(scale, (batch, columns), "float32")
        Af = T.decl_buffer((n,), dtype, data=A.data)
        Pf = T.decl_buffer((n,), dtype, data=P.data)
        Yf = T.decl_buffer((n,), dtype, data=Y.data)
        for b in range(batch):
            if S[b, column[0]] != T.float32(0):
                for p, q in T.grid(pre, inner):
                    Yf[(p * batch + b) * inner + q] = Pf[(p * batch + b) * inner + q]
            else:
                for p, q in T.grid(pre, inner):
                    Yf[(p * batch + b) * inner + q] = Af[(p * batch + b) * inner + q]

    return select_rows


def _add_slice_kernel(shape, total: int, dtype: str):
    n = int(np.prod(shape, dtype=np.int64))

    # W + dweight[offset : offset + W.size], reshaped: the perturbed copy of one weight constant.
    @T.prim_func(private=True)
    def add_weight_delta(w: T.handle, dweight: T.handle, offset: T.Buffer((1,), "int64"), y: T.handle):
        W = T.match_buffer(w, shape, dtype)
        D = T.match_buffer(dweight, (total,), "float32")
        Y = T.match_buffer(y, shape, dtype)
        Wf = T.decl_buffer((n,), dtype, data=W.data)
        Yf = T.decl_buffer((n,), dtype, data=Y.data)
        for i in range(n):
            Yf[i] = Wf[i] + T.Cast(dtype, D[offset[0] + i])

    return add_weight_delta


# ------------------------------------------------------------------------------------------------
# The pass


def _index_const(value: int) -> relax.Expr:
    return relax.const(np.array([value], dtype=np.int64), "int64")


def _weight_slots(call: relax.Call, start: int) -> tuple[WeightSlot, ...]:
    args = call.args[1]
    arg_list = list(args.fields) if isinstance(args, relax.Tuple) else [args]
    slots, offset = [], start
    for position, arg in enumerate(arg_list):
        if isinstance(arg, Constant) and str(arg.value.dtype).startswith("float"):
            value = arg.value.numpy().astype(np.float64)
            slot = WeightSlot(
                position, tuple(int(s) for s in value.shape), offset, float(np.sqrt(np.mean(value**2)))
            )
            slots.append(slot)
            offset += slot.size
    return tuple(slots)


@relax.expr_functor.mutator
class _Inserter(relax.PyExprMutator):
    """Re-emits `main`, adding the perturbation kernels after every planned call site."""

    def __init__(
        self, mod, plan: PerturbPlan, layouts: dict, site_of: dict, scale: relax.Var, noise: relax.Var, select
    ):
        super().__init__(mod)
        self.plan, self.layouts, self.site_of, self.select = plan, layouts, site_of, select
        self.scale, self.noise = scale, noise
        self.kernels: dict = {}
        self.in_dataflow = False

    def kernel(self, make, *args) -> relax.GlobalVar:
        """The PrimFunc `make(*args)`, added to the module once per distinct (make, args)."""
        key = (make.__name__, *args)
        if key not in self.kernels:
            name = (
                make.__name__.replace("_", "", 1).replace("_kernel", "")
                + "_"
                + "x".join(str(s) for s in args[0])
            )
            self.kernels[key] = self.builder_.add_func(make(*args), f"tqs_{name}")
        return self.kernels[key]

    def visit_dataflow_block_(self, block):
        self.in_dataflow = True
        try:
            return super().visit_dataflow_block_(block)
        finally:
            self.in_dataflow = False

    def visit_var_binding_(self, binding):
        site = self.site_of.get(binding.var)
        if site is None or site not in self.layouts:
            return super().visit_var_binding_(binding)
        bb = self.builder_
        value = self.visit_expr(binding.value)
        if not self.select:  # the site's one call reads the perturbed constants
            perturbed = self._perturb_weights(value, None, site)
        else:
            ref = bb.emit(value, name_hint=f"{binding.var.name}_ref")
            perturbed = (
                self._perturb_weights(value, ref, site)
                if self.plan.mode == "weight"
                else self._perturb_outputs(ref, site)
            )
        if not isinstance(binding.var, relax.DataflowVar) and self.in_dataflow:
            result = bb.emit_output(
                perturbed, name_hint=binding.var.name
            )  # the site's result leaves the block
        elif isinstance(perturbed, relax.Var):
            result = perturbed
        else:
            result = bb.emit(perturbed, name_hint=binding.var.name)
        self.set_var_remap(binding.var, result)

    def _fields(self, var: relax.Var) -> list:
        if isinstance(var.ty, relax.TupleType):
            return [self.builder_.emit(relax.TupleGetItem(var, i)) for i in range(len(var.ty.fields))]
        return [var]

    def _layout(self, site: int, ty) -> FieldLayout | None:
        if isinstance(ty, relax.TupleType) or not str(ty.dtype).startswith("float"):
            return None
        return {f.shape: f for f in self.layouts[site].fields}.get(_shape(ty))

    def _perturb_outputs(self, ref: relax.Var, site: int):
        plan, out = self.plan, []
        for field in self._fields(ref):
            layout = self._layout(site, field.ty)
            if layout is None:
                out.append(field)
                continue
            dtype = str(field.ty.dtype)
            gv = self.kernel(
                _output_kernel,
                layout.shape,
                layout.pre,
                plan.batch,
                layout.inner,
                plan.columns,
                plan.noise_width,
                dtype,
            )
            args = [field, self.scale, self.noise, _index_const(site)]
            out.append(self.builder_.emit(relax.call_tir(gv, args, relax.TensorType(layout.shape, dtype))))
        return relax.Tuple(out) if isinstance(ref.ty, relax.TupleType) else out[0]

    def _perturb_weights(self, value: relax.Call, ref: relax.Var, site: int):
        plan, bb = self.plan, self.builder_
        args = value.args[1]
        arg_list = list(args.fields) if isinstance(args, relax.Tuple) else [args]
        for slot in plan.weights[site]:
            const = arg_list[slot.arg]
            dtype = str(const.value.dtype)
            gv = self.kernel(_add_slice_kernel, slot.shape, plan.dweight_size, dtype)
            delta_args = [const, self.noise, _index_const(slot.offset)]
            arg_list[slot.arg] = bb.emit(relax.call_tir(gv, delta_args, relax.TensorType(slot.shape, dtype)))
        ty = value.ty if ref is None else ref.ty
        out_ty = list(ty.fields) if isinstance(ty, relax.TupleType) else ty
        # The same PrimFunc as the site, on the perturbed constants: the site's numerics are unchanged.
        alt = bb.emit(relax.call_tir(value.args[0], relax.Tuple(arg_list), out_ty), name_hint="perturbed")
        if ref is None:
            return alt
        out = []
        for field, alt_field in zip(self._fields(ref), self._fields(alt), strict=True):
            layout = self._layout(site, field.ty)
            if layout is None:
                out.append(field)
                continue
            dtype = str(field.ty.dtype)
            gv = self.kernel(
                _select_kernel, layout.shape, layout.pre, plan.batch, layout.inner, plan.columns, dtype
            )
            args = [field, alt_field, self.scale, _index_const(site)]
            out.append(bb.emit(relax.call_tir(gv, args, field.ty)))
        return relax.Tuple(out) if isinstance(ref.ty, relax.TupleType) else out[0]


@tvm.transform.module_pass(opt_level=0, name="PerturbSites")
class PerturbSites:
    """Insert a runtime-controlled perturbation after each fused call site of ``main``.

    Output mode (black box, any float result): for batch row ``b`` and site ``k`` with
    ``s = tqs_scale[b, k] != 0``, the site's result row ``r`` (all its elements in that batch row) becomes
    ``r + s * rms(r) * tqs_noise[b, :r.size]``: a relative perturbation of size ``s`` (the noise is unit
    Gaussian, see `site_noise`), scaled at run time to the site's current magnitude in that row. A site with
    several results perturbs each with the same noise row. Rows with ``s == 0`` are copied unchanged.

    Weight mode (sites with float constants): the site is called a second time with every float constant
    ``W`` it reads replaced by ``W + tqs_dweight[offset : offset + W.size]`` (offsets in the plan), and rows
    with ``tqs_scale[b, k] != 0`` take that call's result. The weight delta is one tensor per site, shared
    by the rows that select it; the caller writes ``eps * rms(W) * noise`` (or a quantization error) there.
    A weight-mode module computes every weighted site twice; with ``select=False`` (batch 1, one row per
    call) it computes each once, on ``W + tqs_dweight[...]`` whatever the scale, and the caller zeroes the
    slots of the sites it does not perturb (``W + 0`` is ``W``).

    Parameters
    ----------
    layouts : sequence of SiteLayout
        From `batch_layouts` (the batch layout of every call site, in `call_sites` order).
    mode : {"output", "weight"}
    sites : sequence of int, optional
        Sites to perturb (default: every site that can be). Columns of ``tqs_scale`` stay one per call site.
    batch : int, optional
        Rows of ``tqs_scale`` (default: the first input's batch); 1 with `whole_tensor_layouts`.
    select : bool
        Weight mode: keep the reference call and the row select (default). False halves the work of a
        module that runs one row per call (the calls path).
    """

    def __init__(
        self,
        layouts: Sequence[SiteLayout],
        mode: str = "output",
        sites: Sequence[int] | None = None,
        batch: int | None = None,
        select: bool = True,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.layouts = list(layouts)
        self.mode = mode
        self.sites = None if sites is None else sorted(set(int(s) for s in sites))
        self.batch = batch
        self.select = select

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        from tvm_tqs.graph import call_sites

        bindings = call_sites(mod)
        if len(bindings) != len(self.layouts):
            raise ValueError(f"{len(self.layouts)} layouts for a module with {len(bindings)} call sites")
        main = mod["main"]
        params = list(main.params)
        batch = self.batch if self.batch is not None else int(params[0].ty.shape.values[0])
        wanted = set(range(len(bindings))) if self.sites is None else set(self.sites)
        skipped: dict[int, str] = {}
        layouts: dict[int, SiteLayout] = {}
        weights: dict[int, tuple[WeightSlot, ...]] = {}
        offset = 0
        for layout, binding in zip(self.layouts, bindings, strict=True):
            k = layout.site
            if k not in wanted:
                continue
            if layout.skipped:
                skipped[k] = layout.skipped
                continue
            if self.mode == "weight":
                slots = _weight_slots(binding.value, offset)
                if not slots:
                    skipped[k] = "it reads no float weight constant"
                    continue
                weights[k] = slots
                offset += sum(s.size for s in slots)
            layouts[k] = layout
        perturbable = tuple(sorted(layouts))
        plan = PerturbPlan(
            mode=self.mode,
            batch=batch,
            columns=len(bindings),
            perturbable=perturbable,
            skipped=skipped,
            noise_width=max((layouts[k].row_size for k in perturbable), default=1)
            if self.mode == "output"
            else 0,
            row_sizes={k: layouts[k].row_size for k in perturbable} if self.mode == "output" else {},
            weights=weights,
            dweight_size=max(offset, 1) if self.mode == "weight" else 0,
            merged=tuple(k for k in perturbable if layouts[k].merged),
        )
        scale = relax.Var(SCALE_INPUT, relax.TensorType((batch, plan.columns), "float32"))
        if self.mode == "output":
            noise = relax.Var(NOISE_INPUT, relax.TensorType((batch, plan.noise_width), "float32"))
        else:
            noise = relax.Var(DWEIGHT_INPUT, relax.TensorType((plan.dweight_size,), "float32"))

        site_of = {b.var: i for i, b in enumerate(bindings)}
        inserter = _Inserter(mod, plan, layouts, site_of, scale, noise, self.select or self.mode != "weight")
        body = inserter.visit_expr(main.body)
        attrs = dict(main.attrs) if main.attrs is not None else {}
        attrs["num_input"] = len(params) + 2
        new_main = relax.Function(
            [*params, scale, noise],
            body,
            main.ret_ty,
            main.is_pure,
            tvm.ir.make_node("ir.DictAttrs", **attrs),
        )
        built = inserter.builder_.get()
        # A fresh, correctly typed GlobalVar for the new main (the old one's type has one parameter).
        rest = tvm.IRModule({gv: f for gv, f in built.functions.items() if gv.name_hint != "main"})
        builder = relax.BlockBuilder(rest)
        builder.add_func(new_main, "main")
        out = relax.transform.DeadCodeElimination(["main"])(builder.get())
        attrs = {k: v for k, v in (mod.attrs or {}).items()}
        attrs[PERTURB_ATTR] = plan.to_json()
        return out.with_attrs(attrs)
