"""`load`: an ONNX model (path, bytes or ModelProto) or a Relax IRModule -> a static-shape Relax IRModule."""

from __future__ import annotations

import json
import math
import os
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import tvm
from google.protobuf.message import DecodeError

from ..contract import RolloutSpec
from ..errors import MissingShapeError, ModelLoadError, RolloutSpecError, TQSError, UnsupportedOpsError
from .converters import install as install_converters
from .converters import supported_op_types
from .converters.rnn_loop import RECURRENT_MODES, recurrent_mode

ROLLOUT_ATTR = "tvm_tqs.rollout"
ROLLOUT_ERROR_ATTR = "tvm_tqs.rollout_error"  # why no contract could be inferred (raised when one is needed)
SOURCE_ATTR = "tvm_tqs.source"
DEFAULT_BATCH = 1
# Most elements one tensor may have: TVM lowers shapes with 32-bit literals and indices, and a model with a
# larger tensor would otherwise fail deep inside TVM or try to allocate it (docs/reliability.md).
MAX_TENSOR_ELEMENTS = 2**31 - 1

ModelLike = str | os.PathLike | bytes | onnx.ModelProto | tvm.IRModule
InputShapes = Mapping[str, Sequence[int] | int]
RolloutLike = RolloutSpec | Mapping | str | os.PathLike


def as_rollout_spec(rollout: RolloutLike | None) -> RolloutSpec | None:
    """`rollout=` as given to the API: a RolloutSpec, its dict form, or a path to its JSON file."""
    if rollout is None or isinstance(rollout, RolloutSpec):
        return rollout
    if isinstance(rollout, Mapping):
        return RolloutSpec.from_dict(rollout)
    if isinstance(rollout, (str, os.PathLike)):
        return RolloutSpec.from_file(rollout)
    raise RolloutSpecError(
        f"rollout= takes a RolloutSpec, a dict or a JSON file path, not {type(rollout).__name__}"
    )


def load(
    model: ModelLike,
    input_shapes: InputShapes | None = None,
    *,
    rollout: RolloutLike | None = None,
    recurrent: str = "unroll",
) -> tvm.IRModule:
    """Import a model into TVM Relax with static shapes.

    Parameters
    ----------
    model : path, bytes, onnx.ModelProto or tvm.IRModule
        An ONNX file or its serialised bytes or proto. An IRModule is returned unchanged.
    input_shapes : mapping, optional
        Static values for dynamic dimensions. A key is either an input name (value: the full shape) or
        an ONNX symbolic dimension name such as ``"batch"`` (value: an int for every input using it).
        Symbolic leading (batch) dimensions not given are bound to 1; a model with a fixed batch keeps it.
    rollout : RolloutSpec, dict or path, optional
        The rollout contract, overriding the one in the model's metadata (or inferred); checked against
        the model's inputs and outputs.
    recurrent : {"unroll", "loop"}
        How ONNX LSTM/GRU/RNN nodes are imported: unrolled over time (the default; what `compile`
        plans and quantizes), or ``"loop"``: one fp32 loop kernel per layer direction
        (`targets.kernels.recurrent`; opt-in, not yet quantizable; docs/converters.md).

    Returns
    -------
    tvm.IRModule
        The Relax module; its ``tvm_tqs.rollout`` attribute holds the model's rollout contract (JSON)
        when one is attached or can be inferred, and ``tvm_tqs.source`` names where it came from.

    Raises
    ------
    ModelLoadError
        Missing, unreadable or corrupt file; not an ONNX model; the ONNX checker rejects it.
    MissingShapeError
        An input has a dynamic dimension that `input_shapes` does not fix (every such input is named).
    UnsupportedOpsError
        Operators no converter handles (all of them, with counts and the first node of each).
    """
    if recurrent not in RECURRENT_MODES:
        raise TQSError(f"recurrent= must be one of {', '.join(RECURRENT_MODES)}, got {recurrent!r}")
    if isinstance(model, tvm.IRModule):
        if "main" not in [gv.name_hint for gv in model.get_global_vars()]:
            raise ModelLoadError("the IRModule passed to load() has no 'main' function")
        return model
    proto, source = read_onnx(model)
    return import_onnx(proto, input_shapes, source, rollout=rollout, recurrent=recurrent)


def read_onnx(model: str | os.PathLike | bytes | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """Read and validate an ONNX model; returns it with a human-readable name of its source."""
    if isinstance(model, onnx.ModelProto):
        proto, source = model, f"ONNX model '{model.graph.name or 'unnamed'}'"
    elif isinstance(model, bytes):
        proto, source = _parse(model, "ONNX bytes"), "ONNX bytes"
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        source = f"'{path}'"
        if not path.exists():
            raise ModelLoadError(f"model file '{path}' does not exist")
        if path.is_dir():
            raise ModelLoadError(f"model path '{path}' is a directory, not an ONNX file")
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ModelLoadError(f"cannot read model file '{path}': {err.strerror}") from None
        proto = _parse(data, f"model file '{path}'")
        if any(_uses_external_data(t) for t in proto.graph.initializer):
            try:
                onnx.load_external_data_for_model(proto, str(path.parent))
            except (OSError, ValueError) as err:
                raise ModelLoadError(
                    f"model file '{path}' refers to external weight data that cannot be read: {err}"
                ) from None
    else:
        raise ModelLoadError(
            f"load() takes an ONNX path, bytes, an onnx.ModelProto or a tvm.IRModule, not {type(model).__name__}"
        )
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(
            f"{source} is not a valid ONNX model: the ONNX checker says: {first_line}"
        ) from None
    _check_opset(proto, source)
    _check_finite_constants(proto, source)
    return proto, source


def _check_opset(proto: onnx.ModelProto, source: str) -> None:
    """The checker accepts any opset newer than it knows without validating the ops against it."""
    known = onnx.defs.onnx_opset_version()
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version > known:
            raise ModelLoadError(
                f"{source} declares ONNX opset {opset.version}, newer than the {known} this onnx "
                f"{onnx.__version__} knows: its operators cannot be checked or converted; re-export it "
                f"with opset <= {known}"
            )


def _check_finite_constants(proto: onnx.ModelProto, source: str) -> None:
    """A NaN weight makes every forecast (and every TQS score) NaN: refuse it by name. Infinities can be
    meaningful (attention masks); a quantized weight must still be finite (`PlanningProblem`)."""
    from onnx import numpy_helper

    tensors = [(f"initializer '{t.name}'", t) for t in proto.graph.initializer]
    for node in _all_nodes(proto.graph):
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                tensors.append((f"constant of node '{node.name or node.output[0]}'", attr.t))
    for what, tensor in tensors:
        if tensor.data_type not in _FLOAT_TYPES:
            continue
        try:
            values = numpy_helper.to_array(tensor)
        except (OSError, ValueError, TypeError) as err:  # e.g. external data that is not there
            raise ModelLoadError(f"{source}: {what} cannot be read: {err}") from None
        bad = int(np.isnan(values).sum())
        if bad:
            raise ModelLoadError(
                f"{source}: {what} holds {bad} NaN value(s) of {values.size}: every forecast would be NaN; "
                "fix the exported weights"
            )


_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
}


def _uses_external_data(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == onnx.TensorProto.EXTERNAL


def _parse(data: bytes, what: str) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as err:
        raise ModelLoadError(
            f"{what} is not an ONNX model or is corrupt (protobuf decoding failed: {err}); "
            "check that it is a complete .onnx file"
        ) from None
    # Protobuf happily decodes many non-ONNX byte strings into an empty message.
    if proto.ir_version == 0 or len(proto.graph.node) == 0:
        raise ModelLoadError(
            f"{what} is not an ONNX model or is corrupt: it decodes to no graph "
            f"(ir_version={proto.ir_version}, {len(proto.graph.node)} nodes)"
        )
    return proto


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _all_nodes(g)


def unsupported_ops(proto: onnx.ModelProto) -> list[tuple[str, int, str]]:
    """Every op type of `proto` that cannot be imported: (op type, count, first node name)."""
    supported = supported_op_types()
    counts: Counter[str] = Counter()
    first: dict[str, str] = {}
    for i, node in enumerate(_all_nodes(proto.graph)):
        default_domain = node.domain in ("", "ai.onnx")
        # TVM's importer ignores domains: a custom op named like a standard one would be converted as it.
        if node.op_type not in supported or not default_domain:
            op = node.op_type if default_domain else f"{node.domain}.{node.op_type}"
            counts[op] += 1
            first.setdefault(op, node.name or f"#{i} (unnamed)")
    return [(op, counts[op], first[op]) for op in sorted(counts)]


def graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The real inputs of the graph (initializers listed as inputs by old exporters excluded)."""
    initializers = {t.name for t in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in initializers]


def bind_shapes(proto: onnx.ModelProto, input_shapes: InputShapes | None, batch: int | None = None) -> dict:
    """`input_shapes` plus `batch` (default 1) for every symbolic leading dimension they leave open: the one
    way `load`, `inspect`, `score` and `compile` bind shapes."""
    if input_shapes is not None and not isinstance(input_shapes, Mapping):
        raise MissingShapeError(
            "input_shapes must be a mapping {input name: [dims]} or {symbolic dim: N}, "
            f"not {type(input_shapes).__name__}"
        )
    shapes = {name: _plain_ints(value) for name, value in (input_shapes or {}).items()}
    given_inputs = {name for name, value in shapes.items() if not isinstance(value, int)}
    for inp in graph_inputs(proto):
        dims = inp.type.tensor_type.shape.dim
        if inp.name in given_inputs or not dims or not dims[0].dim_param:
            continue
        shapes.setdefault(dims[0].dim_param, DEFAULT_BATCH if batch is None else batch)
    return shapes


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _plain_ints(value):
    """numpy integers (a shape read from an array) as Python ints; anything else as given."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (list, tuple)):
        return [int(v) if isinstance(v, np.integer) else v for v in value]
    return value


def resolve_input_shapes(proto: onnx.ModelProto, input_shapes: InputShapes | None) -> dict[str, list[int]]:
    """Static shape of every graph input, from the model and `input_shapes`; names every gap at once."""
    inputs = graph_inputs(proto)
    if input_shapes is not None and not isinstance(input_shapes, Mapping):
        raise MissingShapeError(f"input_shapes must be a mapping, not {type(input_shapes).__name__}")
    given = {name: _plain_ints(value) for name, value in (input_shapes or {}).items()}
    names = {i.name for i in inputs}
    dim_params = {d.dim_param for i in inputs for d in i.type.tensor_type.shape.dim if d.dim_param}
    unknown = sorted(set(given) - names - dim_params)
    if unknown:
        raise MissingShapeError(
            f"input_shapes names {unknown}, which are neither inputs nor symbolic dimensions of the model; "
            f"inputs: {sorted(names)}, symbolic dimensions: {sorted(dim_params) or 'none'}"
        )
    for param in set(given) & dim_params - names:
        if not _is_int(given[param]) or given[param] < 1:
            raise MissingShapeError(f"input_shapes['{param}'] must be a positive int, got {given[param]!r}")
    shapes: dict[str, list[int]] = {}
    missing: list[str] = []
    for inp in inputs:
        dims = inp.type.tensor_type.shape.dim
        if inp.name in given:
            shape = given[inp.name]
            if (
                _is_int(shape)
                or not isinstance(shape, Sequence)
                or any(not _is_int(s) or s < 1 for s in shape)
            ):
                raise MissingShapeError(
                    f"input_shapes['{inp.name}'] must be a list of positive ints, got {shape!r}"
                )
            if dims and len(shape) != len(dims):
                raise MissingShapeError(
                    f"input_shapes['{inp.name}'] has rank {len(shape)} but input '{inp.name}' has rank {len(dims)}"
                )
            shapes[inp.name] = list(shape)
            continue
        if not inp.type.tensor_type.HasField("shape"):
            missing.append(f"input '{inp.name}' has unknown rank: give its full shape")
            continue
        shape = []
        for axis, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(d.dim_value)
            elif d.HasField("dim_value"):
                missing.append(
                    f"input '{inp.name}' dimension {axis} is {d.dim_value} (an empty input): give a positive "
                    f"size with input_shapes={{'{inp.name}': [...]}}"
                )
                shape = None
                break
            elif d.dim_param and isinstance(given.get(d.dim_param), int):
                shape.append(given[d.dim_param])
            else:
                label = f"'{d.dim_param}'" if d.dim_param else "unnamed"
                hint = f"input_shapes={{'{d.dim_param}': N}} or " if d.dim_param else ""
                missing.append(
                    f"input '{inp.name}' dimension {axis} ({label}) is dynamic: pass {hint}"
                    f"input_shapes={{'{inp.name}': [...]}}"
                )
                shape = None
                break
        if shape is not None:
            shapes[inp.name] = shape
    if missing:
        raise MissingShapeError(
            "the model has dynamic dimensions with no static value: " + "; ".join(missing)
        )
    return shapes


def import_onnx(
    proto: onnx.ModelProto,
    input_shapes: InputShapes | None = None,
    source: str = "model",
    *,
    rollout: RolloutLike | None = None,
    recurrent: str = "unroll",
) -> tvm.IRModule:
    """ONNX proto -> Relax IRModule with our converters, static shapes, and the rollout contract attached."""
    missing_ops = unsupported_ops(proto)
    if missing_ops:
        raise UnsupportedOpsError(missing_ops, source)
    shapes = resolve_input_shapes(proto, bind_shapes(proto, input_shapes))
    for name, shape in shapes.items():
        _check_size(f"input '{name}'", shape, source)
    install_converters()
    from tvm.relax.frontend.onnx import from_onnx

    def run_importer(p):
        with warnings.catch_warnings(), recurrent_mode(recurrent):
            warnings.simplefilter("ignore")  # renames and checker chatter; errors below are what matter
            return from_onnx(p, shape_dict=shapes, keep_params_in_input=False)

    try:
        mod = run_importer(proto)
    except TQSError:
        raise
    except Exception as err:  # the importer raises bare AssertionError/ValueError/TVMError
        # Exporters leave shape arithmetic the importer refuses (dynamic pads, runtime-shape slices) that
        # is constant once the shapes are bound: fold it and try once more.
        from .fold import fold_constants

        try:
            folded, count = fold_constants(proto, shapes)
        except Exception:  # noqa: BLE001 - the importer's own error is the one to report
            count = 0
        try:
            if not count:
                raise err
            mod = run_importer(folded)
        except Exception as again:  # noqa: BLE001
            after = (
                f" (and again after folding {count} constant nodes: {type(again).__name__})" if count else ""
            )
            raise ModelLoadError(
                f"TVM's ONNX importer failed on {source}: {type(err).__name__}: {err}{after}"
                f"{_empty_initializers_hint(proto)}"
            ) from err
    _check_tensor_sizes(mod, source)
    from ..rollout import INPUT_NAMES_ATTR, OUTPUT_NAMES_ATTR

    output_names = [o.name for o in proto.graph.output]
    mod = mod.with_attrs(
        {
            SOURCE_ATTR: source,
            INPUT_NAMES_ATTR: json.dumps([i.name for i in graph_inputs(proto)]),
            OUTPUT_NAMES_ATTR: json.dumps(output_names),
        }
    )
    spec = as_rollout_spec(rollout)
    if spec is None and any(p.key == ROLLOUT_ATTR for p in proto.metadata_props):
        spec = RolloutSpec.from_onnx(proto)  # an attached contract must be valid
    if spec is None:
        try:
            spec = RolloutSpec.from_onnx(proto)
        except TQSError as err:  # not every model has an inferable contract, and inspect() needs none
            return mod.with_attr(ROLLOUT_ERROR_ATTR, str(err))
    inputs, outputs = model_signatures(mod, output_names)
    spec.check_model(inputs, outputs, source)
    return mod.with_attr(ROLLOUT_ATTR, spec.to_json())


def _empty_initializers_hint(proto: onnx.ModelProto) -> str:
    """Name the zero-size weights and the nodes they feed: the likely culprit of an importer failure."""
    empty = {t.name: list(t.dims) for t in proto.graph.initializer if 0 in t.dims}
    uses = [
        f"'{name}' {empty[name]} feeds node '{node.name or node.output[0]}' ({node.op_type})"
        for node in proto.graph.node
        for name in node.input
        if name in empty
    ]
    return f" [the model has empty initializers: {'; '.join(uses)}]" if uses else ""


def _check_size(what: str, shape: Sequence[int], source: str) -> None:
    dims = [int(d) for d in shape]
    elements = math.prod(dims)
    if elements > MAX_TENSOR_ELEMENTS:
        raise ModelLoadError(
            f"{source}: {what} would have shape {dims} ({elements:.3g} elements), more than the "
            f"{MAX_TENSOR_ELEMENTS} elements per tensor that TVM's 32-bit shapes allow; bind smaller shapes "
            "(input_shapes / --shape / --batch)"
        )


def _check_tensor_sizes(mod: tvm.IRModule, source: str) -> None:
    """Refuse, before anything is built or allocated, a graph with a tensor too large for TVM."""
    from tvm import relax

    main = mod["main"]
    blocks = getattr(main.body, "blocks", ())
    for block in blocks:
        for binding in block.bindings:
            ty = getattr(binding.var, "ty", None)
            if not isinstance(ty, relax.TensorType) or ty.shape is None:
                continue
            dims = getattr(ty.shape, "values", None)
            if dims is None or not all(isinstance(d, tvm.tirx.IntImm) for d in dims):
                continue
            if math.prod(int(d) for d in dims) > MAX_TENSOR_ELEMENTS:
                _check_size(f"tensor '{binding.var.name}' (computed inside the graph)", dims, source)


def model_signatures(mod: tvm.IRModule, output_names: Sequence[str]) -> tuple[dict, dict]:
    """``{name: (shape, dtype)}`` of `main`'s inputs (ONNX names, in order) and outputs."""
    from tvm import relax

    from ..rollout import io_names

    def sig(ty):
        return tuple(int(d) for d in ty.shape.values), str(ty.dtype)

    main = mod["main"]
    names, _ = io_names(mod)
    inputs = {name: sig(p.ty) for name, p in zip(names, main.params, strict=False)}
    ret = main.ret_ty
    fields = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    outputs = {name: sig(ty) for name, ty in zip(output_names, fields, strict=False)}
    return inputs, outputs


def rollout_spec_of(mod: tvm.IRModule) -> RolloutSpec | None:
    """The rollout contract `load` attached to `mod`, if any."""
    attrs = mod.attrs
    if attrs is None or ROLLOUT_ATTR not in attrs:
        return None
    return RolloutSpec.from_json(str(attrs[ROLLOUT_ATTR]))


def require_rollout_spec(mod: tvm.IRModule, source: str = "the model") -> RolloutSpec:
    """The contract of `mod`, or the paragraph (and JSON skeleton) saying why none could be inferred."""
    spec = rollout_spec_of(mod)
    if spec is not None:
        return spec
    attrs = mod.attrs or {}
    why = str(attrs[ROLLOUT_ERROR_ATTR]) if ROLLOUT_ERROR_ATTR in attrs else "no contract is attached"
    raise RolloutSpecError(f"{source} has no rollout contract: {why}")
