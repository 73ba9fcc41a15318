"""ONNX LSTM converter, unrolled over the static sequence length (see rnn.py for the graph layout)."""

from __future__ import annotations

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from .onnx_node import invalid_attribute
from .rnn_activations import scalar_const
from .rnn_config import check_optional_shape, parse_node, state_shape
from .rnn_loop import emit_loop, loop_requested
from .rnn_unroll import (
    activate,
    assemble_outputs,
    initial_states,
    project_inputs,
    split_gates,
    step_masks,
    time_major,
    unroll,
)
from .rnn_weights import add_weights, as_weight, take_weight, transpose_weight, weight_expr, weight_rows


class LSTM(OnnxOpConverter):
    """Converts an ONNX LSTM node into an unrolled Relax recurrence.

    Gate order in ``W``, ``R`` and ``B`` is ONNX's ``i, o, f, c``; peepholes ``P`` are ``i, o, f``.
    """

    _ATTRS = {
        "activation_alpha",
        "activation_beta",
        "activations",
        "clip",
        "direction",
        "hidden_size",
        "input_forget",
        "layout",
    }

    @classmethod
    def _impl_v7(cls, bb, inputs, attr, params):
        cfg = parse_node("LSTM", inputs, attr, params, 4, ("Sigmoid", "Tanh", "Tanh"), cls._ATTRS)
        input_forget = int(attr.get("input_forget", 0))
        if input_forget not in (0, 1):
            raise invalid_attribute(
                cfg.label, f"attribute 'input_forget' = {input_forget}", "expected 0 or 1"
            )
        num_dirs, hidden = len(cfg.reverse), cfg.hidden
        check_optional_shape(cfg, "B", inputs[3], [num_dirs, 8 * hidden])
        check_optional_shape(cfg, "initial_h", inputs[5], state_shape(cfg))
        check_optional_shape(cfg, "initial_c", inputs[6], state_shape(cfg))
        check_optional_shape(cfg, "P", inputs[7], [num_dirs, 3 * hidden])

        if loop_requested():  # opt-in: one loop kernel per direction (None: not covered, unroll)
            looped = emit_loop(
                bb, "lstm", cfg, inputs, attr, ("Sigmoid", "Tanh", "Tanh"), input_forget=input_forget
            )
            if looped is not None:
                return looped
        x = time_major(bb, cfg, inputs[0])
        w, r, b, p = (as_weight(inputs[i]) for i in (1, 2, 3, 7))
        h0s = initial_states(bb, cfg, inputs[5])
        c0s = initial_states(bb, cfg, inputs[6])
        masks = step_masks(bb, cfg)

        ys, hs, cs = [], [], []
        for d, reverse in enumerate(cfg.reverse):
            bias = None
            if b is not None:
                b_d = take_weight(b, d)
                bias = add_weights(weight_rows(b_d, 0, 4 * hidden), weight_rows(b_d, 4 * hidden, 8 * hidden))
            xw = project_inputs(bb, cfg, x, take_weight(w, d), bias)
            r_t = bb.normalize(weight_expr(transpose_weight(take_weight(r, d)), cfg.dtype))
            peep = None
            if p is not None:
                p_d = take_weight(p, d)
                peep = [
                    bb.normalize(weight_expr(weight_rows(p_d, k * hidden, (k + 1) * hidden), cfg.dtype))
                    for k in range(3)
                ]
            acts = cfg.activations[d]

            def step(t, states, xw=xw, r_t=r_t, peep=peep, acts=acts):
                return cls._step(bb, cfg, acts, xw[t][0], r_t, peep, input_forget, *states)

            y, (h, c) = unroll(bb, cfg, masks, reverse, step, (h0s[d], c0s[d]))
            ys.append(y)
            hs.append(h)
            cs.append(c)
        return assemble_outputs(bb, cfg, ys, [hs, cs], attr["tvm_custom"]["num_outputs"])

    @classmethod
    def _impl_v14(cls, bb, inputs, attr, params):
        # v14 only added the `layout` attribute, which _impl_v7 already reads.
        return cls._impl_v7(bb, inputs, attr, params)

    @staticmethod
    def _step(bb, cfg, acts, xw_t, r_t, peep, input_forget, h, c):
        """One LSTM step; ``h``/``c`` of None are zero states."""
        op = relax.op
        f_act, g_act, h_act = acts
        gates = xw_t if h is None else bb.emit(op.add(op.matmul(h, r_t), xw_t))
        i, o, f, g = split_gates(gates, 4)
        if peep is not None and c is not None:
            i = op.add(i, op.multiply(peep[0], c))
        i = activate(bb, cfg, f_act, i)
        g = activate(bb, cfg, g_act, g)
        c_new = op.multiply(i, g)
        if c is not None:
            if input_forget:
                # Coupled gates: onnxruntime forgets by 1 - i, ignoring the f rows of W, R and B.
                f = op.subtract(scalar_const(1.0, cfg.dtype), i)
            else:
                if peep is not None:
                    f = op.add(f, op.multiply(peep[2], c))
                f = activate(bb, cfg, f_act, f)
            c_new = op.add(c_new, op.multiply(f, c))
        c_new = bb.emit(c_new)
        if peep is not None:
            o = op.add(o, op.multiply(peep[1], c_new))
        o = activate(bb, cfg, f_act, o)
        # clip bounds gate inputs only: onnxruntime applies h() to the unclipped cell state.
        h_new = bb.emit(op.multiply(o, h_act(c_new)))
        return h_new, c_new
