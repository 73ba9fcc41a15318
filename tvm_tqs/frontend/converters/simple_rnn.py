"""ONNX RNN (vanilla recurrence) converter, unrolled over the static sequence length (see rnn.py)."""

from __future__ import annotations

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from .rnn_config import check_optional_shape, parse_node, state_shape
from .rnn_loop import emit_loop, loop_requested
from .rnn_unroll import (
    activate,
    assemble_outputs,
    initial_states,
    project_inputs,
    step_masks,
    time_major,
    unroll,
)
from .rnn_weights import add_weights, as_weight, take_weight, transpose_weight, weight_expr, weight_rows


class RNN(OnnxOpConverter):
    """Converts an ONNX RNN node into an unrolled Relax recurrence: ``Ht = f(Xt W^T + Ht-1 R^T + Wb + Rb)``.

    One activation per direction (default Tanh); the graph per step is the recurrent matmul fused
    with the add of that step's input projection and the activation.
    """

    _ATTRS = {
        "activation_alpha",
        "activation_beta",
        "activations",
        "clip",
        "direction",
        "hidden_size",
        "layout",
    }

    @classmethod
    def _impl_v7(cls, bb, inputs, attr, params):
        cfg = parse_node("RNN", inputs, attr, params, 1, ("Tanh",), cls._ATTRS)
        num_dirs, hidden = len(cfg.reverse), cfg.hidden
        check_optional_shape(cfg, "B", inputs[3], [num_dirs, 2 * hidden])
        check_optional_shape(cfg, "initial_h", inputs[5], state_shape(cfg))

        if loop_requested():  # opt-in: one loop kernel per direction (None: not covered, unroll)
            looped = emit_loop(bb, "rnn", cfg, inputs, attr, ("Tanh",))
            if looped is not None:
                return looped
        x = time_major(bb, cfg, inputs[0])
        w, r, b = (as_weight(inputs[i]) for i in (1, 2, 3))
        h0s = initial_states(bb, cfg, inputs[5])
        masks = step_masks(bb, cfg)

        ys, hs = [], []
        for d, reverse in enumerate(cfg.reverse):
            bias = None
            if b is not None:
                b_d = take_weight(b, d)
                bias = add_weights(weight_rows(b_d, 0, hidden), weight_rows(b_d, hidden, 2 * hidden))
            xw = project_inputs(bb, cfg, x, take_weight(w, d), bias)
            r_t = bb.normalize(weight_expr(transpose_weight(take_weight(r, d)), cfg.dtype))
            (act,) = cfg.activations[d]

            def step(t, states, xw=xw, r_t=r_t, act=act):
                return (cls._step(bb, cfg, act, xw[t][0], r_t, states[0]),)

            y, (h,) = unroll(bb, cfg, masks, reverse, step, (h0s[d],))
            ys.append(y)
            hs.append(h)
        return assemble_outputs(bb, cfg, ys, [hs], attr["tvm_custom"]["num_outputs"])

    @classmethod
    def _impl_v14(cls, bb, inputs, attr, params):
        # v14 only added the `layout` attribute (v22 only more dtypes), which _impl_v7 already reads.
        return cls._impl_v7(bb, inputs, attr, params)

    @staticmethod
    def _step(bb, cfg, act, xw_t, r_t, h):
        """One RNN step; ``h`` of None is a zero state."""
        pre = xw_t if h is None else bb.emit(relax.op.add(relax.op.matmul(h, r_t), xw_t))
        return activate(bb, cfg, act, pre)
