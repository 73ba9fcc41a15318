"""ONNX GRU converter, unrolled over the static sequence length (see rnn.py for the graph layout)."""

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
from .rnn_weights import (
    add_weights,
    as_weight,
    concat_weight_rows,
    take_weight,
    transpose_weight,
    weight_expr,
    weight_rows,
)


class GRU(OnnxOpConverter):
    """Converts an ONNX GRU node into an unrolled Relax recurrence.

    Gate order in ``W``, ``R`` and ``B`` is ONNX's ``z, r, h``.
    """

    _ATTRS = {
        "activation_alpha",
        "activation_beta",
        "activations",
        "clip",
        "direction",
        "hidden_size",
        "layout",
        "linear_before_reset",
    }

    @classmethod
    def _impl_v7(cls, bb, inputs, attr, params):
        cfg = parse_node("GRU", inputs, attr, params, 3, ("Sigmoid", "Tanh"), cls._ATTRS)
        linear_before_reset = int(attr.get("linear_before_reset", 0))
        if linear_before_reset not in (0, 1):
            raise invalid_attribute(
                cfg.label, f"attribute 'linear_before_reset' = {linear_before_reset}", "expected 0 or 1"
            )
        num_dirs, hidden = len(cfg.reverse), cfg.hidden
        check_optional_shape(cfg, "B", inputs[3], [num_dirs, 6 * hidden])
        check_optional_shape(cfg, "initial_h", inputs[5], state_shape(cfg))

        if loop_requested():  # opt-in: one loop kernel per direction (None: not covered, unroll)
            looped = emit_loop(
                bb, "gru", cfg, inputs, attr, ("Sigmoid", "Tanh"), linear_before_reset=linear_before_reset
            )
            if looped is not None:
                return looped
        x = time_major(bb, cfg, inputs[0])
        w, r, b = (as_weight(inputs[i]) for i in (1, 2, 3))
        h0s = initial_states(bb, cfg, inputs[5])
        masks = step_masks(bb, cfg)

        ys, hs = [], []
        for d, reverse in enumerate(cfg.reverse):
            w_d, r_d = take_weight(w, d), take_weight(r, d)
            bias, rb_h = None, None
            if b is not None:
                b_d = take_weight(b, d)
                wb, rb = weight_rows(b_d, 0, 3 * hidden), weight_rows(b_d, 3 * hidden, 6 * hidden)
                if linear_before_reset:
                    # Rb_h sits inside r * (h @ Rh^T + Rb_h): only Rb_z and Rb_r fold into the projection.
                    bias = concat_weight_rows(
                        add_weights(weight_rows(wb, 0, 2 * hidden), weight_rows(rb, 0, 2 * hidden)),
                        weight_rows(wb, 2 * hidden, 3 * hidden),
                    )
                    rb_h = bb.normalize(weight_expr(weight_rows(rb, 2 * hidden, 3 * hidden), cfg.dtype))
                else:
                    bias = add_weights(wb, rb)
            if linear_before_reset:
                # One recurrent matmul serves all three gates.
                xw = project_inputs(bb, cfg, x, w_d, bias)
                r_t = [bb.normalize(weight_expr(transpose_weight(r_d), cfg.dtype))]
            else:
                # (r * h) @ Rh^T needs r first: the z/r and h gate groups get separate matmuls.
                xw = project_inputs(bb, cfg, x, w_d, bias, chunks=[2 * hidden])
                r_t = [
                    bb.normalize(weight_expr(transpose_weight(weight_rows(r_d, 0, 2 * hidden)), cfg.dtype)),
                    bb.normalize(
                        weight_expr(transpose_weight(weight_rows(r_d, 2 * hidden, 3 * hidden)), cfg.dtype)
                    ),
                ]
            acts = cfg.activations[d]

            def step(t, states, xw=xw, r_t=r_t, rb_h=rb_h, acts=acts):
                return (cls._step(bb, cfg, acts, xw[t], r_t, rb_h, linear_before_reset, states[0]),)

            y, (h,) = unroll(bb, cfg, masks, reverse, step, (h0s[d],))
            ys.append(y)
            hs.append(h)
        return assemble_outputs(bb, cfg, ys, [hs], attr["tvm_custom"]["num_outputs"])

    @classmethod
    def _impl_v14(cls, bb, inputs, attr, params):
        # v14 only added the `layout` attribute, which _impl_v7 already reads.
        return cls._impl_v7(bb, inputs, attr, params)

    @staticmethod
    def _step(bb, cfg, acts, xw_t, r_t, rb_h, linear_before_reset, h):
        """One GRU step; ``h`` of None is a zero state."""
        op = relax.op
        f_act, g_act = acts
        if linear_before_reset:
            x_z, x_r, x_h = split_gates(xw_t[0], 3)
            if h is None:
                z = activate(bb, cfg, f_act, x_z)
                pre_h = x_h
                if rb_h is not None:
                    pre_h = op.add(x_h, op.multiply(activate(bb, cfg, f_act, x_r), rb_h))
            else:
                rec_z, rec_r, rec_h = split_gates(bb.emit(op.matmul(h, r_t[0])), 3)
                if rb_h is not None:
                    rec_h = op.add(rec_h, rb_h)
                z = activate(bb, cfg, f_act, op.add(x_z, rec_z))
                r = activate(bb, cfg, f_act, op.add(x_r, rec_r))
                pre_h = op.add(x_h, op.multiply(r, rec_h))
        else:
            x_zr, x_h = xw_t
            zr = x_zr if h is None else bb.emit(op.add(op.matmul(h, r_t[0]), x_zr))
            z, r = split_gates(zr, 2)
            z = activate(bb, cfg, f_act, z)
            pre_h = x_h
            if h is not None:  # r only scales h, so a zero state makes it irrelevant
                reset_h = bb.emit(op.multiply(activate(bb, cfg, f_act, r), h))
                pre_h = op.add(op.matmul(reset_h, r_t[1]), x_h)
        h_tilde = activate(bb, cfg, g_act, pre_h)
        # (1 - z) * h~ + z * h, written with one multiply fewer.
        if h is None:
            return bb.emit(op.multiply(op.subtract(scalar_const(1.0, cfg.dtype), z), h_tilde))
        return bb.emit(op.add(h_tilde, op.multiply(z, op.subtract(h, h_tilde))))
