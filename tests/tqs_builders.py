"""Small ONNX forecasters for the TQS tests (onnx.helper only): known dynamics, odd batch layouts."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tvm_tqs.rollout import RolloutSpec


def _model(nodes, inputs, outputs, initializers, spec: RolloutSpec | None = None):
    graph = helper.make_graph(nodes, "tqs_test", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if spec is not None:
        spec.attach(model)
    onnx.checker.check_model(model)
    return model


def linear_system(a: np.ndarray) -> onnx.ModelProto:
    """z_{t+1} = A z_t as a forecaster: window [batch, 1, C] -> forecast [batch, 1, C] = window @ A^T.

    One fused call site (the MatMul), lookback 1, horizon 1, stride 1: the rollout is exactly the linear
    map iterated, so a perturbation's growth follows from A alone.
    """
    c = a.shape[0]
    w = numpy_helper.from_array(np.ascontiguousarray(a.T, dtype=np.float32), "a_t")
    nodes = [helper.make_node("MatMul", ["window", "a_t"], ["forecast"], name="step")]
    spec = RolloutSpec("window", "forecast", 1, 1, c, tuple(range(c)), 1)
    return _model(
        nodes,
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", 1, c])],
        [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["batch", 1, c])],
        [w],
        spec,
    )


def channel_independent(lookback=12, horizon=4, channels=3, seed=0, batch_minor=False) -> onnx.ModelProto:
    """PatchTST-style channel independence: [B, L, C] -> [B*C, L] -> MatMul -> [B, H, C].

    With ``batch_minor=True`` the channels are moved in front of the batch first ([C*B, L]): a merged
    axis with the batch as its minor factor, which the batched scorer must refuse.
    """
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((lookback, horizon)).astype(np.float32) * 0.3, "w")
    b = numpy_helper.from_array(rng.standard_normal(horizon).astype(np.float32) * 0.1, "b")
    flat = numpy_helper.from_array(np.array([-1, lookback], dtype=np.int64), "flat")
    if batch_minor:
        back = numpy_helper.from_array(np.array([channels, -1, horizon], dtype=np.int64), "back")
        perm_in, perm_out = [2, 0, 1], [1, 2, 0]  # [C, B, L] ... [C, B, H] -> [B, H, C]
    else:
        back = numpy_helper.from_array(np.array([-1, channels, horizon], dtype=np.int64), "back")
        perm_in, perm_out = [0, 2, 1], [0, 2, 1]
    nodes = [
        helper.make_node("Transpose", ["window"], ["t"], perm=perm_in, name="to_channels"),
        helper.make_node("Reshape", ["t", "flat"], ["rows"], name="merge_batch"),
        helper.make_node("MatMul", ["rows", "w"], ["h0"], name="head"),
        helper.make_node("Add", ["h0", "b"], ["h1"], name="head_bias"),
        helper.make_node("Tanh", ["h1"], ["h2"], name="squash"),
        helper.make_node("Reshape", ["h2", "back"], ["h3"], name="split_batch"),
        helper.make_node("Transpose", ["h3"], ["forecast"], perm=perm_out, name="to_time"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", lookback, channels])],
        [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["batch", horizon, channels])],
        [w, b, flat, back],
    )


def split_concat(lookback=8, channels=4, seed=1) -> onnx.ModelProto:
    """A Split with two results (a tuple-valued call site), each mapped, then concatenated."""
    rng = np.random.default_rng(seed)
    half = channels // 2
    w1 = numpy_helper.from_array(rng.standard_normal((half, half)).astype(np.float32) * 0.5, "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((half, half)).astype(np.float32) * 0.5, "w2")
    split = numpy_helper.from_array(np.array([half, half], dtype=np.int64), "split")
    nodes = [
        helper.make_node("Split", ["window", "split"], ["a", "b"], axis=2, name="split"),
        helper.make_node("MatMul", ["a", "w1"], ["a1"], name="mm_a"),
        helper.make_node("MatMul", ["b", "w2"], ["b1"], name="mm_b"),
        helper.make_node("Concat", ["a1", "b1"], ["forecast"], axis=2, name="join"),
    ]
    spec = RolloutSpec("window", "forecast", lookback, lookback, channels, tuple(range(channels)), 2)
    return _model(
        nodes,
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", lookback, channels])],
        [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["batch", lookback, channels])],
        [w1, w2, split],
        spec,
    )


def partial_targets(lookback=10, horizon=3, seed=2, exogenous="hold") -> onnx.ModelProto:
    """[B, L, 3] -> [B, H, 2]: predicts channels 0 and 2; channel 1 is exogenous (held or supplied)."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((lookback, horizon)).astype(np.float32) * 0.3, "w")
    mix = numpy_helper.from_array(rng.standard_normal((3, 2)).astype(np.float32) * 0.6, "mix")
    nodes = [
        helper.make_node("Transpose", ["window"], ["t"], perm=[0, 2, 1], name="to_channels"),
        helper.make_node("MatMul", ["t", "w"], ["h"], name="over_time"),  # [B, 3, H]
        helper.make_node("Transpose", ["h"], ["h1"], perm=[0, 2, 1], name="to_time"),  # [B, H, 3]
        helper.make_node("MatMul", ["h1", "mix"], ["forecast"], name="mix_channels"),  # [B, H, 2]
    ]
    spec = RolloutSpec("window", "forecast", lookback, horizon, 3, (0, 2), 2, exogenous=exogenous)
    return _model(
        nodes,
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", lookback, 3])],
        [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["batch", horizon, 2])],
        [w, mix],
        spec,
    )
