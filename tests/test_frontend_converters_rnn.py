"""LSTM, GRU and RNN converters against onnxruntime, on random weights and shapes."""

from __future__ import annotations

import copy

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
hypothesis = pytest.importorskip("hypothesis")

import tvm  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from tvm import relax  # noqa: E402

from tvm_tqs.frontend.converters import install  # noqa: E402

TOL = 1e-5
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
PER_DIRECTION = {"LSTM": 3, "GRU": 2, "RNN": 1}  # activation functions
# Every function of the ONNX RNN activation set, with the alpha/beta each one consumes.
ACTIVATIONS = {
    "Sigmoid": 0,
    "Tanh": 0,
    "Relu": 0,
    "HardSigmoid": 2,
    "Affine": 2,
    "LeakyRelu": 1,
    "ThresholdedRelu": 1,
    "ScaledTanh": 2,
    "Elu": 1,
    "Softsign": 0,
    "Softplus": 0,
}


def _compile_and_run(model, feeds, shape_dict=None, **import_kwargs):
    install()
    shape_dict = shape_dict or {k: v.shape for k, v in feeds.items()}
    mod = relax.frontend.onnx.from_onnx(model, shape_dict, **import_kwargs)
    ex = tvm.compile(mod, tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    args = [tvm.runtime.tensor(v) for v in feeds.values()]
    if "params" in mod["main"].attrs:
        args += list(mod["main"].attrs["params"])
    out = vm["main"](*args)
    if isinstance(out, tvm.runtime.Tensor):
        return [out.numpy()]
    return [o.numpy() for o in out]


def _run_ort(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


# Axis orders that turn layout=1 tensors into layout=0 ones (and the reverse for outputs).
TO_LAYOUT0 = {"X": (1, 0, 2), "initial_h": (1, 0, 2), "initial_c": (1, 0, 2)}
TO_LAYOUT1 = {"Y": (2, 0, 1, 3), "Y_h": (1, 0, 2), "Y_c": (1, 0, 2)}


def _reference(model, feeds):
    """onnxruntime's outputs for a one-node model.

    onnxruntime's CPU LSTM/GRU kernels reject layout=1 ("Batchwise recurrent operations are not
    supported"), so such a node runs as layout=0 on transposed tensors: the spec defines layout=1
    as exactly that transposition.
    """
    node = model.graph.node[0]
    if node.op_type not in GATES or not any(a.name == "layout" and a.i == 1 for a in node.attribute):
        return _run_ort(model, feeds)
    model0 = copy.deepcopy(model)
    for a in model0.graph.node[0].attribute:
        if a.name == "layout":
            a.i = 0
    feeds0 = {
        k: np.ascontiguousarray(v.transpose(TO_LAYOUT0[k])) if k in TO_LAYOUT0 else v
        for k, v in feeds.items()
    }
    for init in model0.graph.initializer:
        if init.name in TO_LAYOUT0:
            value = numpy_helper.to_array(init).transpose(TO_LAYOUT0[init.name])
            init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), init.name))
    graph_inputs = [(vi, TO_LAYOUT0[vi.name]) for vi in model0.graph.input if vi.name in TO_LAYOUT0]
    # Outputs go back through the inverse permutation of TO_LAYOUT1.
    graph_outputs = [(vi, tuple(np.argsort(TO_LAYOUT1[vi.name]))) for vi in model0.graph.output]
    for vi, order in graph_inputs + graph_outputs:
        dims = vi.type.tensor_type.shape.dim
        values = [d.dim_value for d in dims]
        for d, axis in zip(dims, order, strict=True):
            d.dim_value = values[axis]
    outs = _run_ort(model0, feeds0)
    return [o.transpose(TO_LAYOUT1[vi.name]) for vi, o in zip(model0.graph.output, outs, strict=True)]


def _assert_close(model, feeds, shape_dict=None, **import_kwargs):
    expected = _reference(model, feeds)
    got = _compile_and_run(model, feeds, shape_dict, **import_kwargs)
    assert len(got) == len(expected)
    for name, g, e in zip((o.name for o in model.graph.output), got, expected, strict=True):
        assert g.shape == e.shape, name
        err = float(np.abs(g - e).max()) if e.size else 0.0
        assert err <= TOL, f"{name}: max abs error {err}"


def _rnn_model(
    op,
    *,
    seed,
    seq_len,
    batch,
    input_size,
    hidden,
    direction="forward",
    layout=0,
    bias=True,
    init_h=False,
    init_c=False,
    peephole=False,
    outputs=("Y", "Y_h", "Y_c"),
    weights_as_inputs=False,
    states_as_constants=False,
    seq_lens=None,
    scale=1.0,
    **attrs,
):
    """An ONNX model with one LSTM, GRU or RNN node, plus the feeds to run it.

    ``outputs`` lists the node outputs by name ("" leaves a slot empty); ``seq_lens`` is
    "input" (a graph input, fed full lengths: set feeds["sequence_lens"] to change them) or an
    array (an initializer). W, R, B and P are initializers unless
    ``weights_as_inputs``; initial states are graph inputs unless ``states_as_constants``.
    """
    rng = np.random.default_rng(seed)
    num_dirs = 2 if direction == "bidirectional" else 1
    gh = GATES[op] * hidden

    def uniform(*shape):
        return rng.uniform(-scale, scale, shape).astype(np.float32)

    x_shape = [seq_len, batch, input_size] if layout == 0 else [batch, seq_len, input_size]
    state_shape = [num_dirs, batch, hidden] if layout == 0 else [batch, num_dirs, hidden]
    feeds = {"X": uniform(*x_shape)}
    consts = {"W": uniform(num_dirs, gh, input_size), "R": uniform(num_dirs, gh, hidden)}
    if bias:
        consts["B"] = uniform(num_dirs, 2 * gh)
    states = {}
    if init_h:
        states["initial_h"] = uniform(*state_shape)
    if init_c:
        states["initial_c"] = uniform(*state_shape)
    if peephole:
        consts["P"] = uniform(num_dirs, 3 * hidden)
    if weights_as_inputs:
        feeds.update(consts)
        consts = {}
    (consts if states_as_constants else feeds).update(states)
    inits = [helper.make_tensor(k, TensorProto.FLOAT, v.shape, v.flatten()) for k, v in consts.items()]
    if isinstance(seq_lens, str):
        feeds["sequence_lens"] = np.full([batch], seq_len, np.int32)
    elif seq_lens is not None:
        inits.append(helper.make_tensor("sequence_lens", TensorProto.INT32, [batch], list(seq_lens)))

    names = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]
    present = set(feeds) | {t.name for t in inits}
    node_inputs = [n if n in present else "" for n in names[: 8 if op == "LSTM" else 6]]
    while node_inputs[-1] == "":
        node_inputs.pop()
    node = helper.make_node(
        op,
        node_inputs,
        list(outputs),
        name=f"{op.lower()}_under_test",
        hidden_size=hidden,
        direction=direction,
        **({"layout": layout} if layout else {}),
        **attrs,
    )
    graph_inputs = [
        helper.make_tensor_value_info(
            k, TensorProto.INT32 if k == "sequence_lens" else TensorProto.FLOAT, list(v.shape)
        )
        for k, v in feeds.items()
    ]
    y_shape = [seq_len, num_dirs, batch, hidden] if layout == 0 else [batch, seq_len, num_dirs, hidden]
    graph_outputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, y_shape if n == "Y" else state_shape)
        for n in outputs
        if n
    ]
    graph = helper.make_graph([node], "rnn", graph_inputs, graph_outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    return model, feeds


# Which of an LSTM's outputs a node lists; "" is an empty (not requested) slot.
LSTM_OUTPUTS = [("Y",), ("Y", "Y_h"), ("", "Y_h"), ("", "", "Y_c"), ("Y", "", "Y_c"), ("Y", "Y_h", "Y_c")]
GRU_OUTPUTS = [("Y",), ("", "Y_h"), ("Y", "Y_h")]
RNN_OUTPUTS = GRU_OUTPUTS

shapes = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "seq_len": st.integers(1, 5),
        "batch": st.integers(1, 3),
        "input_size": st.integers(1, 4),
        "hidden": st.integers(1, 5),
    }
)


def _check_lstm(direction, layout, data):
    kw = data.draw(shapes)
    kw.update(
        bias=data.draw(st.booleans(), label="bias"),
        init_h=data.draw(st.booleans(), label="init_h"),
        init_c=data.draw(st.booleans(), label="init_c"),
        peephole=data.draw(st.booleans(), label="peephole"),
        input_forget=data.draw(st.integers(0, 1), label="input_forget"),
        outputs=data.draw(st.sampled_from(LSTM_OUTPUTS), label="outputs"),
        weights_as_inputs=data.draw(st.booleans(), label="weights_as_inputs"),
        states_as_constants=data.draw(st.booleans(), label="states_as_constants"),
    )
    _assert_close(*_rnn_model("LSTM", direction=direction, layout=layout, **kw))


def _check_gru(direction, linear_before_reset, data):
    kw = data.draw(shapes)
    kw.update(
        layout=data.draw(st.integers(0, 1), label="layout"),
        bias=data.draw(st.booleans(), label="bias"),
        init_h=data.draw(st.booleans(), label="init_h"),
        outputs=data.draw(st.sampled_from(GRU_OUTPUTS), label="outputs"),
        weights_as_inputs=data.draw(st.booleans(), label="weights_as_inputs"),
        states_as_constants=data.draw(st.booleans(), label="states_as_constants"),
    )
    _assert_close(*_rnn_model("GRU", direction=direction, linear_before_reset=linear_before_reset, **kw))


def _check_rnn(direction, layout, data):
    kw = data.draw(shapes)
    kw.update(
        bias=data.draw(st.booleans(), label="bias"),
        init_h=data.draw(st.booleans(), label="init_h"),
        outputs=data.draw(st.sampled_from(RNN_OUTPUTS), label="outputs"),
        weights_as_inputs=data.draw(st.booleans(), label="weights_as_inputs"),
        states_as_constants=data.draw(st.booleans(), label="states_as_constants"),
    )
    _assert_close(*_rnn_model("RNN", direction=direction, layout=layout, **kw))


def _check_activations(op, data):
    """Random activation functions, alpha/beta lists (possibly short) and clip."""
    kw = data.draw(shapes)
    direction = data.draw(st.sampled_from(["forward", "reverse", "bidirectional"]), label="direction")
    num_dirs = 2 if direction == "bidirectional" else 1
    per_dir = PER_DIRECTION[op]
    names = data.draw(
        st.lists(
            st.sampled_from(sorted(ACTIVATIONS)), min_size=per_dir * num_dirs, max_size=per_dir * num_dirs
        ),
        label="activations",
    )
    wants_alpha = sum(ACTIVATIONS[n] >= 1 for n in names)
    wants_beta = sum(ACTIVATIONS[n] == 2 for n in names)
    # Shorter lists than the functions need exercise the per-function defaults.
    alphas = data.draw(st.lists(st.floats(0.1, 1.0), max_size=wants_alpha), label="alphas")
    betas = data.draw(st.lists(st.floats(-0.5, 0.5), max_size=wants_beta), label="betas")
    attrs = {"activations": names}
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas
    if data.draw(st.booleans(), label="has_clip"):
        attrs["clip"] = data.draw(st.floats(0.1, 3.0), label="clip")
    if op == "GRU":
        attrs["linear_before_reset"] = data.draw(st.integers(0, 1), label="linear_before_reset")
        kw.update(outputs=("Y", "Y_h"))
    elif op == "RNN":
        kw.update(outputs=("Y", "Y_h"))
    else:
        kw.update(
            peephole=data.draw(st.booleans(), label="peephole"),
            init_c=data.draw(st.booleans(), label="init_c"),
            outputs=("Y", "Y_h", "Y_c"),
        )
    # Unbounded activations (Relu, Affine, ...) can grow the state step after step: moderate
    # weights keep values small enough that float32 rounding stays far below the tolerance.
    _assert_close(*_rnn_model(op, direction=direction, init_h=True, scale=0.5, **kw, **attrs))


DIRECTIONS = ["forward", "reverse", "bidirectional"]
FAST = settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", DIRECTIONS)
@FAST
@given(data=st.data())
def test_lstm_matches_onnxruntime(direction, layout, data):
    _check_lstm(direction, layout, data)


@pytest.mark.parametrize("linear_before_reset", [0, 1])
@pytest.mark.parametrize("direction", DIRECTIONS)
@FAST
@given(data=st.data())
def test_gru_matches_onnxruntime(direction, linear_before_reset, data):
    _check_gru(direction, linear_before_reset, data)


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", DIRECTIONS)
@FAST
@given(data=st.data())
def test_rnn_matches_onnxruntime(direction, layout, data):
    _check_rnn(direction, layout, data)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_activations_and_clip_match_onnxruntime(op, data):
    _check_activations(op, data)


@pytest.mark.slow
@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", DIRECTIONS)
@SLOW
@given(data=st.data())
def test_lstm_matches_onnxruntime_many(direction, layout, data):
    _check_lstm(direction, layout, data)


@pytest.mark.slow
@pytest.mark.parametrize("linear_before_reset", [0, 1])
@pytest.mark.parametrize("direction", DIRECTIONS)
@SLOW
@given(data=st.data())
def test_gru_matches_onnxruntime_many(direction, linear_before_reset, data):
    _check_gru(direction, linear_before_reset, data)


@pytest.mark.slow
@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", DIRECTIONS)
@SLOW
@given(data=st.data())
def test_rnn_matches_onnxruntime_many(direction, layout, data):
    _check_rnn(direction, layout, data)


@pytest.mark.slow
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_activations_and_clip_match_onnxruntime_many(op, data):
    _check_activations(op, data)


def _check_long_sequence(op, seq_len):
    """Float32 error must not build up along the unrolled recurrence (measured: <= 4e-7 at 128 steps)."""
    model, feeds = _rnn_model(
        op,
        seed=7,
        seq_len=seq_len,
        batch=2,
        input_size=4,
        hidden=8,
        direction="bidirectional",
        init_h=True,
        init_c=op == "LSTM",
        outputs=("Y", "Y_h"),
    )
    _assert_close(model, feeds)


def test_long_sequence_stays_within_tolerance():
    _check_long_sequence("LSTM", 12)


@pytest.mark.slow
@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_very_long_sequence_stays_within_tolerance(op):
    # Compile time grows faster than the sequence length: about 40 s at 128 steps.
    _check_long_sequence(op, 128)


def _seq_lens_case(op, seed, direction="bidirectional", layout=0, seq_lens="input", **kw):
    shape = dict(seq_len=4, batch=4, input_size=3, hidden=3)
    shape.update(kw)
    return _rnn_model(
        op,
        seed=seed,
        direction=direction,
        layout=layout,
        init_h=True,
        init_c=op == "LSTM",
        seq_lens=seq_lens,
        outputs=("Y", "Y_h", "Y_c") if op == "LSTM" else ("Y", "Y_h"),
        **shape,
    )


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_constant_full_length_sequence_lens_builds_the_unmasked_graph(op, direction):
    """A constant sequence_lens equal to the sequence length costs nothing: the same graph as none."""
    model, feeds = _seq_lens_case(op, 3, direction, seq_lens=[4, 4, 4, 4])
    plain, _ = _seq_lens_case(op, 3, direction, seq_lens=None)
    tvm.ir.assert_structural_equal(_import(model, feeds), _import(plain, feeds))
    _assert_close(model, feeds)


def _where_count(mod):
    count = 0

    def visit(expr):
        nonlocal count
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.where":
            count += 1

    relax.analysis.post_order_visit(mod["main"], visit)
    return count


@pytest.mark.parametrize(
    ("op", "direction", "layout"),
    [(op, d, 0) for op in GATES for d in DIRECTIONS] + [(op, "bidirectional", 1) for op in GATES],
)
def test_runtime_sequence_lens_matches_onnxruntime(op, direction, layout):
    """sequence_lens as a graph input, masked inside the recurrence: one build serves any lengths.

    Rows of every length 0..T: past its length a row's state is frozen and Y is zero; the reverse
    direction reads each row's own steps reversed; a row of length 0 has zero final states.
    """
    model, feeds = _seq_lens_case(op, 11, direction, layout, batch=5)
    mod = _import(model, feeds)
    assert _where_count(mod) > 0
    vm = relax.VirtualMachine(tvm.compile(mod, tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    for lens in ([4, 0, 2, 1, 3], [4, 4, 4, 4, 4], [1, 3, 0, 4, 2], [0, 0, 0, 0, 0]):
        feeds["sequence_lens"] = np.array(lens, np.int32)
        got = [o.numpy() for o in vm["main"](*[tvm.runtime.tensor(v) for v in feeds.values()])]
        expected = _reference(model, feeds)
        for name, g, e in zip((o.name for o in model.graph.output), got, expected, strict=True):
            assert g.shape == e.shape, name
            err = float(np.abs(g - e).max())
            assert err <= TOL, f"{name} with lengths {lens}: max abs error {err}"


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("lens", [[4, 2, 0, 1], [3, 3, 3, 3], [0, 0, 0, 0]])
def test_constant_sequence_lens_matches_onnxruntime(op, lens):
    """Constant lengths: constant masks, only on the steps some row skips (none before min(lens))."""
    model, feeds = _seq_lens_case(op, 9, seq_lens=lens)
    _assert_close(model, feeds)


def test_sequence_lens_out_of_range_is_rejected():
    model, feeds = _seq_lens_case("LSTM", 0, seq_lens=[4, 5, 1, 1])
    with pytest.raises(tvm.error.OpAttributeInvalid, match=r"lstm_under_test.*sequence_lens.*\[0, 4\]"):
        _import(model, feeds)


def test_sequence_lens_of_float_dtype_is_rejected():
    model, feeds = _seq_lens_case("GRU", 0)
    model.graph.input[-1].type.tensor_type.elem_type = TensorProto.FLOAT
    feeds["sequence_lens"] = feeds["sequence_lens"].astype(np.float32)
    with pytest.raises(
        tvm.error.OpAttributeInvalid, match=r"gru_under_test.*'sequence_lens' of dtype float32"
    ):
        _import(model, feeds)


def test_weights_kept_as_params():
    """keep_params_in_input turns W/R/B into function parameters: the relax-op weight path."""
    model, feeds = _rnn_model(
        "GRU",
        seed=5,
        seq_len=3,
        batch=2,
        input_size=3,
        hidden=4,
        direction="bidirectional",
        linear_before_reset=1,
        outputs=("Y", "Y_h"),
    )
    _assert_close(model, feeds, keep_params_in_input=True)


@pytest.mark.parametrize(("op", "layout"), [("LSTM", 1), ("GRU", 0)])
def test_symbolic_batch(op, layout):
    model, feeds = _rnn_model(
        op,
        seed=1,
        seq_len=3,
        batch=2,
        input_size=3,
        hidden=4,
        direction="bidirectional",
        layout=layout,
        init_h=True,
        outputs=("Y", "Y_h"),
    )
    b = tvm.tirx.Var("b", "int64")
    shape_dict = (
        {"X": [3, b, 3], "initial_h": [2, b, 4]} if layout == 0 else {"X": [b, 3, 3], "initial_h": [b, 2, 4]}
    )
    _assert_close(model, feeds, shape_dict)


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_single_output_is_a_tensor(op):
    """A node listing only Y hands a tensor, not a one-field tuple, to the next node."""
    model, feeds = _rnn_model(op, seed=2, seq_len=3, batch=2, input_size=3, hidden=4, outputs=("Y",))
    model.graph.node.append(helper.make_node("Relu", ["Y"], ["Z"]))
    model.graph.output[0].name = "Z"
    _assert_close(model, feeds)


def _import(model, feeds):
    install()
    return relax.frontend.onnx.from_onnx(model, {k: v.shape for k, v in feeds.items()})


def test_unknown_activation_is_rejected():
    model, feeds = _rnn_model(
        "GRU",
        seed=0,
        seq_len=2,
        batch=1,
        input_size=2,
        hidden=2,
        activations=["Sigmoid", "Gelu"],
        outputs=("Y",),
    )
    with pytest.raises(tvm.error.OpAttributeUnImplemented, match=r"gru_under_test.*'activations'.*Gelu"):
        _import(model, feeds)


def test_unknown_attribute_is_rejected():
    model, feeds = _rnn_model("LSTM", seed=0, seq_len=2, batch=1, input_size=2, hidden=2, outputs=("Y",))
    model.graph.node[0].attribute.append(helper.make_attribute("output_sequence", 1))
    with pytest.raises(tvm.error.OpAttributeUnImplemented, match=r"lstm_under_test.*'output_sequence'"):
        _import(model, feeds)


def test_wrong_activation_count_is_rejected():
    model, feeds = _rnn_model(
        "LSTM",
        seed=0,
        seq_len=2,
        batch=1,
        input_size=2,
        hidden=2,
        direction="bidirectional",
        activations=["Sigmoid", "Tanh", "Tanh"],
        outputs=("Y",),
    )
    with pytest.raises(tvm.error.OpAttributeInvalid, match=r"lstm_under_test.*'activations'"):
        _import(model, feeds)


def test_symbolic_sequence_length_is_rejected():
    model, _ = _rnn_model("GRU", seed=0, seq_len=2, batch=1, input_size=2, hidden=2, outputs=("Y",))
    install()
    with pytest.raises(tvm.error.OpAttributeUnImplemented, match=r"gru_under_test.*symbolic sequence length"):
        relax.frontend.onnx.from_onnx(model, {"X": [tvm.tirx.Var("T", "int64"), 1, 2]})


def _fused_kernels(model, feeds):
    mod = relax.get_pipeline("zero")(_import(model, feeds))
    return [
        b.value.args[0].name_hint
        for block in mod["main"].body.blocks
        for b in block.bindings
        if isinstance(b.value, relax.Call) and b.value.op.name == "relax.call_tir"
    ]


@pytest.mark.parametrize(
    ("op", "attrs", "per_step"),
    [
        ("LSTM", {}, 3),
        ("GRU", {"linear_before_reset": 1}, 2),
        ("GRU", {"linear_before_reset": 0}, 3),
        ("RNN", {}, 1),
    ],
)
def test_compiled_graph_shape(op, attrs, per_step):
    """One input-projection matmul per direction, then a few fused kernels per step.

    LSTM needs three (matmul, new cell state, new hidden state: FuseOps gives a kernel one
    root, and c_t feeds both h_t and the next step); GRU with linear_before_reset=0 needs a
    second matmul for (r * h) @ Rh^T; RNN needs one (matmul, add and activation).
    """
    seq_len = 6
    model, feeds = _rnn_model(
        op,
        seed=0,
        seq_len=seq_len,
        batch=2,
        input_size=3,
        hidden=4,
        direction="bidirectional",
        init_h=True,
        init_c=op == "LSTM",
        outputs=("Y",),
        **attrs,
    )
    kernels = _fused_kernels(model, feeds)
    matmuls = [k for k in kernels if "matmul" in k]
    matmuls_per_step = 2 if op == "GRU" and not attrs["linear_before_reset"] else 1
    assert len(matmuls) == 2 * (1 + matmuls_per_step * seq_len), kernels
    # Everything else: the per-direction state and time splits and the final Y assembly.
    assert len(kernels) <= 2 * per_step * seq_len + 2 * 4 + 2, kernels


def test_torch_lstm_and_gru_export():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(4, 6, num_layers=2, batch_first=True, bidirectional=True)
            self.gru = torch.nn.GRU(12, 5, num_layers=2, batch_first=True, bidirectional=True)

        def forward(self, x):
            y, (h, c) = self.lstm(x)
            z, g = self.gru(y)
            return z, h, c, g

    import io

    x = torch.randn(3, 5, 4)
    buf = io.BytesIO()
    torch.onnx.export(Net().eval(), (x,), buf, dynamo=False, opset_version=17, input_names=["X"])
    model = onnx.load_from_string(buf.getvalue())
    ops = {n.op_type for n in model.graph.node}
    assert {"LSTM", "GRU"} <= ops
    _assert_close(model, {"X": x.numpy()})
