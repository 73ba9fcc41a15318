"""Reading and validating an ONNX LSTM/GRU/RNN node: attributes, input shapes, ``sequence_lens``."""

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
    """What an LSTM/GRU/RNN node asks for, validated."""

    label: str  # names the node in errors
    dtype: str
    seq_len: int
    batch: object  # int or tirx.PrimExpr: a symbolic batch is fine, a symbolic seq_len is not
    hidden: int
    layout: int
    reverse: list[bool]  # one flag per direction, forward first
    clip: float | None
    activations: list[list[Activation]]  # per direction, in ONNX order
    # None (no masking), constant lengths (numpy) or a runtime input (relax), see `_sequence_lens`
    seq_lens: np.ndarray | relax.Expr | None = None


def _static_dims(label: str, name: str, expr: relax.Expr) -> list:
    shape = expr.ty.shape
    if shape is None or not hasattr(shape, "values"):
        raise unsupported_attribute(label, f"input '{name}' of unknown shape", "give its shape in shape_dict")
    return [int(v) if isinstance(v, tvm.tirx.IntImm) else v for v in shape.values]


def _sequence_lens(
    label: str, seq_lens: relax.Expr | None, seq_len: int, batch, params
) -> np.ndarray | relax.Expr | None:
    """``sequence_lens`` as the unroll needs it: None when it cannot change a full-length unroll.

    A constant whose entries all equal the sequence length (or an absent input) is None, so the
    graph is exactly the unmasked one; any other constant comes back as a numpy array, a runtime
    (graph) input as the relax expression, both to be masked step by step (`rnn_unroll.step_masks`).
    """
    if seq_lens is None:
        return None
    seq_lens = get_constant(seq_lens, params)
    dtype = str(seq_lens.ty.dtype)
    if not dtype.startswith(("int", "uint")):
        raise invalid_attribute(label, f"input 'sequence_lens' of dtype {dtype}", "expected int32")
    if isinstance(seq_lens, tvm.ir.GenericConst):
        lens = seq_lens.value.numpy()
        if lens.shape != (batch,) and not (lens.ndim == 1 and not isinstance(batch, int)):
            raise invalid_attribute(
                label, f"input 'sequence_lens' of shape {list(lens.shape)}", f"expected [{batch}] (the batch)"
            )
        if np.any(lens < 0) or np.any(lens > seq_len):
            raise invalid_attribute(
                label,
                f"input 'sequence_lens' = {lens.tolist()}",
                f"every length must lie in [0, {seq_len}] (the sequence length of X)",
            )
        return None if np.all(lens == seq_len) else lens.astype(np.int64)
    dims = _static_dims(label, "sequence_lens", seq_lens)
    if len(dims) != 1 or (isinstance(dims[0], int) and isinstance(batch, int) and dims[0] != batch):
        raise invalid_attribute(
            label, f"input 'sequence_lens' of shape {dims}", f"expected [{batch}] (the batch)"
        )
    return seq_lens


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

    seq_lens = _sequence_lens(label, inputs[4], seq_len, batch, params)

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
        seq_lens=seq_lens,
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
