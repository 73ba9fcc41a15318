"""Fold the constant subgraphs of an ONNX graph, once its input shapes are static.

Exporters leave shape arithmetic in the graph: torch's legacy exporter builds every ``F.pad``'s pads from
``Shape -> ConstantOfShape -> Concat -> Reshape -> Slice -> Cast`` chains and every ``chunk`` from
``Shape -> Gather -> Div``. TVM's Relax importer refuses the results ("Dynamic pads are not supported
yet", "emit_te now only supports Tensor that has ShapeExpr shape") although, with the batch bound, all of
it is constant. `fold_constants` evaluates such nodes with onnx's reference evaluator and replaces them
by initializers: the same computation, with the constants already computed.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

# Ops with state, randomness or subgraphs are never folded; neither are results above this size (a folded
# ConstantOfShape of a big activation would bloat the model).
_NEVER = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
          "Bernoulli", "If", "Loop", "Scan", "SequenceMap"}  # fmt: skip
_MAX_ELEMENTS = 1 << 16


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(d.dim_value for d in dims)
    return shapes


def _evaluate(node: onnx.NodeProto, inputs: list, opset: list) -> list[np.ndarray] | None:
    from onnx.reference import ReferenceEvaluator

    names = [f"in{i}" if name else "" for i, name in enumerate(node.input)]
    copy = helper.make_node(
        node.op_type, names, [f"out{i}" for i in range(len(node.output))], domain=node.domain
    )
    copy.attribute.extend(node.attribute)
    graph = helper.make_graph(
        [copy],
        "fold",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for n, v in zip(names, inputs, strict=True) if n],
        [helper.make_empty_tensor_value_info(o) for o in copy.output],
    )  # fmt: skip
    try:
        feeds = {n: v for n, v in zip(names, inputs, strict=True) if n}
        return list(ReferenceEvaluator(helper.make_model(graph, opset_imports=opset)).run(None, feeds))
    except Exception:  # noqa: BLE001 - a node the reference cannot evaluate is simply left alone
        return None


def _inputs_with_subgraphs(node: onnx.NodeProto):
    """The node's inputs and every name its subgraphs (If / Loop / Scan bodies) read from outside."""
    yield from node.input
    for attr in node.attribute:
        for g in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            for inner in g.node:
                yield from _inputs_with_subgraphs(inner)


def fold_constants(model: onnx.ModelProto, input_shapes: dict | None = None) -> tuple[onnx.ModelProto, int]:
    """(a copy of `model` with its constant subgraphs folded, the number of nodes folded).

    A node folds when every input is an initializer, a Constant or a folded result, or when it is a
    ``Shape`` / ``Size`` of a tensor whose shape is static after shape inference. `input_shapes` (input
    name -> static shape) binds the graph's dynamic input dimensions first.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    for inp in graph.input:
        shape = (input_shapes or {}).get(inp.name)
        if shape is not None:
            for dim, value in zip(inp.type.tensor_type.shape.dim, shape, strict=True):
                dim.Clear()
                dim.dim_value = int(value)
    known = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    shapes = _static_shapes(model)
    opset = list(model.opset_import)
    kept, folded = [], 0
    for node in graph.node:
        values = None
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            values = _evaluate(node, [], opset)
        elif node.op_type in ("Shape", "Size") and node.input[0] in shapes and node.domain in ("", "ai.onnx"):
            values = _evaluate(node, [np.zeros(shapes[node.input[0]], np.float32)], opset)
        elif (
            node.op_type not in _NEVER
            and node.domain in ("", "ai.onnx")
            and all(not name or name in known for name in node.input)
            and node.input
        ):
            values = _evaluate(node, [known.get(name) for name in node.input], opset)
        if (
            values is None
            or not all(isinstance(v, np.ndarray | np.generic) for v in values)  # tensors only, no sequences
            or any(np.asarray(v).size > _MAX_ELEMENTS for v in values)
        ):
            kept.append(node)
            continue
        for name, value in zip(node.output, values, strict=True):
            if name:
                known[name] = np.asarray(value)
        folded += 1
    if not folded:
        return model, 0
    used = {name for node in kept for name in _inputs_with_subgraphs(node)} | {o.name for o in graph.output}
    initial = {t.name for t in graph.initializer}
    del graph.node[:]
    graph.node.extend(kept)
    for name, value in known.items():
        if name in used and name not in initial:
            graph.initializer.append(numpy_helper.from_array(value, name))
    return model, folded
