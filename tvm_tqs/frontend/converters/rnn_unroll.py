"""Graph building shared by the LSTM, GRU and RNN converters: layout, states, projection, gates,
``sequence_lens`` masking, the unrolled loop, outputs.

States travel as ``[1, batch, hidden]`` tensors: the ONNX state layout is ``[num_directions, batch,
hidden]``, so splitting the initial state, concatenating the final states and stacking the step
outputs into ``Y`` need no per-step reshape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tvm import relax

from .rnn_activations import Activation, scalar_const
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


@dataclass
class StepMasks:
    """Which batch rows each time step updates, from ``sequence_lens``.

    ``per_step[t]`` is True (every row: no mask), False (no row: the step is skipped) or a bool
    ``[1, batch, 1]`` tensor ``t < sequence_lens``. ``nonempty`` is the bool ``[1, batch, 1]`` tensor
    ``sequence_lens > 0``, or None when no row can be empty.
    """

    per_step: list
    nonempty: relax.Expr | None


def step_masks(bb: relax.BlockBuilder, cfg: RNNConfig) -> StepMasks | None:
    """The per-step masks of a node with ``sequence_lens``; None when there is nothing to mask.

    Row ``b`` takes steps ``t < sequence_lens[b]``: in the forward direction its state freezes after
    its last step, in the reverse direction it stays at the initial state until step
    ``sequence_lens[b] - 1``, so the reverse pass reads that row's own steps reversed (ONNX's
    definition). Constant lengths give constant masks, and steps every row (or no row) takes need
    none. Runtime lengths outside ``[0, seq_len]`` cannot be refused: above ``seq_len`` acts as
    ``seq_len``, below 0 as 0 (onnxruntime raises an error for both).
    """
    lens = cfg.seq_lens
    if lens is None:
        return None
    if isinstance(lens, np.ndarray):
        per_step = []
        for t in range(cfg.seq_len):
            keep = t < lens
            per_step.append(
                bool(keep.all()) if keep.all() or not keep.any() else relax.const(keep.reshape(1, -1, 1))
            )
        nonempty = None if (lens > 0).all() else relax.const((lens > 0).reshape(1, -1, 1))
        return StepMasks(per_step, nonempty)
    dtype = str(lens.ty.dtype)
    rows = bb.emit(relax.op.expand_dims(lens, [0, 2]))  # [1, batch, 1]
    per_step = [bb.emit(relax.op.less(relax.const(t, dtype), rows)) for t in range(cfg.seq_len)]
    nonempty = bb.emit(relax.op.greater(rows, relax.const(0, dtype)))
    return StepMasks(per_step, nonempty)


Step = Callable[[int, tuple], tuple]


def unroll(
    bb: relax.BlockBuilder,
    cfg: RNNConfig,
    masks: StepMasks | None,
    reverse: bool,
    step: Step,
    states: tuple,
) -> tuple[list[relax.Expr], tuple]:
    """Run one direction of the recurrence over time.

    Parameters
    ----------
    masks : StepMasks or None
        From `step_masks`; None runs every step on every row (the graph has no mask ops at all).
    step : callable
        ``step(t, states) -> new states``; ``states[0]`` is the hidden state, which is also the
        step's output. A state of None is a zero state.
    states : tuple
        The initial states.

    Returns
    -------
    (list of relax.Expr, tuple)
        The step outputs in time order (zero where a row is past its length, as ONNX defines ``Y``)
        and the final states (zero for a row of length 0, as onnxruntime gives them).
    """
    op = relax.op
    zero = scalar_const(0.0, cfg.dtype)
    y = [None] * cfg.seq_len
    for t in time_order(cfg, reverse):
        keep = True if masks is None else masks.per_step[t]
        if keep is False:
            y[t] = bb.emit(op.zeros(relax.ShapeExpr([1, cfg.batch, cfg.hidden]), cfg.dtype))
            continue
        new = step(t, states)
        if keep is True:
            states = new
            y[t] = new[0]
            continue
        y[t] = bb.emit(op.where(keep, new[0], zero))
        states = tuple(
            bb.emit(op.where(keep, n, zero if s is None else s)) for n, s in zip(new, states, strict=True)
        )
    if masks is not None:
        shape = relax.ShapeExpr([1, cfg.batch, cfg.hidden])
        states = tuple(bb.emit(op.zeros(shape, cfg.dtype)) if s is None else s for s in states)
        if masks.nonempty is not None:
            states = tuple(bb.emit(op.where(masks.nonempty, s, zero)) for s in states)
    return y, states


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
