"""The ONNX conformance node cases of LSTM, GRU, RNN and DFT, through `tvm_tqs.load`.

The onnx package ships these cases as code (`onnx.backend.test.case.node`: each op module builds
its models and expected outputs when imported); the wheel carries no `data/node` directory. Each
case is loaded with `tvm_tqs.load` (no rollout contract: load keeps the reason and goes on), built
for the host with `tvm_tqs.runtime.build` and run on the case's inputs.

Every case must match. The opset-20 DFT cases give `axis` as a graph input, which the product
refuses by design (the DFT matrix and the output shape are fixed at import): their test asserts
the refusal and that its message says how to bind the axis, then binds it that way and compares.
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import numpy_helper  # noqa: E402

import tvm_tqs  # noqa: E402
from tvm_tqs.errors import TQSError  # noqa: E402
from tvm_tqs.rollout import io_names  # noqa: E402
from tvm_tqs.runtime import VMRunner, build  # noqa: E402

# onnx's backend runs these cases with rtol=1e-3, atol=1e-7; we hold every output to 1e-5 both ways
# (|got - expected| <= 1e-5 + 1e-5 * |expected|). The expected values are float64 numpy results cast
# to float32: the DFT outputs reach ~10, where our float32 matmul is ~2e-5 off in absolute terms
# (2e-6 relative), which the relative term covers.
RTOL = ATOL = 1e-5

# Every LSTM / GRU / RNN / DFT case of onnx 1.23's node tests (28), with what the product does.
RUNS = "runs"
AXIS_INPUT = "refused: DFT axis is a graph input"
CASES = {
    "test_lstm_defaults": RUNS,
    "test_lstm_with_initial_bias": RUNS,
    "test_lstm_with_peepholes": RUNS,  # sequence_lens is a graph input: masked at run time
    "test_lstm_batchwise": RUNS,
    "test_lstm_reverse": RUNS,
    "test_lstm_bidirectional": RUNS,
    "test_gru_defaults": RUNS,
    "test_gru_with_initial_bias": RUNS,
    "test_gru_seq_length": RUNS,
    "test_gru_batchwise": RUNS,
    "test_gru_reverse": RUNS,
    "test_gru_bidirectional": RUNS,
    "test_simple_rnn_defaults": RUNS,
    "test_simple_rnn_with_initial_bias": RUNS,
    "test_rnn_seq_length": RUNS,
    "test_simple_rnn_batchwise": RUNS,
    "test_simple_rnn_reverse": RUNS,
    "test_simple_rnn_bidirectional": RUNS,
    "test_dft_opset19": RUNS,
    "test_dft_axis_opset19": RUNS,
    "test_dft_inverse_opset19": RUNS,
    "test_dft_rfft_opset19": RUNS,
    "test_dft_irfft_opset19": RUNS,
    "test_dft": AXIS_INPUT,
    "test_dft_axis": AXIS_INPUT,
    "test_dft_inverse": AXIS_INPUT,
    "test_dft_rfft": AXIS_INPUT,
    "test_dft_irfft": AXIS_INPUT,
}
OPS = {"LSTM", "GRU", "RNN", "DFT"}


@pytest.fixture(scope="module")
def cases() -> dict:
    """name -> onnx TestCase, for every node case whose op is in OPS.

    Importing an op's module under `onnx.backend.test.case.node` generates its cases (about 1 s for
    these four); `collect_testcases()` would generate all ~1900 of them (about 7 s).
    """
    from onnx.backend.test.case import node

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module in ("lstm", "gru", "rnn", "dft"):
            importlib.import_module(f"onnx.backend.test.case.node.{module}")
        all_cases = getattr(node, "_NodeTestCases", None)
        if all_cases is None:  # the list is private: fall back to the public (slower) entry point
            all_cases = node.collect_testcases()
    return {c.name: c for c in all_cases if {n.op_type for n in c.model.graph.node} <= OPS}


def test_every_case_is_listed(cases):
    """The cases onnx ships are exactly CASES: a new or renamed case must be added here."""
    assert sorted(cases) == sorted(CASES)


def _run(model: onnx.ModelProto, inputs: dict) -> list[np.ndarray]:
    mod = tvm_tqs.load(model)
    names, _ = io_names(mod)
    return VMRunner(build(mod))(*[inputs[n] for n in names])


def _check(name, model, inputs, expected):
    got = _run(model, inputs)
    assert len(got) == len(expected), name
    for out, g, e in zip(model.graph.output, got, expected, strict=True):
        assert g.shape == e.shape, f"{name} output '{out.name}'"
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL, err_msg=f"{name} output '{out.name}'")


@pytest.mark.parametrize("name", list(CASES))
def test_conformance_case(cases, name):
    case = cases[name]
    (inputs, expected), *_ = case.data_sets
    feeds = {vi.name: np.asarray(v) for vi, v in zip(case.model.graph.input, inputs, strict=True)}
    if CASES[name] == RUNS:
        _check(name, case.model, feeds, expected)
        return
    # Refused by design: the message names the input and says how to bind it.
    with pytest.raises(TQSError, match=r"DFT node .*'axis'.*initializer named 'axis'"):
        tvm_tqs.load(case.model)
    # Bound the way the message says (an initializer of the same name), the case must match.
    bound = onnx.ModelProto()
    bound.CopyFrom(case.model)
    bound.graph.initializer.append(numpy_helper.from_array(feeds.pop("axis").astype(np.int64), "axis"))
    _check(name, bound, feeds, expected)
