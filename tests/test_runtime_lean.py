"""The lean run path (`runtime.LeanCall`, `CompiledModel.run`): same results as a plain VM call, results that
later calls do not change, inputs converted to the model's dtypes, outputs that alias an input copied."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper
from tvm import relax

import tvm_tqs
from tvm_tqs.errors import TQSError
from tvm_tqs.examples import example_model
from tvm_tqs.frontend.load import load
from tvm_tqs.graph import fuse
from tvm_tqs.runtime import LeanCall, VMRunner, build

EXAMPLE = example_model()


@pytest.fixture(scope="module")
def compiled():
    return tvm_tqs.compile(EXAMPLE, target="x86", uniform="int8")


def test_run_matches_the_vm_and_keeps_earlier_results(compiled):
    rng = np.random.default_rng(0)
    x1, x2 = (rng.standard_normal((1, 96, 2)).astype(np.float32) for _ in range(2))
    vm = relax.VirtualMachine(compiled.executable, tvm.cpu())
    want1 = vm["main"](tvm.runtime.tensor(x1)).numpy()
    want2 = vm["main"](tvm.runtime.tensor(x2)).numpy()
    got1 = compiled.run(x1)[0]
    kept = got1.copy()
    got2 = compiled.run(x2)[0]
    np.testing.assert_array_equal(got1, want1)
    np.testing.assert_array_equal(got2, want2)
    np.testing.assert_array_equal(got1, kept)  # the second call did not write into the first result
    # float64 and non-contiguous inputs are converted like np.asarray(x, float32)
    x64 = np.asfortranarray(x1.astype(np.float64))
    np.testing.assert_array_equal(compiled.run(x64)[0], want1)


def test_wrong_number_of_inputs_is_refused(compiled):
    x = np.zeros((1, 96, 2), np.float32)
    with pytest.raises(TQSError, match="takes 1 inputs"):
        compiled.run(x, x)


def test_an_output_that_aliases_an_input_is_copied():
    # forecast = Identity(window): main returns its parameter, the very tensor the input buffer backs
    graph = helper.make_graph(
        [helper.make_node("Identity", ["window"], ["forecast"])],
        "alias",
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, [1, 4, 2])],
        [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, [1, 4, 2])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto)
    mod = load(proto)
    runner = VMRunner(build(fuse(mod)))
    a = np.arange(8, dtype=np.float32).reshape(1, 4, 2)
    first = runner(a)[0]
    runner(a + 100)
    np.testing.assert_array_equal(first, a)
    assert isinstance(runner.call, LeanCall)


def test_two_inputs_two_outputs_and_rebinding():
    # the general hot path: two inputs, a tuple of outputs, one of them a view of an input (copied)
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Identity", ["a"], ["same"])],
        "two",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in ("a", "b")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in ("sum", "same")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    runner = VMRunner(build(fuse(load(proto))))
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((2, 3), np.float32)
    first = runner(a, b)
    runner(a + 10, b)
    np.testing.assert_array_equal(first[0], a + b)
    np.testing.assert_array_equal(first[1], a)  # not overwritten by the second call's input
    # a nested list (no shape) takes the slow path and binds again; arrays take the hot path after it
    call = LeanCall(runner.vm["main"], ["float32", "float32"])
    np.testing.assert_array_equal(call(a, b)[0], a + b)
    np.testing.assert_array_equal(call(a.tolist(), b)[0], a + b)
    np.testing.assert_array_equal(call(a, 2 * b)[0], a + 2 * b)
    with pytest.raises(TypeError, match="takes 2 inputs"):
        call(a)
    np.testing.assert_array_equal(call(a, b)[1], a)
