"""DFT converter against onnxruntime, over opsets 17/20, axes, lengths and modes."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
hypothesis = pytest.importorskip("hypothesis")

import tvm  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from tvm import relax  # noqa: E402

from tvm_tqs.frontend.converters import install  # noqa: E402

TOL = 1e-5


def _import(model, feeds):
    install()
    return relax.frontend.onnx.from_onnx(model, {k: v.shape for k, v in feeds.items()})


def _compile_and_run(model, feeds):
    ex = tvm.compile(_import(model, feeds), tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(v) for v in feeds.values()]).numpy()


def _signal_axis(shape, opset, axis):
    if axis is None:
        axis = 1 if opset < 20 else -2
    return axis % len(shape)


def _assert_close(model, feeds, *, ort_is_wrong=False):
    """Compare with onnxruntime and with the ONNX reference evaluator (float64 numpy FFTs).

    onnxruntime 1.32's IRFFT (inverse=1, onesided=1) disagrees with the ONNX reference (numpy's
    irfft) whenever the input holds a number of bins other than dft_length // 2 + 1: it then
    reads the wrong bins (e.g. with 2 bins and dft_length=1 it returns the real part of bin 1,
    not of bin 0). The converter follows the ONNX reference, the only oracle in those cases.
    """
    from onnx.reference import ReferenceEvaluator

    got = _compile_and_run(model, feeds)
    oracles = {"onnx.reference": ReferenceEvaluator(model).run(None, feeds)[0]}
    if not ort_is_wrong:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        oracles["onnxruntime"] = sess.run(None, feeds)[0]
    for name, expected in oracles.items():
        assert got.shape == expected.shape, name
        err = float(np.abs(got - expected).max())
        assert err <= TOL, f"max abs error {err} against {name}"


def _dft_model(
    *,
    seed,
    shape,
    opset,
    axis=None,
    inverse=0,
    onesided=0,
    dft_length=None,
    length_input=False,
    axis_input=False,
):
    """A one-node DFT model and its feeds; ``axis=None`` leaves the opset's default axis.

    ``length_input``/``axis_input`` make dft_length/axis graph inputs instead of constants.
    """
    rng = np.random.default_rng(seed)
    # onnxruntime's own float32 rounding (it is one oracle) grows with the transform size, to
    # 1.5e-5 at size 15 for inputs in [-0.5, 0.5] where ours stays near 4e-7: shrink the input
    # as the size grows so that the comparison measures the converter, not onnxruntime.
    size = max(shape[_signal_axis(shape, opset, axis)], dft_length or 0)
    amplitude = 0.5 * min(1.0, (8 / size) ** 2)
    feeds = {"input": rng.uniform(-amplitude, amplitude, shape).astype(np.float32)}
    inits, node_inputs = [], ["input", ""]
    if dft_length is not None:
        node_inputs[1] = "dft_length"
        if length_input:
            feeds["dft_length"] = np.array(dft_length, np.int64)
        else:
            inits.append(helper.make_tensor("dft_length", TensorProto.INT64, [], [dft_length]))
    attrs = {"inverse": inverse, "onesided": onesided}
    if axis is not None and opset < 20:
        attrs["axis"] = axis
    elif axis is not None:
        node_inputs.append("axis")
        if axis_input:
            feeds["axis"] = np.array(axis, np.int64)
        else:
            inits.append(helper.make_tensor("axis", TensorProto.INT64, [], [axis]))
    while node_inputs[-1] == "":
        node_inputs.pop()
    node = helper.make_node("DFT", node_inputs, ["output"], name="dft_under_test", **attrs)
    graph_inputs = [
        helper.make_tensor_value_info(
            k, TensorProto.FLOAT if k == "input" else TensorProto.INT64, list(v.shape)
        )
        for k, v in feeds.items()
    ]
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["d"] * len(shape))
    graph = helper.make_graph([node], "dft", graph_inputs, [out], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), feeds


@st.composite
def dft_cases(draw):
    opset = draw(st.sampled_from([17, 20]), label="opset")
    signal_rank = draw(st.integers(1, 3), label="signal_rank")  # dims before the complex axis
    inverse = draw(st.integers(0, 1), label="inverse")
    onesided = draw(st.integers(0, 1), label="onesided")
    # A forward one-sided DFT takes real input; IRFFT (inverse one-sided) takes complex input.
    complex_input = bool(inverse) if onesided else draw(st.booleans(), label="complex")
    dims = draw(st.lists(st.integers(1, 4), min_size=signal_rank, max_size=signal_rank), label="dims")
    axis = draw(st.integers(0, signal_rank - 1), label="axis")
    dims[axis] = draw(st.integers(1, 16), label="n")
    shape = [*dims, 2 if complex_input else 1]
    dft_length = draw(st.none() | st.integers(1, 2 * dims[axis] + 3), label="dft_length")
    if inverse and onesided and dft_length is None and dims[axis] < 2:
        dft_length = draw(st.integers(1, 6), label="irfft_length")  # the default 2 * (n - 1) is 0
    # Spell the axis as negative half of the time; the opset-20 default axis is -2.
    spelled = axis - len(shape) if draw(st.booleans(), label="negative_axis") else axis
    if opset >= 20 and spelled == -2 and draw(st.booleans(), label="default_axis"):
        spelled = None
    if opset < 20 and spelled == 1 and draw(st.booleans(), label="default_axis"):
        spelled = None
    return dict(
        shape=shape, opset=opset, axis=spelled, inverse=inverse, onesided=onesided, dft_length=dft_length
    )


def _check(case, seed):
    bins = case["shape"][_signal_axis(case["shape"], case["opset"], case.get("axis"))]
    irfft = case.get("inverse") and case.get("onesided")
    ort_is_wrong = bool(irfft) and case.get("dft_length") is not None and bins != case["dft_length"] // 2 + 1
    _assert_close(*_dft_model(seed=seed, **case), ort_is_wrong=ort_is_wrong)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=dft_cases(), seed=st.integers(0, 2**31 - 1))
def test_dft_matches_onnxruntime(case, seed):
    _check(case, seed)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=dft_cases(), seed=st.integers(0, 2**31 - 1))
def test_dft_matches_onnxruntime_many(case, seed):
    _check(case, seed)


# Every mode at least once, whatever hypothesis draws.
@pytest.mark.parametrize(
    "case",
    [
        dict(shape=[2, 8, 1], opset=17),  # real, default axis 1
        dict(shape=[2, 8, 2], opset=17, inverse=1),
        dict(shape=[2, 8, 1], opset=17, onesided=1, dft_length=5),  # truncate
        dict(shape=[2, 5, 2], opset=17, inverse=1, onesided=1),  # IRFFT, default length 8
        dict(shape=[2, 5, 2], opset=17, inverse=1, onesided=1, dft_length=13),  # IRFFT, missing bins
        dict(shape=[2, 5, 2], opset=20, inverse=1, onesided=1, axis=1, dft_length=3),  # IRFFT, extra bins
        dict(shape=[3, 4, 6, 2], opset=17, axis=2, dft_length=9),  # zero-pad, last signal axis
        dict(shape=[3, 4, 6, 2], opset=20),  # default axis -2
        dict(shape=[3, 4, 6, 1], opset=20, axis=0, onesided=1),  # the batch axis, not the last
        dict(shape=[3, 4, 6, 2], opset=20, axis=-3, inverse=1, dft_length=3),
    ],
)
def test_dft_modes(case):
    _check(case, 0)


def test_dft_is_one_matmul():
    model, feeds = _dft_model(seed=0, shape=[2, 16, 3, 2], opset=20, axis=1)
    mod = relax.get_pipeline("zero")(_import(model, feeds))
    kernels = [
        b.value.args[0].name_hint
        for block in mod["main"].body.blocks
        for b in block.bindings
        if isinstance(b.value, relax.Call) and b.value.op.name == "relax.call_tir"
    ]
    assert sum("matmul" in k for k in kernels) == 1, kernels


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        # A graph input is refused with the way to bind it: an initializer of the input's name.
        (
            dict(opset=17, dft_length=6, length_input=True),
            tvm.error.OpAttributeUnImplemented,
            "'dft_length' .the graph input 'dft_length'.*initializer named 'dft_length'",
        ),
        (
            dict(opset=20, axis=1, axis_input=True),
            tvm.error.OpAttributeUnImplemented,
            "'axis' .the graph input 'axis'.*initializer named 'axis'",
        ),
        (dict(opset=17, onesided=1, shape=[2, 8, 2]), tvm.error.OpAttributeInvalid, "onesided"),
        (dict(opset=17, axis=2), tvm.error.OpAttributeInvalid, "axis 2"),
    ],
)
def test_dft_errors_name_the_node(kwargs, error, match):
    kwargs.setdefault("shape", [2, 8, 1])
    model, feeds = _dft_model(seed=0, **kwargs)
    with pytest.raises(error, match=rf"dft_under_test.*{match}"):
        _import(model, feeds)


def test_axis_input_bound_by_an_initializer():
    """The binding the refusal suggests: an initializer named like the graph input makes it a constant."""
    model, feeds = _dft_model(seed=0, shape=[2, 8, 3, 1], opset=20, axis=1, axis_input=True)
    model.graph.initializer.append(
        helper.make_tensor("axis", TensorProto.INT64, [], [int(feeds.pop("axis"))])
    )
    _assert_close(model, feeds)
