"""``load(recurrent="loop")``: LSTM / GRU / RNN as one loop kernel per direction (`targets.kernels.recurrent`).

The same oracles as the unrolled converters: the onnx conformance node cases, onnxruntime on random
nodes (the hypothesis checks of test_frontend_converters_rnn, run with the loop emission switched on),
a float64 numpy reference of the ONNX recurrences, and onnxruntime on the recurrent zoo models.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("hypothesis")

import test_frontend_converters_rnn as rnn_tests  # noqa: E402
import test_onnx_conformance as conformance  # noqa: E402
import tvm  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from onnx import numpy_helper  # noqa: E402
from tvm import relax  # noqa: E402

import tvm_tqs  # noqa: E402
from tvm_tqs.errors import TQSError  # noqa: E402
from tvm_tqs.frontend.converters.rnn_loop import recurrent_mode  # noqa: E402
from tvm_tqs.passes.fuse import fuse_pipeline  # noqa: E402
from tvm_tqs.rollout import io_names  # noqa: E402
from tvm_tqs.runtime import VMRunner, build  # noqa: E402
from tvm_tqs.targets.kernels import recurrent  # noqa: E402

cases = conformance.cases  # the fixture: every LSTM/GRU/RNN/DFT node case onnx ships
ZOO = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo" / "models"
RECURRENT_CASES = [n for n, how in conformance.CASES.items() if how == conformance.RUNS and "dft" not in n]
FAST = settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _loop_functions(mod: tvm.IRModule) -> list[str]:
    return [gv.name_hint for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]


def _loop_calls(mod: tvm.IRModule) -> int:
    """``call_tir`` sites of `main` that run a loop kernel (equal layers share one PrimFunc)."""
    count = 0

    def visit(expr):
        nonlocal count
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir":
            count += "_loop_" in expr.args[0].name_hint

    relax.analysis.post_order_visit(mod["main"], visit)
    return count


def _relax_ops(mod: tvm.IRModule) -> set[str]:
    names = set()

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            names.add(expr.op.name)

    relax.analysis.post_order_visit(mod["main"], visit)
    return names


@contextmanager
def _loop_emissions():
    """Loop mode on, counting the loop kernels generated: a check must not pass by unrolling."""
    with (
        recurrent_mode("loop"),
        mock.patch.object(recurrent, "recurrent_fp32", wraps=recurrent.recurrent_fp32) as spy,
    ):
        yield spy


@pytest.mark.parametrize("name", RECURRENT_CASES)
def test_conformance_case_through_the_loop_kernel(cases, name):
    case = cases[name]
    (inputs, expected), *_ = case.data_sets
    feeds = {vi.name: np.asarray(v) for vi, v in zip(case.model.graph.input, inputs, strict=True)}
    mod = tvm_tqs.load(case.model, recurrent="loop")
    node = case.model.graph.node[0]
    bidirectional = any(a.name == "direction" and a.s == b"bidirectional" for a in node.attribute)
    assert len(_loop_functions(mod)) == (2 if bidirectional else 1)
    assert "relax.matmul" not in _relax_ops(mod)  # nothing was unrolled
    names, _ = io_names(mod)
    got = VMRunner(build(mod))(*[feeds[n] for n in names])
    assert len(got) == len(expected)
    for out, g, e in zip(case.model.graph.output, got, expected, strict=True):
        assert g.shape == e.shape, f"{name} output '{out.name}'"
        np.testing.assert_allclose(
            g, e, rtol=conformance.RTOL, atol=conformance.ATOL, err_msg=f"{name} output '{out.name}'"
        )


DIRECTIONS = ["forward", "reverse", "bidirectional"]


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", DIRECTIONS)
@FAST
@given(data=st.data())
def test_lstm_loop_matches_onnxruntime(direction, layout, data):
    with _loop_emissions() as spy:
        rnn_tests._check_lstm(direction, layout, data)
    assert spy.call_count == (2 if direction == "bidirectional" else 1)


@pytest.mark.parametrize("linear_before_reset", [0, 1])
@pytest.mark.parametrize("direction", DIRECTIONS)
@FAST
@given(data=st.data())
def test_gru_loop_matches_onnxruntime(direction, linear_before_reset, data):
    with _loop_emissions() as spy:
        rnn_tests._check_gru(direction, linear_before_reset, data)
    assert spy.call_count == (2 if direction == "bidirectional" else 1)


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", DIRECTIONS)
@FAST
@given(data=st.data())
def test_rnn_loop_matches_onnxruntime(direction, layout, data):
    with _loop_emissions() as spy:
        rnn_tests._check_rnn(direction, layout, data)
    assert spy.call_count == (2 if direction == "bidirectional" else 1)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_loop_activations_and_clip_match_onnxruntime(op, data):
    with _loop_emissions() as spy:
        rnn_tests._check_activations(op, data)
    assert spy.call_count >= 1


@pytest.mark.parametrize(
    ("op", "direction", "layout"),
    [("LSTM", "bidirectional", 1), ("GRU", "reverse", 0), ("RNN", "forward", 0)],
)
def test_loop_runtime_sequence_lens_matches_onnxruntime(op, direction, layout):
    """One build serves any lengths: masked inside the loop, as the unrolled graph masks per step."""
    model, feeds = rnn_tests._seq_lens_case(op, 11, direction, layout, batch=5)
    with recurrent_mode("loop"):
        mod = rnn_tests._import(model, feeds)
    assert _loop_functions(mod) and "relax.where" not in _relax_ops(mod)
    vm = relax.VirtualMachine(tvm.compile(mod, tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    for lens in ([4, 0, 2, 1, 3], [4, 4, 4, 4, 4], [0, 0, 0, 0, 0]):
        feeds["sequence_lens"] = np.array(lens, np.int32)
        got = [o.numpy() for o in vm["main"](*[tvm.runtime.tensor(v) for v in feeds.values()])]
        for name, g, e in zip(
            (o.name for o in model.graph.output), got, rnn_tests._reference(model, feeds), strict=True
        ):
            err = float(np.abs(g - e).max())
            assert err <= rnn_tests.TOL, f"{name} with lengths {lens}: max abs error {err}"


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_loop_constant_sequence_lens_and_weights_as_params(op):
    model, feeds = rnn_tests._seq_lens_case(op, 9, seq_lens=[4, 2, 0, 1])
    with _loop_emissions() as spy:
        rnn_tests._assert_close(model, feeds)
        rnn_tests._assert_close(model, feeds, keep_params_in_input=True)
    assert spy.call_count == 4


def test_symbolic_batch_falls_back_to_unrolling():
    """The kernel needs a static batch (load always binds one): a symbolic batch still imports, unrolled."""
    with _loop_emissions() as spy:
        rnn_tests.test_symbolic_batch("GRU", 0)
    assert spy.call_count == 0


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _numpy_direction(op, x, w, r, bias, h, c, lens, reverse, linear_before_reset):
    """The ONNX recurrence of one direction in float64 (default activations), ``x`` time-major."""
    hid = h.shape[-1]
    gates = bias.reshape(2, -1)
    y = np.zeros((x.shape[0], *h.shape))
    for t in reversed(range(x.shape[0])) if reverse else range(x.shape[0]):
        xw, hr = x[t] @ w.T + gates[0], h @ r.T + gates[1]
        c_new = c
        if op == "LSTM":
            i, o, f, g = np.split(xw + hr, 4, axis=-1)
            c_new = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            h_new = _sigmoid(o) * np.tanh(c_new)
        elif op == "GRU":
            (xz, xr, xh), (rz, rr, rh) = np.split(xw, 3, axis=-1), np.split(hr, 3, axis=-1)
            z, reset = _sigmoid(xz + rz), _sigmoid(xr + rr)
            if not linear_before_reset:
                rh = (reset * h) @ r[2 * hid :].T + gates[1, 2 * hid :]
                reset = 1.0
            h_tilde = np.tanh(xh + reset * rh)
            h_new = (1 - z) * h_tilde + z * h
        else:
            h_new = np.tanh(xw + hr)
        keep = (t < lens)[:, None]
        y[t] = np.where(keep, h_new, 0.0)
        h, c = np.where(keep, h_new, h), np.where(keep, c_new, c)
    alive = (lens > 0)[:, None]
    return y, np.where(alive, h, 0.0), np.where(alive, c, 0.0)


def _numpy_layer(op, model, feeds, direction, layout, linear_before_reset):
    consts = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    to_time_major = (lambda a: a) if layout == 0 else (lambda a: a.transpose(1, 0, 2))
    x = to_time_major(feeds["X"].astype(np.float64))
    h0 = to_time_major(feeds["initial_h"].astype(np.float64))
    c0 = to_time_major(feeds["initial_c"].astype(np.float64)) if op == "LSTM" else np.zeros_like(h0)
    ys, hs = [], []
    for d, reverse in enumerate([False, True] if direction == "bidirectional" else [direction == "reverse"]):
        y, h, _ = _numpy_direction(
            op, x, consts["W"][d], consts["R"][d], consts["B"][d], h0[d], c0[d],
            feeds["sequence_lens"], reverse, linear_before_reset,
        )  # fmt: skip
        ys.append(y)
        hs.append(h)
    y, h = np.stack(ys, axis=1), np.stack(hs)
    return (y, h) if layout == 0 else (y.transpose(2, 0, 1, 3), h.transpose(1, 0, 2))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    op=st.sampled_from(["LSTM", "GRU", "RNN"]),
    seq_len=st.integers(1, 6),
    batch=st.integers(1, 3),
    input_size=st.integers(1, 5),
    hidden=st.integers(1, 9),
    direction=st.sampled_from(DIRECTIONS),
    layout=st.integers(0, 1),
    linear_before_reset=st.integers(0, 1),
    seed=st.integers(0, 2**31 - 1),
)
def test_loop_kernel_matches_a_numpy_reference(
    op, seq_len, batch, input_size, hidden, direction, layout, linear_before_reset, seed
):
    attrs = {"linear_before_reset": linear_before_reset} if op == "GRU" else {}
    model, feeds = rnn_tests._rnn_model(
        op, seed=seed, seq_len=seq_len, batch=batch, input_size=input_size, hidden=hidden,
        direction=direction, layout=layout, init_h=True, init_c=op == "LSTM", seq_lens="input",
        outputs=("Y", "Y_h"), **attrs,
    )  # fmt: skip
    feeds["sequence_lens"] = np.random.default_rng(seed).integers(0, seq_len + 1, batch).astype(np.int32)
    mod = tvm_tqs.load(model, recurrent="loop")
    assert _loop_functions(mod)
    names, _ = io_names(mod)
    got = VMRunner(build(mod))(*[feeds[n] for n in names])
    expected = _numpy_layer(op, model, feeds, direction, layout, linear_before_reset)
    for name, g, e in zip(("Y", "Y_h"), got, expected, strict=True):
        assert g.shape == e.shape, name
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize(
    ("model", "kernels"),
    [("etth1_gru", 2), ("etth1_lstm", 2), ("etth1_lstm3", 3), ("vic_elec_gru", 1)],
)
def test_zoo_recurrent_models_match_onnxruntime(model, kernels):
    path = ZOO / f"{model}.onnx"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([1, *inp.shape[1:]]).astype(np.float32)
    fused = fuse_pipeline()(tvm_tqs.load(path, recurrent="loop"))
    assert _loop_calls(fused) == kernels
    got = VMRunner(build(fused))(x)
    for g, e in zip(got, sess.run(None, {inp.name: x}), strict=True):
        assert float(np.abs(g - e).max()) <= 1e-5


def test_recurrent_option_is_validated_and_unroll_stays_the_default(cases):
    model = cases["test_gru_defaults"].model
    with pytest.raises(TQSError, match="recurrent= must be one of unroll, loop"):
        tvm_tqs.load(model, recurrent="scan")
    assert not [n for n in _loop_functions(tvm_tqs.load(model)) if "_loop_" in n]
    assert "relax.matmul" in _relax_ops(tvm_tqs.load(model))


def test_spec_refuses_what_the_kernel_does_not_compute():
    acts = (("sigmoid", None, None), ("tanh", None, None))
    with pytest.raises(ValueError, match="linear_before_reset is a GRU option"):
        recurrent.RecurrentSpec("rnn", 2, 1, 1, 1, (("tanh", None, None),), linear_before_reset=True)
    with pytest.raises(ValueError, match="activation 'gelu'"):
        recurrent.RecurrentSpec("gru", 2, 1, 1, 1, (acts[0], ("gelu", None, None)))
    with pytest.raises(ValueError, match="gru takes 2 activations"):
        recurrent.RecurrentSpec("gru", 2, 1, 1, 1, acts[:1])
    a, b = (
        recurrent.RecurrentSpec("gru", 2, 1, 1, 1, acts),
        recurrent.RecurrentSpec("gru", 2, 1, 1, 1, acts, reverse=True),
    )
    assert a.name != b.name  # distinct kernels never share a symbol
    attrs = recurrent.recurrent_fp32(b).attrs
    assert json.loads(str(attrs[recurrent.SPEC_ATTR]))["reverse"] is True
