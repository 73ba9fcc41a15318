"""ReductionLoopOrder: matmul/conv reductions get a vectorizable inner loop, results stay bit-identical."""

from __future__ import annotations

import numpy as np
import tvm_ffi
from onnx_builders import mlp_forecaster, shared_weight_model
from tvm import s_tir, tirx

from tvm_tqs.graph import fuse
from tvm_tqs.passes.reduction_loop_order import ReductionLoopOrder
from tvm_tqs.runtime import VMRunner, build


def _reduction_blocks(func: tirx.PrimFunc) -> tuple[int, int]:
    """(reduction blocks, of which decomposed into an init block plus an update loop nest)."""
    blocks: list = []
    tvm_ffi.structural_walk(func.body, [(s_tir.SBlock, blocks.append)])
    names = {b.name_hint for b in blocks}
    reductions = [b for b in blocks if any(iv.iter_type == tirx.IterVar.CommReduce for iv in b.iter_vars)]
    return len(reductions), sum(
        1 for b in reductions if f"{b.name_hint}_init" in names or b.name_hint.endswith("_update")
    )


def test_reorders_reductions_and_keeps_every_bit():
    for model, shapes, x_shape in [
        (mlp_forecaster(), {"batch": 3}, (3, 16, 2)),
        # 4 conv outputs: channels-last, the output channels are the innermost spatial loop (>= 4 to reorder)
        (shared_weight_model(conv_out=4), None, (1, 1, 8)),
    ]:
        mod = fuse(model, shapes)
        out = ReductionLoopOrder()(mod)
        funcs = {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
        new = {gv.name_hint: f for gv, f in out.functions.items() if isinstance(f, tirx.PrimFunc)}
        before = [_reduction_blocks(f) for f in funcs.values()]
        after = [_reduction_blocks(f) for f in new.values()]
        assert sum(n for n, _ in before) > 0 and sum(d for _, d in before) == 0
        # Every matmul/conv reduction was rewritten (init block split off, spatial loop moved inside).
        assert sum(d for _, d in after) == sum(n for n, _ in before)
        assert [_reduction_blocks(f) for f in funcs.values()] == before  # the input module is untouched
        x = np.random.default_rng(0).standard_normal(x_shape).astype(np.float32)
        np.testing.assert_array_equal(VMRunner(build(out))(x)[0], VMRunner(build(mod))(x)[0])
