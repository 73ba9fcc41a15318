"""ChannelsLastConv: conv1d rewritten to NWC, results unchanged; modules it cannot or need not touch kept."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.script import relax as R

from tvm_tqs.passes.channels_last import ChannelsLastConv
from tvm_tqs.runtime import VMRunner, build

RNG = np.random.default_rng(0)
W3 = RNG.standard_normal((4, 4, 3)).astype(np.float32)
W1 = RNG.standard_normal((4, 4, 1)).astype(np.float32)


def _module(body) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((2, 4, 16), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(body(bb, x))
        bb.emit_func_output(out)
    return bb.get()


def _conv(x, w, **kw):
    return relax.op.nn.conv1d(x, relax.const(w), **kw)


def _residual_block(bb, x):
    """Causal conv (k=3, dilation 2), relu, conv (k=1), residual add: a TCN block as torch exports it."""
    y = bb.emit(relax.op.nn.relu(_conv(x, W3, padding=(4, 0), dilation=2)))
    return bb.emit(relax.op.add(bb.emit(_conv(y, W1)), x))


def _layouts(mod: tvm.IRModule) -> list[str]:
    found = []

    def visit(e):
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) and e.op.name == "relax.nn.conv1d":
            found.append((str(e.attrs.data_layout), str(e.attrs.kernel_layout), str(e.attrs.out_layout)))

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return found


def test_single_conv_is_wrapped_in_transposes():
    before = _module(lambda bb, x: _conv(x, W1))

    def expected_body(bb, x):
        nwc = bb.emit(relax.op.permute_dims(x, [0, 2, 1]))
        y = bb.emit(_conv(nwc, W1, data_layout="NWC", kernel_layout="OIW", out_layout="NWC"))
        return relax.op.permute_dims(y, [0, 2, 1])

    expected = relax.transform.CanonicalizeBindings()(_module(expected_body))  # gv = lv2 -> gv = permute
    tvm.ir.assert_structural_equal(ChannelsLastConv()(before)["main"], expected["main"])


def test_conv_stack_runs_nwc_with_identical_results():
    before = _module(lambda bb, x: _residual_block(bb, bb.emit(_residual_block(bb, x))))
    after = ChannelsLastConv()(before)
    assert _layouts(before) == [("NCW", "OIW", "NCW")] * 4
    assert _layouts(after) == [("NWC", "OIW", "NWC")] * 4
    x = RNG.standard_normal((2, 4, 16)).astype(np.float32)
    np.testing.assert_allclose(
        VMRunner(build(after))(x)[0], VMRunner(build(before))(x)[0], rtol=1e-5, atol=1e-5
    )


def test_modules_without_conv_are_returned_as_they_are():
    # squeeze with a negative axis makes TVM 0.27's ConvertLayout raise std::bad_alloc: never reached here.
    before = _module(lambda bb, x: bb.emit(relax.op.squeeze(relax.op.strided_slice(x, [2], [0], [1]), [-1])))
    assert ChannelsLastConv()(before).same_as(before)


def test_a_conv_module_convertlayout_cannot_handle_keeps_its_layout():
    def body(bb, x):
        y = bb.emit(_conv(x, W1))
        return bb.emit(relax.op.squeeze(relax.op.strided_slice(y, [2], [0], [1]), [-1]))

    before = _module(body)
    assert ChannelsLastConv()(before).same_as(before)
