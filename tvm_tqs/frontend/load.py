"""`load`: an ONNX model (path, bytes or ModelProto) or a Relax IRModule -> a static-shape Relax IRModule."""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
import tvm
from google.protobuf.message import DecodeError

from ..errors import MissingShapeError, ModelLoadError, TQSError, UnsupportedOpsError
from ..rollout import RolloutSpec
from .converters import install as install_converters
from .converters import supported_op_types

ROLLOUT_ATTR = "tvm_tqs.rollout"
SOURCE_ATTR = "tvm_tqs.source"

ModelLike = str | os.PathLike | bytes | onnx.ModelProto | tvm.IRModule
InputShapes = Mapping[str, Sequence[int] | int]


def load(model: ModelLike, input_shapes: InputShapes | None = None) -> tvm.IRModule:
    """Import a model into TVM Relax with static shapes.

    Parameters
    ----------
    model : path, bytes, onnx.ModelProto or tvm.IRModule
        An ONNX file or its serialised bytes or proto. An IRModule is returned unchanged.
    input_shapes : mapping, optional
        Static values for dynamic dimensions. A key is either an input name (value: the full shape) or
        an ONNX symbolic dimension name such as ``"batch"`` (value: an int for every input using it).

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
    if isinstance(model, tvm.IRModule):
        if "main" not in [gv.name_hint for gv in model.get_global_vars()]:
            raise ModelLoadError("the IRModule passed to load() has no 'main' function")
        return model
    proto, source = read_onnx(model)
    return import_onnx(proto, input_shapes, source)


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
    return proto, source


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
        if node.op_type not in supported:
            op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            counts[op] += 1
            first.setdefault(op, node.name or f"#{i} (unnamed)")
    return [(op, counts[op], first[op]) for op in sorted(counts)]


def graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The real inputs of the graph (initializers listed as inputs by old exporters excluded)."""
    initializers = {t.name for t in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in initializers]


def batch_shapes(proto: onnx.ModelProto, batch: int) -> dict[str, int]:
    """``{symbolic dim: batch}`` for every symbolic leading (batch) dimension of the model's inputs."""
    return {
        dims[0].dim_param: batch
        for inp in graph_inputs(proto)
        if (dims := inp.type.tensor_type.shape.dim) and dims[0].dim_param
    }


def resolve_input_shapes(proto: onnx.ModelProto, input_shapes: InputShapes | None) -> dict[str, list[int]]:
    """Static shape of every graph input, from the model and `input_shapes`; names every gap at once."""
    inputs = graph_inputs(proto)
    given = dict(input_shapes or {})
    names = {i.name for i in inputs}
    dim_params = {d.dim_param for i in inputs for d in i.type.tensor_type.shape.dim if d.dim_param}
    unknown = sorted(set(given) - names - dim_params)
    if unknown:
        raise MissingShapeError(
            f"input_shapes names {unknown}, which are neither inputs nor symbolic dimensions of the model; "
            f"inputs: {sorted(names)}, symbolic dimensions: {sorted(dim_params) or 'none'}"
        )
    for param in set(given) & dim_params - names:
        if not isinstance(given[param], int) or given[param] < 1:
            raise MissingShapeError(f"input_shapes['{param}'] must be a positive int, got {given[param]!r}")
    shapes: dict[str, list[int]] = {}
    missing: list[str] = []
    for inp in inputs:
        dims = inp.type.tensor_type.shape.dim
        if inp.name in given:
            shape = given[inp.name]
            if isinstance(shape, int) or any(not isinstance(s, int) or s < 1 for s in shape):
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
    proto: onnx.ModelProto, input_shapes: InputShapes | None = None, source: str = "model"
) -> tvm.IRModule:
    """ONNX proto -> Relax IRModule with our converters, static shapes, and the rollout contract attached."""
    missing_ops = unsupported_ops(proto)
    if missing_ops:
        raise UnsupportedOpsError(missing_ops, source)
    shapes = resolve_input_shapes(proto, input_shapes)
    install_converters()
    from tvm.relax.frontend.onnx import from_onnx

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # renames and checker chatter; errors below are what matter
            mod = from_onnx(proto, shape_dict=shapes, keep_params_in_input=False)
    except TQSError:
        raise
    except Exception as err:  # the importer raises bare AssertionError/ValueError/TVMError
        raise ModelLoadError(f"TVM's ONNX importer failed on {source}: {type(err).__name__}: {err}") from err
    mod = mod.with_attr(SOURCE_ATTR, source)
    if any(p.key == ROLLOUT_ATTR for p in proto.metadata_props):
        spec = RolloutSpec.from_onnx(proto)  # an attached contract must be valid
    else:
        try:
            spec = RolloutSpec.from_onnx(proto)
        except TQSError:
            spec = None  # not every model has an inferable contract, and inspect() does not need one
    if spec is not None:
        mod = mod.with_attr(ROLLOUT_ATTR, spec.to_json())
    return mod


def rollout_spec_of(mod: tvm.IRModule) -> RolloutSpec | None:
    """The rollout contract `load` attached to `mod`, if any."""
    attrs = mod.attrs
    if attrs is None or ROLLOUT_ATTR not in attrs:
        return None
    return RolloutSpec.from_json(str(attrs[ROLLOUT_ATTR]))
