"""load(): every accepted input form, and a specific one-paragraph error for each kind of bad input."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
from onnx_builders import mlp_forecaster, with_unsupported_ops

import tvm_tqs
from tvm_tqs.errors import MissingShapeError, ModelLoadError, UnsupportedOpsError
from tvm_tqs.frontend.load import rollout_spec_of


def _param_shape(mod):
    return [int(d) for d in mod["main"].params[0].ty.shape.values]


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "mlp.onnx"
    onnx.save(mlp_forecaster(), str(path))
    return path


def test_path_bytes_proto_give_the_same_module(model_path):
    proto = onnx.load(str(model_path))
    mods = [
        tvm_tqs.load(model_path, {"batch": 2}),
        tvm_tqs.load(str(model_path), {"batch": 2}),
        tvm_tqs.load(model_path.read_bytes(), {"batch": 2}),
        tvm_tqs.load(proto, {"window": [2, 16, 2]}),
    ]
    for mod in mods:
        assert _param_shape(mod) == [2, 16, 2]
        tvm.ir.assert_structural_equal(mod["main"], mods[0]["main"])


def test_irmodule_passes_through(model_path):
    mod = tvm_tqs.load(model_path, {"batch": 1})
    assert tvm_tqs.load(mod) is mod


def test_rollout_contract_is_inferred_and_attached(model_path):
    spec = rollout_spec_of(tvm_tqs.load(model_path, {"batch": 1}))
    assert (spec.window_input, spec.lookback, spec.horizon, spec.channels) == ("window", 16, 4, 2)
    assert spec.target_channels == (0, 1) and spec.stride == 4


def test_missing_file():
    with pytest.raises(ModelLoadError, match=r"model file 'nope/missing.onnx' does not exist"):
        tvm_tqs.load("nope/missing.onnx")


def test_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="is a directory"):
        tvm_tqs.load(tmp_path)


def test_non_onnx_file(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is a text file, not a model\n")
    with pytest.raises(ModelLoadError, match=r"notes.onnx' is not an ONNX model"):
        tvm_tqs.load(path)


def test_truncated_file(model_path):
    data = model_path.read_bytes()
    model_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="mlp.onnx' is not an ONNX model or is corrupt"):
        tvm_tqs.load(model_path)


def test_checker_rejection_is_reported():
    model = mlp_forecaster()
    model.graph.node[1].input[1] = "no_such_tensor"
    with pytest.raises(ModelLoadError, match="not a valid ONNX model: the ONNX checker says"):
        tvm_tqs.load(model)


def test_unsupported_ops_are_all_listed_at_once():
    with pytest.raises(UnsupportedOpsError) as info:
        tvm_tqs.load(with_unsupported_ops())
    err = info.value
    assert err.unsupported == [("Celu", 2, "celu_first"), ("Det", 1, "det_node")]
    message = str(err)
    assert "2 operator type(s)" in message and "Celu x2 (first node 'celu_first')" in message
    assert "\n" not in message


def test_symbolic_batch_binds_to_one_everywhere_other_dynamic_dims_are_named(model_path, tmp_path):
    # load, inspect, score and compile bind a symbolic batch the same way: 1 unless input_shapes says.
    mod = tvm_tqs.load(model_path)
    assert [int(d) for d in mod["main"].params[0].ty.shape.values] == [1, 16, 2]
    assert [int(d) for d in tvm_tqs.load(model_path, {"batch": 3})["main"].params[0].ty.shape.values][0] == 3
    assert tvm_tqs.inspect(model_path)[0].inputs[0].shape[0] == 1
    model = onnx.load(str(model_path))
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "time"
    with pytest.raises(MissingShapeError) as info:
        tvm_tqs.load(model)
    message = str(info.value)
    assert "input 'window' dimension 1 ('time') is dynamic" in message
    assert "input_shapes={'time': N}" in message


@pytest.mark.parametrize(
    "shapes, match",
    [
        ({"windw": [1, 16, 2]}, r"names \['windw'\], which are neither inputs"),
        ({"window": [1, 16]}, "has rank 2 but input 'window' has rank 3"),
        ({"window": [1, 0, 2]}, "must be a list of positive ints"),
    ],
)
def test_bad_input_shapes(model_path, shapes, match):
    with pytest.raises(MissingShapeError, match=match):
        tvm_tqs.load(model_path, shapes)


def test_wrong_type():
    with pytest.raises(ModelLoadError, match="not int"):
        tvm_tqs.load(42)


def test_loaded_module_computes_like_onnxruntime(model_path):
    ort = pytest.importorskip("onnxruntime")
    from tvm_tqs.runtime import VMRunner, build

    x = np.random.default_rng(0).standard_normal((3, 16, 2)).astype(np.float32)
    expected = ort.InferenceSession(str(model_path)).run(None, {"window": x})[0]
    got = VMRunner(build(tvm_tqs.load(model_path, {"batch": 3})))(x)[0]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_shape_arithmetic_the_importer_refuses_is_folded_once_shapes_are_bound():
    ort = pytest.importorskip("onnxruntime")
    from onnx_builders import shape_arithmetic_pad

    from tvm_tqs.frontend.fold import fold_constants
    from tvm_tqs.runtime import VMRunner, build

    model = shape_arithmetic_pad()
    folded, count = fold_constants(model, {"window": [3, 8, 2]})
    assert count == 5 and [n.op_type for n in folded.graph.node] == [
        "Pad",
        "Transpose",
        "MatMul",
        "Transpose",
    ]
    x = np.random.default_rng(1).standard_normal((3, 8, 2)).astype(np.float32)
    expected = ort.InferenceSession(model.SerializeToString()).run(None, {"window": x})[0]
    got = VMRunner(build(tvm_tqs.load(model, {"batch": 3})))(x)[0]
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
