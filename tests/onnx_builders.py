"""Small ONNX models built with onnx.helper for tests (no torch needed)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _model(nodes, inputs, outputs, initializers, opset=17, name="test"):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def mlp_forecaster(lookback=16, horizon=4, channels=2, hidden=8, seed=0, batch="batch") -> onnx.ModelProto:
    """[batch, L, C] -> [batch, H, C]: Transpose, MatMul+Add+Relu, MatMul+Add, Transpose (a DLinear-like head)."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((lookback, hidden)).astype(np.float32) * 0.3, "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32) * 0.1, "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((hidden, horizon)).astype(np.float32) * 0.3, "w2")
    b2 = numpy_helper.from_array(rng.standard_normal(horizon).astype(np.float32) * 0.1, "b2")
    nodes = [
        helper.make_node("Transpose", ["window"], ["t"], perm=[0, 2, 1], name="to_channels_first"),
        helper.make_node("MatMul", ["t", "w1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1_bias"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
        helper.make_node("MatMul", ["h2", "w2"], ["y0"], name="fc2"),
        helper.make_node("Add", ["y0", "b2"], ["y1"], name="fc2_bias"),
        helper.make_node("Transpose", ["y1"], ["forecast"], perm=[0, 2, 1], name="to_time_first"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, [batch, lookback, channels])],
        [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, [batch, horizon, channels])],
        [w1, b1, w2, b2],
    )


def shared_weight_model(width=8, seed=1, conv_out=3) -> onnx.ModelProto:
    """Two MatMuls reading the same initializer, then a Conv1d: exercises weight ids and MAC counts."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32), "w")
    k = numpy_helper.from_array(
        rng.standard_normal((conv_out, 1, 2)).astype(np.float32), "k"
    )  # out=conv_out, in=1, kernel=2
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"], name="mm_a"),
        helper.make_node("Tanh", ["a"], ["a1"], name="tanh"),
        helper.make_node("MatMul", ["a1", "w"], ["b"], name="mm_b"),
        helper.make_node("Conv", ["b", "k"], ["y"], name="conv", kernel_shape=[2]),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, conv_out, width - 1])],
        [w, k],
    )


def with_unsupported_ops() -> onnx.ModelProto:
    """Valid ONNX whose ops TVM's importer lacks (Celu twice, Det): for the unsupported-op error."""
    nodes = [
        helper.make_node("Celu", ["x"], ["y"], name="celu_first"),
        helper.make_node("Squeeze", ["y", "axes"], ["y1"], name="squeeze"),
        helper.make_node("Celu", ["y1"], ["z"], name="celu_second"),
        helper.make_node("Det", ["m"], ["d"], name="det_node"),
    ]
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    return _model(
        nodes,
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 1, 3]),
            helper.make_tensor_value_info("m", TensorProto.FLOAT, [2, 2]),
        ],
        [
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [5, 3]),
            helper.make_tensor_value_info("d", TensorProto.FLOAT, []),
        ],
        [axes],
    )


def shape_arithmetic_pad(lookback: int = 8, channels: int = 2, horizon: int = 4) -> onnx.ModelProto:
    """A causal left pad whose pads are computed from the input's shape, as torch's legacy exporter writes
    every ``F.pad``: ``Shape -> Gather -> Sub -> Concat -> Pad``. TVM's importer refuses the pads as
    dynamic; with the batch bound they are constant."""
    rng = np.random.default_rng(0)
    pad = lookback - 5
    nodes = [
        helper.make_node("Shape", ["window"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["length"], axis=0),
        helper.make_node("Sub", ["length", "five"], ["left"]),
        helper.make_node(
            "ConstantOfShape", ["four"], ["zeros"], value=helper.make_tensor("v", TensorProto.INT64, [1], [0])
        ),
        helper.make_node("Concat", ["zero", "left", "zeros"], ["pads"], axis=0),
        helper.make_node("Pad", ["window", "pads"], ["padded"]),
        helper.make_node("Transpose", ["padded"], ["by_channel"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["by_channel", "w"], ["y"]),
        helper.make_node("Transpose", ["y"], ["forecast"], perm=[0, 2, 1]),
    ]
    inits = [
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([5], np.int64), "five"),
        numpy_helper.from_array(np.array([4], np.int64), "four"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(rng.standard_normal((lookback + pad, horizon)).astype(np.float32) * 0.2, "w"),
    ]
    graph = helper.make_graph(
        nodes,
        "shape_arithmetic_pad",
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", lookback, channels])],
        [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["batch", horizon, channels])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def every_aux_policy(
    lookback: int = 8, horizon: int = 4, channels: int = 2, aux_steps: int = 8
) -> onnx.ModelProto:
    """A forecaster with one auxiliary input per policy, each of which changes the forecast: ``cov``
    (supplied, float), ``mask`` (observed_mask, bool), ``step`` (time, int64) and ``phase`` (time, float)
    of shape [B, aux_steps], and ``level`` [B, 1] (constant); window [B, L, C] -> forecast [B, H, C].
    Each auxiliary input enters through a weighted sum over its steps, so its length is free."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Transpose", ["window"], ["x"], perm=[0, 2, 1])]
    terms = []
    for name, cast in (("cov", False), ("mask", True), ("step", True), ("phase", False)):
        source = name
        if cast:
            nodes.append(helper.make_node("Cast", [name], [f"{name}_f"], to=TensorProto.FLOAT))
            source = f"{name}_f"
        nodes.append(helper.make_node("MatMul", [source, f"{name}_w"], [f"{name}_term"]))  # [B, 1]
        terms.append(f"{name}_term")
    nodes += [
        helper.make_node("Sum", [*terms, "level"], ["offset"]),
        helper.make_node("Unsqueeze", ["offset", "axis2"], ["offset3"]),
        helper.make_node("Add", ["x", "offset3"], ["x2"]),
        helper.make_node("MatMul", ["x2", "w"], ["y"]),
        helper.make_node("Transpose", ["y"], ["forecast"], perm=[0, 2, 1]),
    ]
    inits = [numpy_helper.from_array(np.array([2], np.int64), "axis2")]
    for name, scale in (("cov", 0.5), ("mask", 0.3), ("step", 0.01), ("phase", 0.2)):
        w = rng.standard_normal((aux_steps, 1)).astype(np.float32) * scale
        inits.append(numpy_helper.from_array(w, f"{name}_w"))
    inits.append(
        numpy_helper.from_array(rng.standard_normal((lookback, horizon)).astype(np.float32) * 0.3, "w")
    )
    inputs = [
        helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", lookback, channels]),
        helper.make_tensor_value_info("cov", TensorProto.FLOAT, ["batch", aux_steps]),
        helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", aux_steps]),
        helper.make_tensor_value_info("step", TensorProto.INT64, ["batch", aux_steps]),
        helper.make_tensor_value_info("phase", TensorProto.FLOAT, ["batch", aux_steps]),
        helper.make_tensor_value_info("level", TensorProto.FLOAT, ["batch", 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "every_aux_policy",
        inputs,
        [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["batch", horizon, channels])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
