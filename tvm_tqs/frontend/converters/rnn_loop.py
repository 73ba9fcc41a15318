"""Opt-in emission of an LSTM/GRU/RNN node as one loop kernel per direction (``load(recurrent="loop")``).

Under ``recurrent_mode("loop")`` the converters hand the node to `emit_loop`, which emits one
``call_tir`` per direction to `targets.kernels.recurrent` (the whole sequence in one TIR PrimFunc)
instead of unrolling it. A bidirectional node is two calls and a concat; ``layout=1`` needs no
transpose (the kernel reads ``X`` and writes ``Y`` in the node's layout). `emit_loop` returns None for
what the kernel does not cover (another dtype than float32, a symbolic batch), and the converter then
unrolls as usual: the option never makes a model fail to load.
"""

from __future__ import annotations

import contextlib
import contextvars

import numpy as np
import tvm
from tvm import relax

from .onnx_node import decode_attribute
from .rnn_activations import _ACTIVATION_PARAMS
from .rnn_config import RNNConfig
from .rnn_unroll import initial_states
from .rnn_weights import (
    add_weights,
    as_weight,
    concat_weight_rows,
    take_weight,
    transpose_weight,
    weight_expr,
    weight_rows,
)

RECURRENT_MODES = ("unroll", "loop")
_MODE = contextvars.ContextVar("tvm_tqs_recurrent_mode", default="unroll")


@contextlib.contextmanager
def recurrent_mode(mode: str):
    """Converters inside this block emit recurrences as ``mode`` (`RECURRENT_MODES`)."""
    if mode not in RECURRENT_MODES:
        raise ValueError(f"recurrent must be one of {', '.join(RECURRENT_MODES)}, got {mode!r}")
    token = _MODE.set(mode)
    try:
        yield
    finally:
        _MODE.reset(token)


def loop_requested() -> bool:
    return _MODE.get() == "loop"


def activation_specs(attr: dict, defaults, num_dirs: int) -> list[tuple]:
    """Per direction, ``((name, alpha, beta), ...)`` resolved as `rnn_activations.parse_activations` does.

    That function returns Relax callables, which a TIR kernel cannot use; the node was already
    validated by it, so names and list lengths are known to be right here.
    """
    names = [decode_attribute(n).lower() for n in attr.get("activations", ())] or [
        d.lower() for d in defaults
    ] * num_dirs
    alphas, betas = list(attr.get("activation_alpha", ())), list(attr.get("activation_beta", ()))
    specs = []
    for name in names:
        default_alpha, default_beta = _ACTIVATION_PARAMS[name]
        alpha = beta = None
        if default_alpha is not None:
            alpha = float(alphas.pop(0)) if alphas else default_alpha
        if default_beta is not None:
            beta = float(betas.pop(0)) if betas else default_beta
        specs.append((name, alpha, beta))
    per_dir = len(defaults)
    return [tuple(specs[d * per_dir : (d + 1) * per_dir]) for d in range(num_dirs)]


def _biases(cell: str, b, d: int, hidden: int, linear_before_reset: bool):
    """(projection bias, GRU's separate ``Rb_h``) of direction ``d``, summed as the unrolled converters do."""
    if b is None:
        return None, None
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    b_d = take_weight(b, d)
    wb, rb = weight_rows(b_d, 0, gates * hidden), weight_rows(b_d, gates * hidden, 2 * gates * hidden)
    if cell == "gru" and linear_before_reset:
        bias = concat_weight_rows(
            add_weights(weight_rows(wb, 0, 2 * hidden), weight_rows(rb, 0, 2 * hidden)),
            weight_rows(wb, 2 * hidden, 3 * hidden),
        )
        return bias, weight_rows(rb, 2 * hidden, 3 * hidden)
    return add_weights(wb, rb), None


def _peepholes(p_d, hidden: int):
    """``P`` of one direction, ``[3 * hidden]`` -> ``[3, hidden]`` (``i, o, f`` rows)."""
    if isinstance(p_d, np.ndarray):
        return p_d.reshape(3, hidden)
    return relax.op.reshape(p_d, [3, hidden])


def _lens_arg(cfg: RNNConfig):
    lens = cfg.seq_lens
    if lens is None:
        return None
    if isinstance(lens, np.ndarray):
        return relax.const(lens.astype("int32"))
    return lens


def emit_loop(bb: relax.BlockBuilder, cell: str, cfg: RNNConfig, inputs, attr: dict, defaults, **options):
    """The node as loop kernels, or None when the kernel does not cover it (the caller unrolls).

    Parameters
    ----------
    cell : {"lstm", "gru", "rnn"}
    options
        ``linear_before_reset`` (GRU), ``input_forget`` (LSTM), as validated by the converter.
    """
    from tvm_tqs.targets.kernels.recurrent import RecurrentSpec, recurrent_fp32

    x = inputs[0]
    input_size = x.ty.shape.values[-1]
    if (
        cfg.dtype != "float32"
        or not isinstance(cfg.batch, int)
        or not isinstance(input_size, tvm.tirx.IntImm)
    ):
        return None
    input_size = int(input_size)
    lbr = bool(options.get("linear_before_reset", 0))
    num_dirs, hidden = len(cfg.reverse), cfg.hidden
    w, r, b = (as_weight(inputs[i]) for i in (1, 2, 3))
    peep = as_weight(inputs[7]) if cell == "lstm" and len(inputs) > 7 else None
    h0s = initial_states(bb, cfg, inputs[5])
    c0s = initial_states(bb, cfg, inputs[6]) if cell == "lstm" else [None] * num_dirs
    lens = _lens_arg(cfg)
    acts = activation_specs(attr, defaults, num_dirs)
    per_dir = []
    for d, reverse in enumerate(cfg.reverse):
        bias, rb_h = _biases(cell, b, d, hidden, lbr)
        optional = {
            "bias": bias,
            "rb_h": rb_h,
            "peep": None if peep is None else _peepholes(take_weight(peep, d), hidden),
            "h0": h0s[d],
            "c0": c0s[d],
        }
        spec = RecurrentSpec(
            cell=cell,
            seq_len=cfg.seq_len,
            batch=cfg.batch,
            input_size=input_size,
            hidden=hidden,
            activations=acts[d],
            reverse=reverse,
            layout=cfg.layout,
            clip=cfg.clip,
            linear_before_reset=lbr,
            input_forget=bool(options.get("input_forget", 0)),
            bias=bias is not None,
            peepholes=optional["peep"] is not None,
            initial_h=h0s[d] is not None,
            initial_c=c0s[d] is not None,
            seq_lens=None if lens is None else str(lens.ty.dtype),
        )
        args = [x] + [_arg(bb, transpose_weight(take_weight(m, d)), cfg.dtype) for m in (w, r)]
        for name in list(spec.input_shapes())[3:]:
            args.append(lens if name == "lens" else _arg(bb, optional[name], cfg.dtype))
        gv = bb.add_func(recurrent_fp32(spec), spec.name)
        out_types = [relax.TensorType(shape=list(s), dtype="float32") for s in spec.output_shapes()]
        call = bb.emit(relax.call_tir(gv, args, out_types))
        per_dir.append([bb.emit(relax.TupleGetItem(call, i)) for i in range(len(out_types))])
    return _outputs(bb, cfg, per_dir, attr["tvm_custom"]["num_outputs"])


def _arg(bb: relax.BlockBuilder, value, dtype: str) -> relax.Expr:
    """A call argument: numpy weights become constants, Relax expressions (weights given as graph
    inputs, sliced per direction) are bound first, since ``call_tir`` takes leaf arguments."""
    expr = weight_expr(np.ascontiguousarray(value) if isinstance(value, np.ndarray) else value, dtype)
    return bb.emit(expr) if isinstance(expr, relax.Call) else expr


def _outputs(bb: relax.BlockBuilder, cfg: RNNConfig, per_dir: list[list], num_outputs: int) -> relax.Expr:
    """``Y`` and the listed final states; directions are concatenated along the node's direction axis."""
    y_axis, state_axis = (1, 0) if cfg.layout == 0 else (2, 1)
    fields = []
    for i in range(min(max(num_outputs, 1), len(per_dir[0]))):
        parts = [outs[i] for outs in per_dir]
        axis = y_axis if i == 0 else state_axis
        fields.append(parts[0] if len(parts) == 1 else bb.emit(relax.op.concat(parts, axis=axis)))
    return fields[0] if len(fields) == 1 else relax.Tuple(fields)
