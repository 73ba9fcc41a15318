"""ONNX LSTM and GRU converters, unrolled over the static sequence length.

Every fused op of the compiled graph is a decision unit for per-op quantization, so the graph is
laid out the way onnxruntime computes the recurrence: one matmul per direction projects the input
of all time steps at once (``X @ W^T`` plus both biases), and each step then costs one recurrent
matmul ``h @ R^T`` (two for GRU with ``linear_before_reset=0``) plus elementwise gate math.

States travel as ``[1, batch, hidden]`` tensors: the ONNX state layout is ``[num_directions, batch,
hidden]``, so splitting the initial state, concatenating the final states and stacking the step
outputs into ``Y`` need no per-step reshape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter, get_constant

Activation = Callable[[relax.Expr], relax.Expr]


# ---------------------------------------------------------------------------------------------
# Errors (dft.py uses these too): the importer's own error types, with a message that names the
# node, since a model can hold many LSTM/GRU/DFT nodes.


def _node_label(op_type: str, attr: dict) -> str:
    name = attr.get("tvm_custom", {}).get("name", "")
    return f"{op_type} node '{name}'" if name else f"{op_type} node (unnamed)"


def _unsupported(label: str, what: str, why: str) -> tvm.error.OpAttributeUnImplemented:
    return tvm.error.OpAttributeUnImplemented(f"{label}: {what} is not supported: {why}")


def _invalid(label: str, what: str, why: str) -> tvm.error.OpAttributeInvalid:
    return tvm.error.OpAttributeInvalid(f"{label}: {what} is invalid: {why}")


def _decode(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------------------------------------
# Activations


def _scalar(value: float, dtype: str) -> relax.Expr:
    return relax.const(value, dtype)


def _make_activation(name: str, alpha: float | None, beta: float | None, dtype: str) -> Activation:
    """Build one ONNX RNN activation; ``alpha``/``beta`` are already resolved to their values."""
    op = relax.op
    name = name.lower()
    if name == "sigmoid":
        return op.sigmoid
    if name == "tanh":
        return op.tanh
    if name == "relu":
        return op.nn.relu
    if name == "affine":
        return lambda x: op.add(op.multiply(x, _scalar(alpha, dtype)), _scalar(beta, dtype))
    if name == "leakyrelu":
        return lambda x: op.nn.leakyrelu(x, alpha)
    if name == "thresholdedrelu":
        return lambda x: op.where(op.greater(x, _scalar(alpha, dtype)), x, _scalar(0.0, dtype))
    if name == "scaledtanh":
        return lambda x: op.multiply(op.tanh(op.multiply(x, _scalar(beta, dtype))), _scalar(alpha, dtype))
    if name == "hardsigmoid":
        return lambda x: op.clip(op.add(op.multiply(x, _scalar(alpha, dtype)), _scalar(beta, dtype)), 0, 1)
    if name == "elu":
        return lambda x: op.where(
            op.less(x, _scalar(0.0, dtype)),
            op.multiply(op.subtract(op.exp(x), _scalar(1.0, dtype)), _scalar(alpha, dtype)),
            x,
        )
    if name == "softsign":
        return lambda x: op.divide(x, op.add(op.abs(x), _scalar(1.0, dtype)))
    if name == "softplus":
        return op.nn.softplus
    raise AssertionError(name)  # _ACTIVATION_PARAMS is checked first


# name -> (default alpha, default beta); None marks a parameter the function does not take.
# A function whose value is missing from activation_alpha/activation_beta gets these, which are
# onnxruntime's: they agree with the standalone ONNX ops except ThresholdedRelu (ONNX's op
# defaults alpha to 1.0, onnxruntime's RNN kernels to 0); Affine and ScaledTanh have no
# standalone op any more and onnxruntime defaults both of their parameters to 0.
_ACTIVATION_PARAMS: dict[str, tuple[float | None, float | None]] = {
    "sigmoid": (None, None),
    "tanh": (None, None),
    "relu": (None, None),
    "affine": (0.0, 0.0),
    "leakyrelu": (0.01, None),
    "thresholdedrelu": (0.0, None),
    "scaledtanh": (0.0, 0.0),
    "hardsigmoid": (0.2, 0.5),
    "elu": (1.0, None),
    "softsign": (None, None),
    "softplus": (None, None),
}


def _parse_activations(
    label: str, attr: dict, defaults: Sequence[str], num_directions: int, dtype: str
) -> list[list[Activation]]:
    """Resolve ``activations``/``activation_alpha``/``activation_beta`` into per-direction lists.

    ONNX lists the functions of the forward direction first; alphas and betas are consumed in
    order by the functions that take them, and a function whose value is missing from the list
    gets its default from ``_ACTIVATION_PARAMS``.
    """
    names = [_decode(n) for n in attr.get("activations", ())]
    if not names:
        names = list(defaults) * num_directions
    if len(names) != len(defaults) * num_directions:
        raise _invalid(
            label,
            f"attribute 'activations' {names}",
            f"expected {len(defaults)} functions per direction ({len(defaults) * num_directions} in all)",
        )
    alphas = list(attr.get("activation_alpha", ()))
    betas = list(attr.get("activation_beta", ()))
    funcs = []
    for name in names:
        if name.lower() not in _ACTIVATION_PARAMS:
            raise _unsupported(
                label,
                f"attribute 'activations' value '{name}'",
                f"supported functions are {', '.join(sorted(_ACTIVATION_PARAMS))} (case-insensitive)",
            )
        default_alpha, default_beta = _ACTIVATION_PARAMS[name.lower()]
        alpha = beta = None
        if default_alpha is not None:
            alpha = float(alphas.pop(0)) if alphas else default_alpha
        if default_beta is not None:
            beta = float(betas.pop(0)) if betas else default_beta
        funcs.append(_make_activation(name, alpha, beta, dtype))
    per_dir = len(defaults)
    return [funcs[d * per_dir : (d + 1) * per_dir] for d in range(num_directions)]


# ---------------------------------------------------------------------------------------------
# Weights: numpy when the ONNX input is a constant, so the graph holds the final (sliced,
# transposed, summed) constant that the matmul reads; relax ops otherwise (weights kept as
# function parameters), which FoldConstant folds once the parameters are bound.

Weight = np.ndarray | relax.Expr


def _weight(expr: relax.Expr | None) -> Weight | None:
    if isinstance(expr, tvm.ir.GenericConst):
        return expr.value.numpy()
    return expr


def _take(w: Weight, index: int) -> Weight:
    """``w[index]`` along the leading (direction) axis."""
    if isinstance(w, np.ndarray):
        return w[index]
    return relax.op.squeeze(_rows(w, index, index + 1), axis=[0])


def _transpose(w: Weight) -> Weight:
    if isinstance(w, np.ndarray):
        return np.ascontiguousarray(w.T)
    return relax.op.permute_dims(w, [1, 0])


def _rows(w: Weight, begin: int, end: int) -> Weight:
    """``w[begin:end]`` along the leading axis."""
    if isinstance(w, np.ndarray):
        return w[begin:end]
    return relax.op.strided_slice(w, axes=[0], begin=[begin], end=[end])


def _add(a: Weight, b: Weight) -> Weight:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a + b
    return relax.op.add(_as_expr(a, None), _as_expr(b, None))


def _concat_rows(a: Weight, b: Weight) -> Weight:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return np.concatenate([a, b])
    return relax.op.concat([_as_expr(a, None), _as_expr(b, None)], axis=0)


def _as_expr(w: Weight, dtype: str | None) -> relax.Expr:
    if isinstance(w, np.ndarray):
        return relax.const(w.astype(dtype) if dtype else w)
    return w


# ---------------------------------------------------------------------------------------------
# Parsing and the state/layout plumbing shared by LSTM and GRU


@dataclass
class _Config:
    """What an LSTM/GRU node asks for, validated."""

    label: str  # names the node in errors
    dtype: str
    seq_len: int
    batch: object  # int or tirx.PrimExpr: a symbolic batch is fine, a symbolic seq_len is not
    hidden: int
    layout: int
    reverse: list[bool]  # one flag per direction, forward first
    clip: float | None
    activations: list[list[Activation]]  # per direction, in ONNX order


def _static_dims(label: str, name: str, expr: relax.Expr) -> list:
    shape = expr.ty.shape
    if shape is None or not hasattr(shape, "values"):
        raise _unsupported(label, f"input '{name}' of unknown shape", "give its shape in shape_dict")
    return [int(v) if isinstance(v, tvm.tirx.IntImm) else v for v in shape.values]


def _check_sequence_lens(label: str, seq_lens: relax.Expr | None, seq_len: int, params) -> None:
    """Accept ``sequence_lens`` only when it cannot change the result of a full-length unroll."""
    if seq_lens is None:
        return
    seq_lens = get_constant(seq_lens, params)
    if not isinstance(seq_lens, tvm.ir.GenericConst):
        raise _unsupported(
            label,
            "a non-constant input 'sequence_lens'",
            f"the recurrence is unrolled over the static sequence length {seq_len}, so per-batch "
            "lengths cannot be honoured; drop the input or make it a constant equal to the sequence length",
        )
    lens = seq_lens.value.numpy()
    if not np.all(lens == seq_len):
        raise _unsupported(
            label,
            f"input 'sequence_lens' = {lens.tolist()}",
            f"the recurrence is unrolled over the static sequence length {seq_len}; only lengths "
            "all equal to it are supported",
        )


def _parse(
    op_type: str,
    inputs,
    attr: dict,
    params,
    num_gates: int,
    default_activations: Sequence[str],
    known_attrs: set[str],
) -> _Config:
    label = _node_label(op_type, attr)
    for key in attr:
        if key != "tvm_custom" and key not in known_attrs:
            raise _unsupported(
                label, f"attribute '{key}'", f"{op_type} converters know {sorted(known_attrs)}"
            )

    direction = _decode(attr.get("direction", b"forward"))
    reverse = {"forward": [False], "reverse": [True], "bidirectional": [False, True]}.get(direction)
    if reverse is None:
        raise _invalid(
            label, f"attribute 'direction' = '{direction}'", "expected forward, reverse or bidirectional"
        )
    layout = int(attr.get("layout", 0))
    if layout not in (0, 1):
        raise _invalid(label, f"attribute 'layout' = {layout}", "expected 0 or 1")

    x, w, r = inputs[0], inputs[1], inputs[2]
    if x is None or w is None or r is None:
        raise _invalid(label, "a missing X, W or R input", "all three are required")
    x_dims = _static_dims(label, "X", x)
    seq_len, batch = (x_dims[0], x_dims[1]) if layout == 0 else (x_dims[1], x_dims[0])
    if not isinstance(seq_len, int):
        raise _unsupported(
            label,
            f"a symbolic sequence length ({seq_len})",
            "the recurrence is unrolled, so give X a static shape in shape_dict",
        )
    r_dims = _static_dims(label, "R", r)
    hidden = r_dims[-1]
    if "hidden_size" in attr and int(attr["hidden_size"]) != hidden:
        raise _invalid(
            label, f"attribute 'hidden_size' = {attr['hidden_size']}", f"R has hidden size {hidden}"
        )
    if r_dims[0] != len(reverse) or r_dims[1] != num_gates * hidden:
        raise _invalid(
            label, f"R of shape {r_dims}", f"expected [{len(reverse)}, {num_gates * hidden}, {hidden}]"
        )

    _check_sequence_lens(label, inputs[4], seq_len, params)

    clip = attr.get("clip")
    if clip is not None:
        clip = float(clip)
        if clip <= 0:
            raise _invalid(label, f"attribute 'clip' = {clip}", "must be positive")
    dtype = str(x.ty.dtype)
    return _Config(
        label=label,
        dtype=dtype,
        seq_len=seq_len,
        batch=batch,
        hidden=hidden,
        layout=layout,
        reverse=reverse,
        clip=clip,
        activations=_parse_activations(label, attr, default_activations, len(reverse), dtype),
    )


def _time_major(bb: relax.BlockBuilder, cfg: _Config, x: relax.Expr) -> relax.Expr:
    """``X`` as ``[seq_len, batch, input]`` so that splitting its projection over time is free."""
    return x if cfg.layout == 0 else bb.emit(relax.op.permute_dims(x, [1, 0, 2]))


def _initial_states(bb: relax.BlockBuilder, cfg: _Config, state: relax.Expr | None) -> list:
    """Split an optional initial state into one ``[1, batch, hidden]`` tensor per direction.

    An absent or all-zero constant state (torch exports its default zero states as constants)
    is ``None``: the first step then skips the terms it would cancel, e.g. the recurrent matmul.
    """
    num_dirs = len(cfg.reverse)
    state = _weight(state)
    if state is None or (isinstance(state, np.ndarray) and not state.any()):
        return [None] * num_dirs
    if isinstance(state, np.ndarray):
        if cfg.layout == 1:
            state = state.transpose(1, 0, 2)
        return [relax.const(np.ascontiguousarray(state[d : d + 1])) for d in range(num_dirs)]
    if cfg.layout == 1:
        state = bb.emit(relax.op.permute_dims(state, [1, 0, 2]))
    if num_dirs == 1:
        return [state]
    parts = bb.emit(relax.op.split(state, num_dirs, axis=0))
    return [bb.emit(relax.TupleGetItem(parts, d)) for d in range(num_dirs)]


def _project_inputs(
    bb: relax.BlockBuilder,
    cfg: _Config,
    x: relax.Expr,
    w: Weight,
    bias: Weight | None,
    chunks: Sequence[int] = (),
) -> list[list[relax.Expr]]:
    """``X @ W^T + bias`` for all time steps in one matmul, split per step (and gate chunk).

    Parameters
    ----------
    x : relax.Expr
        Time-major input ``[seq_len, batch, input]``.
    w : Weight
        This direction's ``W``, ``[gates * hidden, input]``.
    bias : Weight or None
        Bias folded into the projection, ``[gates * hidden]``.
    chunks : sequence of int
        Split points along the gate axis, for cells that consume gate groups in separate steps.

    Returns
    -------
    list of list of relax.Expr
        ``[t][chunk]`` tensors of shape ``[1, batch, chunk_width]``.
    """
    proj = relax.op.matmul(x, _as_expr(_transpose(w), cfg.dtype))
    if bias is not None:
        proj = relax.op.add(proj, _as_expr(bias, cfg.dtype))
    proj = bb.emit(proj)
    groups = [proj]
    if chunks:
        parts = bb.emit(relax.op.split(proj, list(chunks), axis=-1))
        groups = [bb.emit(relax.TupleGetItem(parts, i)) for i in range(len(chunks) + 1)]
    per_group = []
    for group in groups:
        if cfg.seq_len == 1:
            per_group.append([group])
            continue
        # One split per direction (a single kernel); per-step strided_slices would be placed
        # inconsistently by FuseOps, some fused into the step's matmul and some left standalone.
        steps = bb.emit(relax.op.split(group, cfg.seq_len, axis=0))
        per_group.append([bb.emit(relax.TupleGetItem(steps, t)) for t in range(cfg.seq_len)])
    return [[steps[t] for steps in per_group] for t in range(cfg.seq_len)]


def _split_gates(gates: relax.Expr, count: int) -> list[relax.Expr]:
    """Slice ``[1, batch, count * hidden]`` gate pre-activations into ``count`` gates.

    One strided_slice per gate rather than one split: FuseOps fuses each single-consumer slice
    into the gate math that reads it, while a split's tuple output would stay a kernel of its own
    at every step.
    """
    width = int(gates.ty.shape.values[-1]) // count
    return [
        relax.op.strided_slice(gates, axes=[2], begin=[k * width], end=[(k + 1) * width])
        for k in range(count)
    ]


def _activate(bb: relax.BlockBuilder, cfg: _Config, func: Activation, x: relax.Expr) -> relax.Expr:
    """``func(clip(x))``: ONNX clips the input of every gate activation."""
    if cfg.clip is not None:
        x = relax.op.clip(x, -cfg.clip, cfg.clip)
    return bb.emit(func(x))


def _time_order(cfg: _Config, reverse: bool) -> range:
    return range(cfg.seq_len - 1, -1, -1) if reverse else range(cfg.seq_len)


def _assemble_outputs(
    bb: relax.BlockBuilder,
    cfg: _Config,
    step_outputs: list[list[relax.Expr]],
    finals: list[list[relax.Expr]],
    num_outputs: int,
) -> relax.Expr:
    """Build ``Y`` and the final states in the node's layout.

    Parameters
    ----------
    step_outputs : list of list of relax.Expr
        ``[direction][t]`` hidden states, each ``[1, batch, hidden]``, in time order.
    finals : list of list of relax.Expr
        Per final-state output (``Y_h``, then ``Y_c`` for LSTM), one tensor per direction.
    num_outputs : int
        How many outputs the ONNX node lists.

    Returns
    -------
    relax.Expr
        ``Y`` alone when the node lists one output (the importer binds a one-field Tuple itself,
        not its field, to the output name), else a Tuple of the listed outputs.
    """
    num_dirs = len(cfg.reverse)
    # Concatenating in (t, direction) order gives [seq_len * num_dirs, batch, hidden], which is
    # Y's [seq_len, num_dirs, batch, hidden] memory order: a reshape finishes it.
    flat = [step_outputs[d][t] for t in range(cfg.seq_len) for d in range(num_dirs)]
    y = flat[0] if len(flat) == 1 else relax.op.concat(flat, axis=0)
    y = relax.op.reshape(y, [cfg.seq_len, num_dirs, cfg.batch, cfg.hidden])
    if cfg.layout == 1:
        y = relax.op.permute_dims(y, [2, 0, 1, 3])
    outputs = [bb.emit(y)]
    # Trailing outputs the node does not list are not built (empty names in between still are).
    for states in finals[: max(num_outputs, 1) - 1]:
        state = states[0] if num_dirs == 1 else relax.op.concat(states, axis=0)
        if cfg.layout == 1:
            state = relax.op.permute_dims(state, [1, 0, 2])
        outputs.append(bb.emit(state) if isinstance(state, relax.Call) else state)
    return outputs[0] if len(outputs) == 1 else relax.Tuple(outputs)


def _check_optional_shape(cfg: _Config, name: str, expr: relax.Expr | None, expected: list) -> None:
    if expr is None:
        return
    dims = _static_dims(cfg.label, name, expr)
    if dims != expected:
        raise _invalid(cfg.label, f"input '{name}' of shape {dims}", f"expected {expected}")


def _state_shape(cfg: _Config) -> list:
    num_dirs = len(cfg.reverse)
    return [num_dirs, cfg.batch, cfg.hidden] if cfg.layout == 0 else [cfg.batch, num_dirs, cfg.hidden]


# ---------------------------------------------------------------------------------------------
# Converters


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
        cfg = _parse("LSTM", inputs, attr, params, 4, ("Sigmoid", "Tanh", "Tanh"), cls._ATTRS)
        input_forget = int(attr.get("input_forget", 0))
        if input_forget not in (0, 1):
            raise _invalid(cfg.label, f"attribute 'input_forget' = {input_forget}", "expected 0 or 1")
        num_dirs, hidden = len(cfg.reverse), cfg.hidden
        _check_optional_shape(cfg, "B", inputs[3], [num_dirs, 8 * hidden])
        _check_optional_shape(cfg, "initial_h", inputs[5], _state_shape(cfg))
        _check_optional_shape(cfg, "initial_c", inputs[6], _state_shape(cfg))
        _check_optional_shape(cfg, "P", inputs[7], [num_dirs, 3 * hidden])

        x = _time_major(bb, cfg, inputs[0])
        w, r, b, p = (_weight(inputs[i]) for i in (1, 2, 3, 7))
        h0s = _initial_states(bb, cfg, inputs[5])
        c0s = _initial_states(bb, cfg, inputs[6])

        ys, hs, cs = [], [], []
        for d, reverse in enumerate(cfg.reverse):
            bias = None
            if b is not None:
                b_d = _take(b, d)
                bias = _add(_rows(b_d, 0, 4 * hidden), _rows(b_d, 4 * hidden, 8 * hidden))
            xw = _project_inputs(bb, cfg, x, _take(w, d), bias)
            r_t = bb.normalize(_as_expr(_transpose(_take(r, d)), cfg.dtype))
            peep = None
            if p is not None:
                p_d = _take(p, d)
                peep = [
                    bb.normalize(_as_expr(_rows(p_d, k * hidden, (k + 1) * hidden), cfg.dtype))
                    for k in range(3)
                ]
            h, c = h0s[d], c0s[d]
            y = [None] * cfg.seq_len
            for t in _time_order(cfg, reverse):
                h, c = cls._step(bb, cfg, cfg.activations[d], xw[t][0], r_t, peep, input_forget, h, c)
                y[t] = h
            ys.append(y)
            hs.append(h)
            cs.append(c)
        return _assemble_outputs(bb, cfg, ys, [hs, cs], attr["tvm_custom"]["num_outputs"])

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
        i, o, f, g = _split_gates(gates, 4)
        if peep is not None and c is not None:
            i = op.add(i, op.multiply(peep[0], c))
        i = _activate(bb, cfg, f_act, i)
        g = _activate(bb, cfg, g_act, g)
        c_new = op.multiply(i, g)
        if c is not None:
            if input_forget:
                # Coupled gates: onnxruntime forgets by 1 - i, ignoring the f rows of W, R and B.
                f = op.subtract(_scalar(1.0, cfg.dtype), i)
            else:
                if peep is not None:
                    f = op.add(f, op.multiply(peep[2], c))
                f = _activate(bb, cfg, f_act, f)
            c_new = op.add(c_new, op.multiply(f, c))
        c_new = bb.emit(c_new)
        if peep is not None:
            o = op.add(o, op.multiply(peep[1], c_new))
        o = _activate(bb, cfg, f_act, o)
        # clip bounds gate inputs only: onnxruntime applies h() to the unclipped cell state.
        h_new = bb.emit(op.multiply(o, h_act(c_new)))
        return h_new, c_new


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
        cfg = _parse("GRU", inputs, attr, params, 3, ("Sigmoid", "Tanh"), cls._ATTRS)
        linear_before_reset = int(attr.get("linear_before_reset", 0))
        if linear_before_reset not in (0, 1):
            raise _invalid(
                cfg.label, f"attribute 'linear_before_reset' = {linear_before_reset}", "expected 0 or 1"
            )
        num_dirs, hidden = len(cfg.reverse), cfg.hidden
        _check_optional_shape(cfg, "B", inputs[3], [num_dirs, 6 * hidden])
        _check_optional_shape(cfg, "initial_h", inputs[5], _state_shape(cfg))

        x = _time_major(bb, cfg, inputs[0])
        w, r, b = (_weight(inputs[i]) for i in (1, 2, 3))
        h0s = _initial_states(bb, cfg, inputs[5])

        ys, hs = [], []
        for d, reverse in enumerate(cfg.reverse):
            w_d, r_d = _take(w, d), _take(r, d)
            bias, rb_h = None, None
            if b is not None:
                b_d = _take(b, d)
                wb, rb = _rows(b_d, 0, 3 * hidden), _rows(b_d, 3 * hidden, 6 * hidden)
                if linear_before_reset:
                    # Rb_h sits inside r * (h @ Rh^T + Rb_h): only Rb_z and Rb_r fold into the projection.
                    bias = _concat_rows(
                        _add(_rows(wb, 0, 2 * hidden), _rows(rb, 0, 2 * hidden)),
                        _rows(wb, 2 * hidden, 3 * hidden),
                    )
                    rb_h = bb.normalize(_as_expr(_rows(rb, 2 * hidden, 3 * hidden), cfg.dtype))
                else:
                    bias = _add(wb, rb)
            if linear_before_reset:
                # One recurrent matmul serves all three gates.
                xw = _project_inputs(bb, cfg, x, w_d, bias)
                r_t = [bb.normalize(_as_expr(_transpose(r_d), cfg.dtype))]
            else:
                # (r * h) @ Rh^T needs r first: the z/r and h gate groups get separate matmuls.
                xw = _project_inputs(bb, cfg, x, w_d, bias, chunks=[2 * hidden])
                r_t = [
                    bb.normalize(_as_expr(_transpose(_rows(r_d, 0, 2 * hidden)), cfg.dtype)),
                    bb.normalize(_as_expr(_transpose(_rows(r_d, 2 * hidden, 3 * hidden)), cfg.dtype)),
                ]
            h = h0s[d]
            y = [None] * cfg.seq_len
            for t in _time_order(cfg, reverse):
                h = cls._step(bb, cfg, cfg.activations[d], xw[t], r_t, rb_h, linear_before_reset, h)
                y[t] = h
            ys.append(y)
            hs.append(h)
        return _assemble_outputs(bb, cfg, ys, [hs], attr["tvm_custom"]["num_outputs"])

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
            x_z, x_r, x_h = _split_gates(xw_t[0], 3)
            if h is None:
                z = _activate(bb, cfg, f_act, x_z)
                pre_h = x_h
                if rb_h is not None:
                    pre_h = op.add(x_h, op.multiply(_activate(bb, cfg, f_act, x_r), rb_h))
            else:
                rec_z, rec_r, rec_h = _split_gates(bb.emit(op.matmul(h, r_t[0])), 3)
                if rb_h is not None:
                    rec_h = op.add(rec_h, rb_h)
                z = _activate(bb, cfg, f_act, op.add(x_z, rec_z))
                r = _activate(bb, cfg, f_act, op.add(x_r, rec_r))
                pre_h = op.add(x_h, op.multiply(r, rec_h))
        else:
            x_zr, x_h = xw_t
            zr = x_zr if h is None else bb.emit(op.add(op.matmul(h, r_t[0]), x_zr))
            z, r = _split_gates(zr, 2)
            z = _activate(bb, cfg, f_act, z)
            pre_h = x_h
            if h is not None:  # r only scales h, so a zero state makes it irrelevant
                reset_h = bb.emit(op.multiply(_activate(bb, cfg, f_act, r), h))
                pre_h = op.add(op.matmul(reset_h, r_t[1]), x_h)
        h_tilde = _activate(bb, cfg, g_act, pre_h)
        # (1 - z) * h~ + z * h, written with one multiply fewer.
        if h is None:
            return bb.emit(op.multiply(op.subtract(_scalar(1.0, cfg.dtype), z), h_tilde))
        return bb.emit(op.add(h_tilde, op.multiply(z, op.subtract(h, h_tilde))))
