"""The fused-op table: one `FusedOp` per call site in the compiled graph's `main` (the unit of every decision)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import tvm
import tvm_ffi
from tvm import relax, tirx

from tvm_tqs.passes.fuse import OP_KINDS_ATTR, fuse_pipeline
from tvm_tqs.targets.registry import TargetSpec, get_target

from .frontend.load import InputShapes, ModelLike, load

Constant = tvm.ir.expr.GenericConst  # TVM 0.27 has no relax.Constant; relax.const() builds these

# Anchor op of a fused op: the first of these kinds found inside it, else its first kind.
_ANCHOR_PRIORITY = (
    "conv1d",
    "conv2d",
    "conv1d_transpose",
    "matmul",
    "dense",
    "attention",
    "layer_norm",
    "rms_norm",
    "group_norm",
    "softmax",
    "mean",
    "sum",
    "variance",
)


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class WeightInfo:
    """A constant a fused op reads. Sites that read equal constants share an `id` (same weight)."""

    id: str
    shape: tuple[int, ...]
    dtype: str
    size: int
    digest: str

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class FusedOp:
    """One call site of a fused PrimFunc in `main`, keyed by its position `index`.

    One PrimFunc may serve several sites (an unrolled LSTM calls the same step kernel at every time
    step), so `func` is not a key; `index` is.
    """

    index: int
    name: str
    func: str
    kinds: tuple[str, ...]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    weights: tuple[WeightInfo, ...]
    macs: int
    func_hash: str

    @property
    def anchor(self) -> str:
        for kind in _ANCHOR_PRIORITY:
            if kind in self.kinds:
                return kind
        return self.kinds[0] if self.kinds else self.func

    @property
    def weight_size(self) -> int:
        return sum(w.size for w in self.weights)

    def to_dict(self) -> dict:
        """JSON-ready dict (lists, not tuples), with the derived `anchor` added."""
        d = json.loads(json.dumps(dataclasses.asdict(self)))
        d["anchor"] = self.anchor
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FusedOp:
        """Inverse of `to_dict` (the derived `anchor` is ignored)."""

        def tensors(items):
            return tuple(TensorInfo(tuple(t["shape"]), t["dtype"]) for t in items)

        return cls(
            index=d["index"],
            name=d["name"],
            func=d["func"],
            kinds=tuple(d["kinds"]),
            inputs=tensors(d["inputs"]),
            outputs=tensors(d["outputs"]),
            weights=tuple(
                WeightInfo(w["id"], tuple(w["shape"]), w["dtype"], w["size"], w["digest"])
                for w in d["weights"]
            ),
            macs=d["macs"],
            func_hash=d["func_hash"],
        )


def fuse(model: ModelLike, input_shapes: InputShapes | None = None, *, rollout=None) -> tvm.IRModule:
    """Load `model` and run the fusion pipeline: the compiled graph every other stage works on."""
    mod = load(model, input_shapes, rollout=rollout)
    if is_fused(mod):
        return mod
    return fuse_pipeline()(mod)


def is_fused(mod: tvm.IRModule) -> bool:
    return any(
        isinstance(f, tirx.PrimFunc) and f.attrs is not None and OP_KINDS_ATTR in f.attrs
        for _, f in mod.functions.items()
    )


def call_sites(mod: tvm.IRModule) -> list[relax.VarBinding]:
    """The bindings of `main` whose value is a `call_tir`, in program order."""
    call_tir = tvm.ir.Op.get("relax.call_tir")
    body = mod["main"].body
    return [
        b
        for block in body.blocks
        for b in block.bindings
        if isinstance(b, relax.VarBinding)
        and isinstance(b.value, relax.Call)
        and b.value.op.same_as(call_tir)
    ]


def site_edges(mod: tvm.IRModule) -> list[tuple[int, int]]:
    """Data flow between the call sites of fused `mod`: ``(producer site, consumer site)`` pairs, through
    any non-call_tir bindings (tuples, reshapes) in between."""
    call_tir = tvm.ir.Op.get("relax.call_tir")
    producers: dict = {}  # var -> the sites whose results reach it
    edges: set[tuple[int, int]] = set()
    site = 0
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            reached = set()
            for v in relax.analysis.free_vars(b.value):
                reached |= producers.get(v, set())
            if isinstance(b.value, relax.Call) and b.value.op.same_as(call_tir):
                edges.update((src, site) for src in reached)
                reached = {site}
                site += 1
            producers[b.var] = reached
    return sorted(edges)


def _tensor_info(ty) -> tuple[TensorInfo, ...]:
    if isinstance(ty, relax.TupleType):
        return tuple(t for field in ty.fields for t in _tensor_info(field))
    shape = tuple(int(d) for d in ty.shape.values)
    return (TensorInfo(shape, str(ty.dtype)),)


def _multiplies(stmt) -> bool:
    found = []
    tvm_ffi.structural_walk(stmt, [(tirx.Mul, lambda _: found.append(True))])
    return bool(found)


def count_macs(func: tirx.PrimFunc) -> int:
    """Multiply-accumulates of a PrimFunc: the iteration-space size of every reduction block whose update
    multiplies (matmul, conv; a variance's sum of squares counts too, which is negligible)."""
    blocks: list = []
    tvm_ffi.structural_walk(func.body, [(tvm.s_tir.SBlock, blocks.append)])
    total = 0
    for block in blocks:
        if any(iv.iter_type == tirx.IterVar.CommReduce for iv in block.iter_vars) and _multiplies(block.body):
            total += int(np.prod([int(iv.dom.extent) for iv in block.iter_vars], dtype=np.int64))
    return total


def weight_digest(array: np.ndarray) -> str:
    """Content digest of a constant: equal weights share it (and one `WeightInfo.id`)."""
    return hashlib.sha1(str((array.shape, array.dtype.str)).encode() + array.tobytes()).hexdigest()[:16]


class _WeightTable:
    """Gives equal constants one id ("w0", "w1", ...) in order of first use."""

    def __init__(self):
        self.by_digest: dict[str, str] = {}

    def info(self, const: Constant) -> WeightInfo:
        array = const.value.numpy()
        digest = weight_digest(array)
        wid = self.by_digest.setdefault(digest, f"w{len(self.by_digest)}")
        return WeightInfo(wid, tuple(array.shape), str(array.dtype), int(array.size), digest)


def fused_ops(mod: tvm.IRModule) -> list[FusedOp]:
    """The FusedOp table of an already fused module."""
    weights = _WeightTable()
    hashes: dict[str, tuple[str, int]] = {}
    table = []
    for index, binding in enumerate(call_sites(mod)):
        call = binding.value
        gvar, args = call.args[0], call.args[1]
        func = mod[gvar]
        name = gvar.name_hint
        if name not in hashes:
            hashes[name] = (f"{tvm_ffi.structural_hash(func) & (2**64 - 1):016x}", count_macs(func))
        func_hash, macs = hashes[name]
        arg_list = list(args.fields) if isinstance(args, relax.Tuple) else [args]
        attrs = func.attrs or {}
        kinds = tuple(str(k) for k in attrs[OP_KINDS_ATTR]) if OP_KINDS_ATTR in attrs else (name,)
        table.append(
            FusedOp(
                index=index,
                name=binding.var.name,
                func=name,
                kinds=kinds,
                inputs=tuple(t for a in arg_list if not isinstance(a, Constant) for t in _tensor_info(a.ty)),
                outputs=_tensor_info(binding.var.ty),
                weights=tuple(weights.info(a) for a in arg_list if isinstance(a, Constant)),
                macs=macs,
                func_hash=func_hash,
            )
        )
    return table


def expose_site_inputs(mod: tvm.IRModule, sites: list[int]) -> tvm.IRModule:
    """A copy of fused `mod` whose `main` returns ``(original result, input of site s for s in sites)``.

    The input of a site is its first non-constant argument (the activation a kernel would quantize);
    used to read data-free activation statistics without touching the graph's computation.
    """
    flat = relax.transform.ToNonDataflow()(mod)
    calls = call_sites(flat)
    picked = []
    for site in sites:
        args = calls[site].value.args[1]
        fields = list(args.fields) if isinstance(args, relax.Tuple) else [args]
        picked.append(next(a for a in fields if not isinstance(a, Constant)))
    return with_extra_outputs(flat, picked)


def replace_constants(mod: tvm.IRModule, table: dict[str, np.ndarray]) -> tvm.IRModule:
    """A copy of `mod` whose constants in `main` with a `weight_digest` in `table` hold ``table[digest]``
    (cast to the constant's dtype): what a model with some weights quantized computes, without the quantize
    pass (the weights stay float constants). RuntimeError if a digest of `table` is no constant of `main`."""

    @relax.expr_functor.mutator
    class _Replace(relax.PyExprMutator):
        def __init__(self, mod):
            super().__init__(mod)
            self.hits: set[str] = set()

        def visit_generic_const_(self, op):
            array = op.value.numpy()
            digest = weight_digest(array)
            if digest not in table:
                return op
            if tuple(table[digest].shape) != array.shape:
                raise ValueError(
                    f"replacement for constant {digest} has shape {table[digest].shape}, not {array.shape}"
                )
            self.hits.add(digest)
            return relax.const(np.ascontiguousarray(table[digest], dtype=array.dtype))

    replace = _Replace(mod)
    main = replace.visit_expr(mod["main"])
    funcs = {gv: (main if gv.name_hint == "main" else f) for gv, f in mod.functions.items()}
    missing = set(table) - replace.hits
    if missing:
        raise RuntimeError(f"{len(missing)} weight constants not found in the fused graph")
    return tvm.IRModule(funcs, attrs=mod.attrs)


def with_extra_outputs(flat: tvm.IRModule, exprs: list) -> tvm.IRModule:
    """A copy of `flat` (no dataflow blocks) whose `main` returns ``(original result, *exprs)``."""
    main = flat["main"]
    fields = [main.body.body, *exprs]
    body = relax.SeqExpr(main.body.blocks, relax.Tuple(fields))
    out = tvm.IRModule(dict(flat.functions.items()), attrs=flat.attrs)
    out["main"] = relax.Function(main.params, body, relax.TupleType([f.ty for f in fields]), attrs=main.attrs)
    return out


def inspect(
    model: ModelLike,
    target: str | TargetSpec = "x86",
    input_shapes: InputShapes | None = None,
    *,
    rollout=None,
) -> list[FusedOp]:
    """The fused ops of `model` as compiled for `target`: one entry per call site in `main`.

    Parameters
    ----------
    model : path, bytes, onnx.ModelProto or tvm.IRModule
        What `load` accepts; an already fused IRModule is read as it is.
    target : str or TargetSpec
        Registered target name (`tvm-tqs targets`). Fusion is target-independent today; the name is
        validated so the table describes a graph that can be built for it.
    input_shapes : mapping, optional
        Static values for dynamic dimensions (see `load`; symbolic batch dimensions default to 1).
    rollout : RolloutSpec, dict or path, optional
        The rollout contract (see `load`); the table does not need one, but a given one is checked.
    """
    get_target(target)
    return fused_ops(fuse(model, input_shapes, rollout=rollout))
