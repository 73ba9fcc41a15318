"""Graph building shared by the LSTM and GRU converters: layout, states, projection, gates, outputs.

States travel as ``[1, batch, hidden]`` tensors: the ONNX state layout is ``[num_directions, batch,
hidden]``, so splitting the initial state, concatenating the final states and stacking the step
outputs into ``Y`` need no per-step reshape.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tvm import relax

from .rnn_activations import Activation
from .rnn_config import RNNConfig
from .rnn_weights import Weight, as_weight, transpose_weight, weight_expr


def time_major(bb: relax.BlockBuilder, cfg: RNNConfig, x: relax.Expr) -> relax.Expr:
    """``X`` as ``[seq_len, batch, input]`` so that splitting its projection over time is free."""
    return x if cfg.layout == 0 else bb.emit(relax.op.permute_dims(x, [1, 0, 2]))


def initial_states(bb: relax.BlockBuilder, cfg: RNNConfig, state: relax.Expr | None) -> list:
    """Split an optional initial state into one ``[1, batch, hidden]`` tensor per direction.

    An absent or all-zero constant state (torch exports its default zero states as constants)
    is ``None``: the first step then skips the terms it would cancel, e.g. the recurrent matmul.
    """
    num_dirs = len(cfg.reverse)
    state = as_weight(state)
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


def project_inputs(
    bb: relax.BlockBuilder,
    cfg: RNNConfig,
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
    proj = relax.op.matmul(x, weight_expr(transpose_weight(w), cfg.dtype))
    if bias is not None:
        proj = relax.op.add(proj, weight_expr(bias, cfg.dtype))
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


def split_gates(gates: relax.Expr, count: int) -> list[relax.Expr]:
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


def activate(bb: relax.BlockBuilder, cfg: RNNConfig, func: Activation, x: relax.Expr) -> relax.Expr:
    """``func(clip(x))``: ONNX clips the input of every gate activation."""
    if cfg.clip is not None:
        x = relax.op.clip(x, -cfg.clip, cfg.clip)
    return bb.emit(func(x))


def time_order(cfg: RNNConfig, reverse: bool) -> range:
    return range(cfg.seq_len - 1, -1, -1) if reverse else range(cfg.seq_len)


def assemble_outputs(
    bb: relax.BlockBuilder,
    cfg: RNNConfig,
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
