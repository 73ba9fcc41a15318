"""Reading and validating an ONNX LSTM/GRU node: attributes, input shapes, ``sequence_lens``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import get_constant

from .onnx_node import decode_attribute, invalid_attribute, node_label, unsupported_attribute
from .rnn_activations import Activation, parse_activations


@dataclass
class RNNConfig:
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
        raise unsupported_attribute(label, f"input '{name}' of unknown shape", "give its shape in shape_dict")
    return [int(v) if isinstance(v, tvm.tirx.IntImm) else v for v in shape.values]


def _check_sequence_lens(label: str, seq_lens: relax.Expr | None, seq_len: int, params) -> None:
    """Accept ``sequence_lens`` only when it cannot change the result of a full-length unroll."""
    if seq_lens is None:
        return
    seq_lens = get_constant(seq_lens, params)
    if not isinstance(seq_lens, tvm.ir.GenericConst):
        raise unsupported_attribute(
            label,
            "a non-constant input 'sequence_lens'",
            f"the recurrence is unrolled over the static sequence length {seq_len}, so per-batch "
            "lengths cannot be honoured; drop the input or make it a constant equal to the sequence length",
        )
    lens = seq_lens.value.numpy()
    if not np.all(lens == seq_len):
        raise unsupported_attribute(
            label,
            f"input 'sequence_lens' = {lens.tolist()}",
            f"the recurrence is unrolled over the static sequence length {seq_len}; only lengths "
            "all equal to it are supported",
        )


def parse_node(
    op_type: str,
    inputs,
    attr: dict,
    params,
    num_gates: int,
    default_activations: Sequence[str],
    known_attrs: set[str],
) -> RNNConfig:
    label = node_label(op_type, attr)
    for key in attr:
        if key != "tvm_custom" and key not in known_attrs:
            raise unsupported_attribute(
                label, f"attribute '{key}'", f"{op_type} converters know {sorted(known_attrs)}"
            )

    direction = decode_attribute(attr.get("direction", b"forward"))
    reverse = {"forward": [False], "reverse": [True], "bidirectional": [False, True]}.get(direction)
    if reverse is None:
        raise invalid_attribute(
            label, f"attribute 'direction' = '{direction}'", "expected forward, reverse or bidirectional"
        )
    layout = int(attr.get("layout", 0))
    if layout not in (0, 1):
        raise invalid_attribute(label, f"attribute 'layout' = {layout}", "expected 0 or 1")

    x, w, r = inputs[0], inputs[1], inputs[2]
    if x is None or w is None or r is None:
        raise invalid_attribute(label, "a missing X, W or R input", "all three are required")
    x_dims = _static_dims(label, "X", x)
    seq_len, batch = (x_dims[0], x_dims[1]) if layout == 0 else (x_dims[1], x_dims[0])
    if not isinstance(seq_len, int):
        raise unsupported_attribute(
            label,
            f"a symbolic sequence length ({seq_len})",
            "the recurrence is unrolled, so give X a static shape in shape_dict",
        )
    r_dims = _static_dims(label, "R", r)
    hidden = r_dims[-1]
    if "hidden_size" in attr and int(attr["hidden_size"]) != hidden:
        raise invalid_attribute(
            label, f"attribute 'hidden_size' = {attr['hidden_size']}", f"R has hidden size {hidden}"
        )
    if r_dims[0] != len(reverse) or r_dims[1] != num_gates * hidden:
        raise invalid_attribute(
            label, f"R of shape {r_dims}", f"expected [{len(reverse)}, {num_gates * hidden}, {hidden}]"
        )

    _check_sequence_lens(label, inputs[4], seq_len, params)

    clip = attr.get("clip")
    if clip is not None:
        clip = float(clip)
        if clip <= 0:
            raise invalid_attribute(label, f"attribute 'clip' = {clip}", "must be positive")
    dtype = str(x.ty.dtype)
    return RNNConfig(
        label=label,
        dtype=dtype,
        seq_len=seq_len,
        batch=batch,
        hidden=hidden,
        layout=layout,
        reverse=reverse,
        clip=clip,
        activations=parse_activations(label, attr, default_activations, len(reverse), dtype),
    )


def check_optional_shape(cfg: RNNConfig, name: str, expr: relax.Expr | None, expected: list) -> None:
    if expr is None:
        return
    dims = _static_dims(cfg.label, name, expr)
    if dims != expected:
        raise invalid_attribute(cfg.label, f"input '{name}' of shape {dims}", f"expected {expected}")


def state_shape(cfg: RNNConfig) -> list:
    num_dirs = len(cfg.reverse)
    return [num_dirs, cfg.batch, cfg.hidden] if cfg.layout == 0 else [cfg.batch, num_dirs, cfg.hidden]
