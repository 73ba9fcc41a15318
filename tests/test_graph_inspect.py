"""inspect(): one FusedOp per call site, with kinds, shapes, weights and MACs computed from the graph."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx_builders import mlp_forecaster, shared_weight_model

import tvm_tqs
from tvm_tqs.graph import fuse
from tvm_tqs.runtime import VMRunner, build


def test_sites_kinds_shapes_weights_macs():
    ops = tvm_tqs.inspect(shared_weight_model())
    assert [op.index for op in ops] == [0, 1, 2, 3, 4]
    # The conv runs channels-last (passes/channels_last.py): the NCW tensors are transposed around it.
    kinds = [("matmul", "tanh"), ("matmul",), ("permute_dims",), ("conv1d",), ("permute_dims",)]
    assert [op.kinds for op in ops] == kinds
    assert [op.anchor for op in ops] == ["matmul", "matmul", "permute_dims", "conv1d", "permute_dims"]
    assert [op.inputs[0].shape for op in ops] == [(1, 1, 8), (1, 1, 8), (1, 1, 8), (1, 8, 1), (1, 7, 3)]
    assert ops[3].outputs[0].shape == (1, 7, 3) and ops[4].outputs[0].shape == (1, 3, 7)
    # MatMul [1,1,8] x [8,8]: 8*8 MACs; Conv1d 3 out x 7 positions x 1 in x kernel 2; transposes none.
    assert [op.macs for op in ops] == [64, 64, 0, 42, 0]
    # Both MatMuls read the same initializer: one weight id, counted once.
    assert ops[0].weights[0].id == ops[1].weights[0].id == "w0"
    assert ops[0].weights[0].shape == (8, 8) and ops[0].weights[0].nbytes == 256
    assert ops[3].weights[0].id == "w1" and ops[3].weights[0].size == 6


def test_table_is_deterministic_and_json_serialisable():
    first = [op.to_dict() for op in tvm_tqs.inspect(mlp_forecaster(), input_shapes={"batch": 1})]
    second = [op.to_dict() for op in tvm_tqs.inspect(mlp_forecaster(), input_shapes={"batch": 1})]
    assert first == second
    assert json.loads(json.dumps(first)) == first
    ops = tvm_tqs.inspect(mlp_forecaster(), input_shapes={"batch": 1})
    assert [tvm_tqs.FusedOp.from_dict(d) for d in first] == ops


def test_batch_size_scales_macs_not_weights():
    one = tvm_tqs.inspect(mlp_forecaster(), input_shapes={"batch": 1})
    four = tvm_tqs.inspect(mlp_forecaster(), input_shapes={"batch": 4})
    assert [op.macs * 4 for op in one] == [op.macs for op in four]
    assert [op.weight_size for op in one] == [op.weight_size for op in four]


def test_fused_graph_matches_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    model = mlp_forecaster()
    x = np.random.default_rng(3).standard_normal((2, 16, 2)).astype(np.float32)
    expected = ort.InferenceSession(model.SerializeToString()).run(None, {"window": x})[0]
    got = VMRunner(build(fuse(model, {"batch": 2})))(x)[0]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_unknown_target_lists_valid_ones():
    with pytest.raises(tvm_tqs.TQSError, match=r"unknown target 'riscv'; valid targets: x86, arm_cpu"):
        tvm_tqs.inspect(mlp_forecaster(), target="riscv", input_shapes={"batch": 1})
