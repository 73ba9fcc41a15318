"""One TIR PrimFunc per recurrent layer direction (ONNX LSTM, GRU, RNN), fp32: the whole sequence in one call.

The unrolled recurrence of `tvm_tqs.frontend.converters` costs 1-3 kernels per time step, and at batch 1
the Relax VM's dispatch of those hundreds of calls is most of the model's time. This kernel runs the
layer in one call: the input projection of every step as one GEMM into a scratch buffer, then a serial
loop over time whose body is the recurrent GEMV per batch row (weights read in place, gate columns in
vector blocks, `_Builder.matvec`) followed by the gate math and the state update, with the states in
scratch buffers.

The arithmetic follows the unrolled graph operation for operation (``h @ R^T`` summed over ``k`` from
zero, then ``+ x W^T + bias``; the same gate formulas, ``clip`` on every gate input), so the two agree to
the last bit whenever the transcendental functions lower alike. ``sequence_lens`` (a runtime int input)
masks inside the loop: row ``b`` takes the steps ``t < sequence_lens[b]`` (reverse: the steps are
visited from ``T-1`` down, so a row stays at its initial state until its own last step), ``Y`` is 0 at
the others, and a row of length 0 ends with zero states, as in `rnn_unroll.unroll`.

Parameters, in order (destination passing): ``x`` (``[T, B, I]``, or ``[B, T, I]`` for layout 1),
``w_t`` ``[I, G*H]``, ``r_t`` ``[H, G*H]``, then ``bias`` ``[G*H]`` (the biases folded into the
projection), ``rb_h`` ``[H]`` (GRU with ``linear_before_reset``: the recurrent bias of the h gate),
``peep`` ``[3, H]`` (LSTM, ``i, o, f``), ``h0`` / ``c0`` ``[1, B, H]``, ``lens`` ``[B]`` when the spec has
them, and the outputs ``y`` (``[T, 1, B, H]``, or ``[B, T, 1, H]`` for layout 1), ``h_n`` (``[1, B, H]`` /
``[B, 1, H]``) and, for LSTM, ``c_n``. Gate order is ONNX's: LSTM ``i, o, f, c``, GRU ``z, r, h``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import tvm
from tvm import tirx
from tvm.script.ir_builder import IRBuilder
from tvm.tirx.script.builder import ir as T

__all__ = ["ACTIVATIONS", "CELLS", "SPEC_ATTR", "RecurrentSpec", "activation", "recurrent_fp32"]

SPEC_ATTR = "tvm_tqs.recurrent"
CELLS = {"lstm": 4, "gru": 3, "rnn": 1}  # gates per cell
ACTIVATIONS = (
    "sigmoid",
    "tanh",
    "relu",
    "affine",
    "leakyrelu",
    "thresholdedrelu",
    "scaledtanh",
    "hardsigmoid",
    "elu",
    "softsign",
    "softplus",
)
_NUM_ACTIVATIONS = {"lstm": 3, "gru": 2, "rnn": 1}
F32 = "float32"
_LANES = (64, 32, 16, 8)  # column block sizes tried in order: 8 ymm accumulators at 64
_K_CHUNK = 16  # reduction terms per expression


@dataclass(frozen=True)
class RecurrentSpec:
    """One direction of one recurrent layer.

    ``activations`` are this direction's functions in ONNX order (LSTM ``f, g, h``; GRU ``f, g``; RNN
    ``f``), each ``(name, alpha, beta)`` with the values resolved (None where the function takes none).
    ``seq_lens`` is the dtype of the runtime lengths input, or None for none.
    """

    cell: str
    seq_len: int
    batch: int
    input_size: int
    hidden: int
    activations: tuple
    reverse: bool = False
    layout: int = 0
    clip: float | None = None
    linear_before_reset: bool = False
    input_forget: bool = False
    bias: bool = False
    peepholes: bool = False
    initial_h: bool = False
    initial_c: bool = False
    seq_lens: str | None = None

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {self.cell!r}")
        for name in ("seq_len", "batch", "input_size", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if len(self.activations) != _NUM_ACTIVATIONS[self.cell]:
            raise ValueError(
                f"{self.cell} takes {_NUM_ACTIVATIONS[self.cell]} activations, got {self.activations}"
            )
        for name, _, _ in self.activations:
            if name not in ACTIVATIONS:
                raise ValueError(f"activation {name!r} is not one of {', '.join(ACTIVATIONS)}")
        if self.layout not in (0, 1):
            raise ValueError(f"layout must be 0 or 1, got {self.layout}")
        if (self.peepholes or self.initial_c or self.input_forget) and self.cell != "lstm":
            raise ValueError("peepholes, initial_c and input_forget are LSTM options")
        if self.linear_before_reset and self.cell != "gru":
            raise ValueError("linear_before_reset is a GRU option")
        if self.seq_lens is not None and not self.seq_lens.startswith(("int", "uint")):
            raise ValueError(f"seq_lens must be an integer dtype, got {self.seq_lens!r}")

    @property
    def gates(self) -> int:
        return CELLS[self.cell]

    @property
    def rb_h(self) -> bool:
        """GRU with ``linear_before_reset`` keeps the h gate's recurrent bias out of the projection."""
        return self.bias and self.linear_before_reset

    @property
    def name(self) -> str:
        """Encodes the shape and a digest of every option: equal specs share one PrimFunc, others never."""
        digest = hashlib.sha1(repr(self).encode()).hexdigest()[:8]
        way = "rev" if self.reverse else "fwd"
        shape = f"t{self.seq_len}b{self.batch}i{self.input_size}h{self.hidden}"
        return f"tqs_{self.cell}_loop_{shape}_{way}_{digest}"

    def x_shape(self) -> tuple:
        t, b = self.seq_len, self.batch
        return (t, b, self.input_size) if self.layout == 0 else (b, t, self.input_size)

    def y_shape(self) -> tuple:
        t, b, h = self.seq_len, self.batch, self.hidden
        return (t, 1, b, h) if self.layout == 0 else (b, t, 1, h)

    def state_shape(self) -> tuple:
        """The final state of this direction, in the node's layout."""
        b, h = self.batch, self.hidden
        return (1, b, h) if self.layout == 0 else (b, 1, h)

    def input_shapes(self) -> dict[str, tuple]:
        """Every parameter before the outputs, name -> shape, in call order."""
        gh, h = self.gates * self.hidden, self.hidden
        shapes = {"x": self.x_shape(), "w_t": (self.input_size, gh), "r_t": (h, gh)}
        optional = {
            "bias": (self.bias, (gh,)),
            "rb_h": (self.rb_h, (h,)),
            "peep": (self.peepholes, (3, h)),
            "h0": (self.initial_h, (1, self.batch, h)),
            "c0": (self.initial_c, (1, self.batch, h)),
            "lens": (self.seq_lens is not None, (self.batch,)),
        }
        shapes.update({name: shape for name, (present, shape) in optional.items() if present})
        return shapes

    def output_shapes(self) -> list[tuple]:
        states = 2 if self.cell == "lstm" else 1
        return [self.y_shape()] + [self.state_shape()] * states


def _f(value: float) -> tirx.PrimExpr:
    return tirx.const(value, F32)


def activation(name: str, alpha: float | None, beta: float | None, x: tirx.PrimExpr) -> tirx.PrimExpr:
    """ONNX's recurrent activation ``name`` in TIR, written as TVM legalizes the Relax op the unroll uses."""
    zero, one = _f(0.0), _f(1.0)
    if name == "sigmoid":
        return tirx.sigmoid(x)
    if name == "tanh":
        return tirx.tanh(x)
    if name == "relu":
        return tirx.max(x, zero)
    if name == "affine":
        return x * _f(alpha) + _f(beta)
    if name == "leakyrelu":
        return tirx.Select(x > zero, x, x * _f(alpha))
    if name == "thresholdedrelu":
        return tirx.Select(x > _f(alpha), x, zero)
    if name == "scaledtanh":
        return tirx.tanh(x * _f(beta)) * _f(alpha)
    if name == "hardsigmoid":
        return tirx.max(tirx.min(x * _f(alpha) + _f(beta), one), zero)
    if name == "elu":
        return tirx.Select(x < zero, (tirx.exp(x) - one) * _f(alpha), x)
    if name == "softsign":
        return x / (tirx.abs(x) + one)
    if name == "softplus":
        # topi's softplus (beta 1, threshold 20): linear where exp would overflow
        return tirx.Select(x > _f(20.0), x, tirx.log(one + tirx.exp(x)))
    raise ValueError(f"unknown activation {name!r}")


class _Builder:
    """Emits the PrimFunc's statements into the active IRBuilder frame; one method per stage."""

    def __init__(self, spec: RecurrentSpec, bufs: dict):
        self.spec, self.b = spec, bufs
        self.gh = spec.gates * spec.hidden

    def act(self, index: int, x: tirx.PrimExpr, clip: bool = True) -> tirx.PrimExpr:
        """Activation ``index`` of the direction; ONNX clips every gate input (not LSTM's ``h(c)``)."""
        if clip and self.spec.clip is not None:
            x = tirx.max(tirx.min(x, _f(self.spec.clip)), _f(-self.spec.clip))
        name, alpha, beta = self.spec.activations[index]
        return activation(name, alpha, beta, x)

    def x_at(self, t, b, k):
        x = self.b["x"]
        return x[t, b, k] if self.spec.layout == 0 else x[b, t, k]

    def store_y(self, value, t, b, j):
        y = self.b["y"]
        T.buffer_store(y, value, [t, 0, b, j] if self.spec.layout == 0 else [b, t, 0, j])

    def projection(self):
        """``proj[t, b] = x[t, b] @ W^T (+ bias)`` for every step: one GEMM before the loop."""
        s, w_t = self.spec, self.b["w_t"]
        bias = self.b.get("bias")
        with T.grid(s.seq_len, s.batch) as (t, b):
            self.matvec(
                self.b["proj"],
                lambda j, t=t, b=b: [t, b, j],
                lambda k, t=t, b=b: self.x_at(t, b, k),
                lambda k, j: w_t[k, j],
                s.input_size,
                (0, self.gh),
                None if bias is None else (lambda j: bias[j]),
            )

    def matvec(self, out, index, lhs, rhs, depth: int, columns: tuple, tail=None):
        """``out[index(j)] = sum_k lhs(k) * rhs(k, j) (+ tail(j))`` for ``j`` in ``columns``.

        Summed over ``k`` from zero in order, then ``+ tail``: the unrolled matmul's order, so the
        results are bit-identical. Columns run in vector blocks whose partial sums over `_K_CHUNK`
        terms are single expressions (LLVM keeps them in registers; a loop over ``k`` accumulating
        in memory measured 1.5x slower for the 64x256 GEMV); a width no block size divides runs
        in axpy order.
        """
        begin, end = columns
        lanes = next((n for n in _LANES if (end - begin) % n == 0), None)
        if lanes is None:
            with T.serial(begin, end) as j:
                T.buffer_store(out, _f(0.0), index(j))
            with T.serial(0, depth) as k:
                with T.serial(begin, end) as j:
                    T.buffer_store(out, out[tuple(index(j))] + lhs(k) * rhs(k, j), index(j))
            if tail is not None:
                with T.serial(begin, end) as j:
                    T.buffer_store(out, out[tuple(index(j))] + tail(j), index(j))
            return
        with T.serial(0, (end - begin) // lanes) as jo:
            with T.vectorized(0, lanes) as ji:
                j = begin + jo * lanes + ji
                for k0 in range(0, depth, _K_CHUNK):
                    value = _f(0.0) if k0 == 0 else out[tuple(index(j))]
                    for k in range(k0, min(depth, k0 + _K_CHUNK)):
                        value = value + lhs(k) * rhs(k, j)
                    if tail is not None and k0 + _K_CHUNK >= depth:
                        value = value + tail(j)
                    T.buffer_store(out, value, index(j))

    def init_states(self):
        s = self.spec
        pairs = [("h", "h0", s.initial_h)] + ([("c", "c0", s.initial_c)] if s.cell == "lstm" else [])
        with T.grid(s.batch, s.hidden) as (b, j):
            for state, init, given in pairs:
                T.buffer_store(self.b[state], self.b[init][0, b, j] if given else _f(0.0), [b, j])

    def recurrent_gemv(self, b, src: str, begin: int, end: int):
        """``acc[b, begin:end] = src[b] @ R^T[:, begin:end]``."""
        r_t, src = self.b["r_t"], self.b[src]
        self.matvec(
            self.b["acc"],
            lambda j: [b, j],
            lambda k: src[b, k],
            lambda k, j: r_t[k, j],
            self.spec.hidden,
            (begin, end),
        )

    def step(self, t, b):
        """One time step of batch row ``b``: recurrent GEMV, gates, state update, ``Y``."""
        cell = self.spec.cell
        if cell == "lstm":
            self.recurrent_gemv(b, "h", 0, self.gh)
            self.lstm_gates(t, b)
        elif cell == "gru":
            self.gru_gates(t, b)
        else:
            self.recurrent_gemv(b, "h", 0, self.gh)
            acc, proj, h = self.b["acc"], self.b["proj"], self.b["h"]
            with T.serial(0, self.spec.hidden) as j:
                T.buffer_store(h, self.act(0, acc[b, j] + proj[t, b, j]), [b, j])
                self.store_y(h[b, j], t, b, j)

    def lstm_gates(self, t, b):
        s, hid = self.spec, self.spec.hidden
        acc, proj, h, c = self.b["acc"], self.b["proj"], self.b["h"], self.b["c"]
        peep = self.b.get("peep")
        with T.serial(0, hid) as j:

            def pre(gate):
                return acc[b, gate * hid + j] + proj[t, b, gate * hid + j]

            c_old = c[b, j]
            i_pre, f_pre = pre(0), pre(2)
            if peep is not None:
                i_pre, f_pre = i_pre + peep[0, j] * c_old, f_pre + peep[2, j] * c_old
            i = self.act(0, i_pre)
            g = self.act(1, pre(3))
            f = _f(1.0) - i if s.input_forget else self.act(0, f_pre)
            T.buffer_store(c, i * g + f * c_old, [b, j])
            o_pre = pre(1)
            if peep is not None:
                o_pre = o_pre + peep[1, j] * c[b, j]
            T.buffer_store(h, self.act(0, o_pre) * self.act(2, c[b, j], clip=False), [b, j])
            self.store_y(h[b, j], t, b, j)

    def gru_gates(self, t, b):
        s, hid = self.spec, self.spec.hidden
        acc, proj, h, tmp = self.b["acc"], self.b["proj"], self.b["h"], self.b["tmp"]
        if s.linear_before_reset:
            self.recurrent_gemv(b, "h", 0, self.gh)
        else:
            self.recurrent_gemv(b, "h", 0, 2 * hid)
            with T.serial(0, hid) as j:  # r * h, the input of the h gate's GEMV
                T.buffer_store(tmp, self.act(0, acc[b, hid + j] + proj[t, b, hid + j]) * h[b, j], [b, j])
            self.recurrent_gemv(b, "tmp", 2 * hid, 3 * hid)
        with T.serial(0, hid) as j:
            z = self.act(0, acc[b, j] + proj[t, b, j])
            if s.linear_before_reset:
                rec_h = acc[b, 2 * hid + j]
                if s.rb_h:
                    rec_h = rec_h + self.b["rb_h"][j]
                r = self.act(0, acc[b, hid + j] + proj[t, b, hid + j])
                pre_h = proj[t, b, 2 * hid + j] + r * rec_h
            else:
                pre_h = acc[b, 2 * hid + j] + proj[t, b, 2 * hid + j]
            T.buffer_store(tmp, self.act(1, pre_h), [b, j])  # h~
            T.buffer_store(h, tmp[b, j] + z * (h[b, j] - tmp[b, j]), [b, j])
            self.store_y(h[b, j], t, b, j)

    def loop(self):
        """The serial time loop; rows past their ``sequence_lens`` keep their states and emit zeros."""
        s = self.spec
        with T.serial(0, s.seq_len) as step:
            t = s.seq_len - 1 - step if s.reverse else step
            with T.serial(0, s.batch) as b:
                if s.seq_lens is None:
                    self.step(t, b)
                else:
                    with T.If(t < self.b["lens"][b].astype("int32")):
                        with T.Then():
                            self.step(t, b)
                        with T.Else():
                            with T.serial(0, s.hidden) as j:
                                self.store_y(_f(0.0), t, b, j)

    def finals(self):
        s = self.spec
        pairs = [("h_n", "h")] + ([("c_n", "c")] if s.cell == "lstm" else [])
        with T.grid(s.batch, s.hidden) as (b, j):
            for out, state in pairs:
                value = self.b[state][b, j]
                if s.seq_lens is not None:  # a row of length 0 ends with zero states (onnxruntime)
                    value = tirx.Select(self.b["lens"][b].astype("int32") > 0, value, _f(0.0))
                T.buffer_store(self.b[out], value, [0, b, j] if s.layout == 0 else [b, 0, j])


def recurrent_fp32(spec: RecurrentSpec) -> tvm.tirx.PrimFunc:
    """The PrimFunc of one layer direction (see the module docstring for its parameters).

    Attributes: ``global_symbol`` = `RecurrentSpec.name`, ``op_pattern`` 8 (opaque: FuseOps leaves the
    call alone), ``tirx.noalias``, and `SPEC_ATTR`: the spec as JSON, so that a pass can recognise the
    site and read its parameter layout without parsing names.
    """
    with IRBuilder() as ib:
        with T.prim_func():
            T.func_name(spec.name)
            T.func_attr(
                {
                    "global_symbol": spec.name,
                    "tirx.noalias": True,
                    "op_pattern": 8,
                    SPEC_ATTR: json.dumps(dataclasses.asdict(spec)),
                }
            )
            bufs = {}
            for name, shape in spec.input_shapes().items():
                dtype = spec.seq_lens if name == "lens" else F32
                bufs[name] = T.arg(name, T.buffer(shape, dtype, buffer_name=name))
            outs = ["y", "h_n"] + (["c_n"] if spec.cell == "lstm" else [])
            for name, shape in zip(outs, spec.output_shapes(), strict=True):
                bufs[name] = T.arg(name, T.buffer(shape, F32, buffer_name=name))
            b, h, gh = spec.batch, spec.hidden, spec.gates * spec.hidden
            bufs["proj"] = T.decl_buffer((spec.seq_len, b, gh), F32)
            bufs["acc"] = T.decl_buffer((b, gh), F32)
            bufs["h"] = T.decl_buffer((b, h), F32)
            if spec.cell == "lstm":
                bufs["c"] = T.decl_buffer((b, h), F32)
            if spec.cell == "gru":
                bufs["tmp"] = T.decl_buffer((b, h), F32)
            builder = _Builder(spec, bufs)
            builder.projection()
            builder.init_states()
            builder.loop()
            builder.finals()
    return ib.get()
