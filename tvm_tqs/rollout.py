"""The compiled rollout: a model's whole autoregressive rollout inside one Relax function.

The contract it follows (`RolloutSpec`: layouts, point selection, auxiliary inputs and their policies)
lives in `tvm_tqs.contract`; this module writes it as Relax and runs it. TVM is imported inside the
functions: benchmarks/zoo/build.py reads and writes `RolloutSpec` through this module without TVM.
"""

from __future__ import annotations

import json

import numpy as np

from .contract import METADATA_KEY, AuxInput, RolloutSpec, infer_rollout_spec  # noqa: F401 (re-exported)
from .errors import RolloutSpecError

ROLLOUT_FUNC = "rollout"
ROLLOUT_METHODS = ("auto", "unrolled", "recursive")
# With "auto", rollouts of at most this many model calls are unrolled; longer ones recurse. Unrolling
# costs a few bindings per call (the model itself is one function called each time), so the limit only
# keeps the Relax function short.
UNROLL_MAX_CALLS = 64
# Module attributes `tvm_tqs.load` writes: the ONNX names of main's inputs and outputs, in order (TVM's
# importer renames inputs such as "input.1" to "input_1", so parameters are matched by position).
INPUT_NAMES_ATTR = "tvm_tqs.inputs"
OUTPUT_NAMES_ATTR = "tvm_tqs.outputs"


def io_names(mod) -> tuple[list[str], list[str]]:
    """ONNX names of `main`'s inputs and outputs (parameter / field order); the Relax names without them.

    Parameters
    ----------
    mod : tvm.IRModule
        A module loaded by `tvm_tqs.load`, or one built by hand (no name attributes).

    Returns
    -------
    (input names, output names)
    """
    attrs = mod.attrs or {}
    main = mod["main"]
    if INPUT_NAMES_ATTR in attrs:
        inputs = json.loads(str(attrs[INPUT_NAMES_ATTR]))
        outputs = json.loads(str(attrs[OUTPUT_NAMES_ATTR]))
        return inputs, outputs
    n_out = len(main.ret_ty.fields) if hasattr(main.ret_ty, "fields") else 1
    # A module built by hand: its own parameter names, without the perturbation inputs (tqs_*).
    return [p.name for p in main.params if not p.name.startswith("tqs_")], [
        f"output{i}" for i in range(n_out)
    ]


def _shape(ty) -> tuple[int, ...]:
    return tuple(int(d) for d in ty.shape.values)


class _MainIO:
    """Where the window, the auxiliary inputs and the pass-through inputs sit among `main`'s parameters."""

    def __init__(self, mod, spec: RolloutSpec):
        from tvm import relax

        main = mod["main"]
        names, outputs = io_names(mod)
        params = list(main.params)
        self.model_params = params[: len(names)]
        self.extra_params = params[len(names) :]  # e.g. the perturbation inputs of passes.perturb
        self.names = names
        by_name = dict(zip(names, self.model_params, strict=True))
        if spec.window_input not in by_name:
            raise RolloutSpecError(
                f"the rollout contract's window input '{spec.window_input}' is not an input of the model "
                f"(inputs: {names})"
            )
        window = by_name[spec.window_input]
        shape = _shape(window.ty)
        self.batch = shape[0]
        if shape != spec.model_window_shape(self.batch):
            raise RolloutSpecError(
                f"the model's input '{spec.window_input}' has shape {list(shape)}, but the rollout spec "
                f"expects window input '{spec.window_input}' of shape "
                f"{list(spec.model_window_shape(self.batch))} (layout {spec.window_layout})"
            )
        self.window_dtype = str(window.ty.dtype)
        missing = [n for n in names if n != spec.window_input and n not in {a.name for a in spec.aux_inputs}]
        if missing:
            raise RolloutSpecError(
                f"the model's inputs {missing} have no policy in the rollout contract: add them to aux_inputs"
            )
        self.aux_types = {a.name: by_name[a.name].ty for a in spec.aux_inputs}
        ret = main.ret_ty
        if spec.forecast_output not in outputs:
            raise RolloutSpecError(
                f"the rollout contract's forecast output '{spec.forecast_output}' is not an output of the "
                f"model (outputs: {outputs})"
            )
        self.forecast_index = (
            outputs.index(spec.forecast_output) if isinstance(ret, relax.TupleType) else None
        )
        self.forecast_ty = ret.fields[self.forecast_index] if self.forecast_index is not None else ret

    def signatures(self) -> dict:
        return {name: (_shape(ty), str(ty.dtype)) for name, ty in self.aux_types.items()}


class _Emitter:
    """Emits one rollout step as Relax: call main, read the forecast, advance the window and aux inputs."""

    def __init__(self, bb, spec: RolloutSpec, io: _MainIO, main_gv):
        self.bb, self.spec, self.io, self.main_gv = bb, spec, io, main_gv

    def call(self, window, aux: dict, extras: list):
        """``main`` on the canonical window -> the canonical forecast ``[B, H, targets]`` (float32)."""
        from tvm import relax
        from tvm.relax import op

        bb, spec = self.bb, self.spec
        x = window
        if spec.window_layout == "BCL":
            x = bb.emit(op.permute_dims(x, [0, 2, 1]))
        elif spec.window_layout == "BL":
            x = bb.emit(op.reshape(x, (self.io.batch, spec.lookback)))
        if self.io.window_dtype != "float32":
            x = bb.emit(op.astype(x, self.io.window_dtype))
        by_name = {spec.window_input: x, **aux}
        y = bb.emit(relax.Call(self.main_gv, [by_name[n] for n in self.io.names] + list(extras)))
        if self.io.forecast_index is not None:
            y = bb.emit(relax.TupleGetItem(y, self.io.forecast_index))
        shape = list(_shape(self.io.forecast_ty))
        if spec.forecast_select is not None:
            axis, index = spec.forecast_select
            y = bb.emit(op.strided_slice(y, [axis], [index], [index + 1]))
            shape.pop(axis)
            y = bb.emit(op.reshape(y, shape))
        if spec.forecast_layout == "BCH":
            y = bb.emit(op.permute_dims(y, [0, 2, 1]))
        elif spec.forecast_layout == "BH":
            y = bb.emit(op.expand_dims(y, 2))
        if str(self.io.forecast_ty.dtype) != "float32":
            y = bb.emit(op.astype(y, "float32"))
        return y

    def first_rows(self, forecast):
        """The first `stride` rows of a canonical forecast: what one call adds to the rollout."""
        from tvm.relax import op

        s = self.spec.stride
        if self.spec.horizon == s:
            return forecast
        return self.bb.emit(op.strided_slice(forecast, [1], [0], [s]))

    def rows(self, stream, axis: int, i):
        """Rows ``[i * stride, (i + 1) * stride)`` of `stream` along `axis`; `i` is an int or an int64 var."""
        from tvm import relax
        from tvm.relax import op

        s = self.spec.stride
        if isinstance(i, int):
            return self.bb.emit(op.strided_slice(stream, [axis], [i * s], [(i + 1) * s]))
        index = op.add(
            op.multiply(i, relax.const(s, "int64")), relax.const(np.arange(s, dtype=np.int64), "int64")
        )
        return self.bb.emit(op.take(stream, index, axis=axis))

    def shift_window(self, window, piece, exog_rows):
        """The next canonical window: the oldest `stride` rows out, `stride` rows built from `piece` in."""
        from tvm import relax
        from tvm.relax import op

        bb, spec, batch = self.bb, self.spec, self.io.batch
        s, L, C = spec.stride, spec.lookback, spec.channels
        targets = list(spec.target_channels)
        if targets == list(range(C)):
            rows = piece  # every channel predicted, in window order
        else:
            held = bb.emit(op.broadcast_to(op.strided_slice(window, [1], [L - 1], [L]), (batch, s, C)))
            sources = [piece, held] + ([exog_rows] if exog_rows is not None else [])
            exo = list(spec.exogenous_channels)
            index = []
            for c in range(C):
                if c in targets:
                    index.append(targets.index(c))
                elif exog_rows is not None:
                    index.append(len(targets) + C + exo.index(c))
                else:
                    index.append(len(targets) + c)  # hold the last observed value
            source = bb.emit(op.concat(sources, axis=2))
            rows = bb.emit(op.take(source, relax.const(np.array(index, dtype=np.int64), "int64"), axis=2))
        if s == L:
            return rows
        kept = bb.emit(op.strided_slice(window, [1], [s], [L]))
        return bb.emit(op.concat([kept, rows], axis=1))

    def advance_aux(self, a: AuxInput, x, future_rows):
        """Auxiliary input `a` one call later (`AuxInput.advance` written as Relax)."""
        from tvm import relax
        from tvm.relax import op

        if a.policy == "constant":
            return x
        bb, s = self.bb, self.spec.stride
        ty = self.io.aux_types[a.name]
        shape, dtype, ax = list(_shape(ty)), str(ty.dtype), a.time_axis
        n = shape[ax]
        r = min(s, n)
        new_shape = list(shape)
        new_shape[ax] = r
        if a.policy == "observed_mask":
            value = np.array(a.fill).astype(dtype)
            new = bb.emit(op.full(new_shape, relax.const(value, dtype), dtype))
        elif a.policy == "time":
            # In float64 whatever the input's dtype, as the numpy reference: no wrap-around in small ints,
            # no truncated fractional step, the same rounding at the period boundary.
            f64 = "float64"
            last = bb.emit(op.astype(op.strided_slice(x, [ax], [n - 1], [n]), f64))
            if a.step is not None:
                delta = relax.const(np.array(a.step, np.float64), f64)
            else:
                prev = op.astype(op.strided_slice(x, [ax], [n - 2], [n - 1]), f64)
                delta = bb.emit(op.subtract(last, prev))
            view = [1] * len(shape)
            view[ax] = r
            mult = np.arange(s - r + 1, s + 1, dtype=np.float64).reshape(view)
            new = bb.emit(op.add(last, op.multiply(delta, relax.const(mult, f64))))
            if a.period is not None:
                period = relax.const(np.array(a.period, np.float64), f64)
                new = bb.emit(op.subtract(new, op.multiply(op.floor(op.divide(new, period)), period)))
            new = bb.emit(op.astype(new, dtype))
        else:
            new = future_rows if r == s else bb.emit(op.strided_slice(future_rows, [ax], [s - r], [s]))
        if s >= n:
            return new
        kept = bb.emit(op.strided_slice(x, [ax], [s], [n]))
        return bb.emit(op.concat([kept, new], axis=ax))

    def advance(self, i, window, aux: dict, piece, exog, futures: dict):
        """(next window, next aux) after call `i` produced `piece` (the first `stride` forecast rows)."""
        exog_rows = self.rows(exog, 1, i) if exog is not None else None
        window = self.shift_window(window, piece, exog_rows)
        out = {}
        for a in self.spec.aux_inputs:
            rows = self.rows(futures[a.name], a.time_axis, i) if a.policy == "supplied" else None
            out[a.name] = self.advance_aux(a, aux[a.name], rows)
        return window, out


def _future_type(a: AuxInput, ty, total: int):
    from tvm import relax

    shape = list(_shape(ty))
    shape[a.time_axis] = total
    return relax.TensorType(shape, str(ty.dtype))


def _fresh(vars_) -> list:
    """New Relax vars like `vars_`: each function binds its own parameters."""
    from tvm import relax

    return [relax.Var(v.name, v.ty) for v in vars_]


class _RolloutParams:
    """The parameters of ``rollout`` (see `rollout_module`) as Relax vars, and the type of its result."""

    def __init__(self, spec: RolloutSpec, io: _MainIO, total: int):
        from tvm import relax

        batch, n_exo = io.batch, len(spec.exogenous_channels)
        window_ty = relax.TensorType((batch, spec.lookback, spec.channels), "float32")
        self.window = relax.Var("window", window_ty)
        self.aux = {a.name: relax.Var(a.name, io.aux_types[a.name]) for a in spec.aux_inputs}
        supplied = spec.exogenous == "supplied" and n_exo > 0
        self.exog = (
            relax.Var("exog", relax.TensorType((batch, total, n_exo), "float32")) if supplied else None
        )
        self.futures = {
            a.name: relax.Var(f"{a.name}_future", _future_type(a, io.aux_types[a.name], total))
            for a in spec.supplied_aux
        }
        self.extras = [relax.Var(p.name, p.ty) for p in io.extra_params]
        self.out_shape = (batch, total, len(spec.target_channels))
        self.out_ty = relax.TensorType(self.out_shape, "float32")

    @property
    def static(self) -> list:
        """The inputs every call reads as given: exog, the aux futures, `main`'s extra inputs."""
        return ([self.exog] if self.exog is not None else []) + [*self.futures.values(), *self.extras]

    @property
    def inputs(self) -> list:
        return [self.window, *self.aux.values(), *self.static]


def rollout_module(mod, spec: RolloutSpec, steps: int, method: str = "auto"):
    """Add a ``rollout`` function to `mod` that runs the whole `steps`-step rollout in one call.

    ``rollout(window[B, L, C], *aux, [exog[B, calls * stride, n_exogenous]], *aux_future, *extra)
    -> [B, steps, len(target_channels)]`` calls ``main`` ``calls(steps)`` times on the window in the
    model's layout and the auxiliary inputs, feeding the first ``stride`` forecast rows back and advancing
    every auxiliary input exactly as `RolloutSpec.rollout` does. ``aux`` are the initial values of
    ``spec.aux_inputs`` (in that order), ``exog`` is present with exogenous "supplied", ``aux_future`` holds
    the future of each supplied auxiliary input (``calls * stride`` steps on its time axis), and ``extra``
    are `main`'s inputs after the model's own (for example the perturbation inputs of
    `tvm_tqs.passes.perturb`), passed unchanged to every call.

    Parameters
    ----------
    mod : tvm.IRModule
        A module loaded by `tvm_tqs.load` (its ``main`` is the model, possibly with extra trailing inputs).
    spec : RolloutSpec
        The model's rollout contract.
    steps : int
        Time steps to forecast (>= 1).
    method : {"auto", "unrolled", "recursive"}
        "unrolled" writes one call of ``main`` per model call (straight-line code); "recursive" writes a
        function that makes one call and then calls itself (``if`` + self-call; Relax has no loop), so the
        function stays the same size for any horizon; "auto" unrolls up to `UNROLL_MAX_CALLS` calls.
    """
    from tvm import relax

    if steps < 1:
        raise RolloutSpecError(f"steps must be >= 1, got {steps}")
    if method not in ROLLOUT_METHODS:
        raise RolloutSpecError(f"method must be one of {ROLLOUT_METHODS}, got {method!r}")
    n = spec.calls(steps)
    if method == "auto":
        method = "unrolled" if n <= UNROLL_MAX_CALLS else "recursive"
    main_gv = mod.get_global_var("main")
    io = _MainIO(mod, spec)
    bb = relax.BlockBuilder(mod)
    emit = _Emitter(bb, spec, io, main_gv)
    params = _RolloutParams(spec, io, n * spec.stride)
    if method == "unrolled":
        _write_unrolled(emit, params, n, steps)
    else:
        _write_recursive(emit, params, n, steps)
    return bb.get()


def _write_unrolled(emit: _Emitter, params: _RolloutParams, n: int, steps: int) -> None:
    """``rollout`` as straight-line code: `n` calls of ``main``, their first rows concatenated."""
    from tvm.relax import op

    bb, total, inputs = emit.bb, n * emit.spec.stride, params.inputs
    with bb.function(ROLLOUT_FUNC, inputs, attrs={"num_input": len(inputs)}):
        with bb.dataflow():
            w, state, pieces = params.window, dict(params.aux), []
            for i in range(n):
                piece = emit.first_rows(emit.call(w, state, params.extras))
                pieces.append(piece)
                if i < n - 1:
                    w, state = emit.advance(i, w, state, piece, params.exog, params.futures)
            out = bb.emit(op.concat(pieces, axis=1)) if n > 1 else pieces[0]
            if total != steps:
                out = bb.emit(op.strided_slice(out, [1], [0], [steps]))
            out = bb.emit_output(out)
        bb.emit_func_output(out)


def _write_recursive(emit: _Emitter, params: _RolloutParams, n: int, steps: int) -> None:
    """``rollout`` as step(i, acc, window, *aux, *static) = i < n ? body(...) : acc, where body makes call
    i, writes its rows into acc and calls step(i + 1, ...): Relax has no loop construct."""
    from tvm import relax
    from tvm.relax import op

    bb, s, total, out_ty = emit.bb, emit.spec.stride, n * emit.spec.stride, params.out_ty
    aux, futures, static = params.aux, params.futures, params.static
    supplied = params.exog is not None
    i_ty = relax.TensorType((), "int64")
    call_of_row = np.repeat(np.arange(n, dtype=np.int64), s)

    step_params = [
        relax.Var("i", i_ty),
        relax.Var("acc", out_ty),
        *_fresh([params.window, *aux.values(), *static]),
    ]
    # Declared before its body exists, so that rollout_body can call it; update_func fills it in below.
    step_gv = bb.add_func(relax.Function(step_params, step_params[1], out_ty), "rollout_step")

    body_params = _fresh(step_params)
    n_aux = len(aux)
    with bb.function("rollout_body", body_params, private=True):
        i, acc, w = body_params[:3]
        b_aux = dict(zip(aux, body_params[3 : 3 + n_aux], strict=True))
        b_static = body_params[3 + n_aux :]
        b_exog = b_static[0] if supplied else None
        b_futures = dict(zip(futures, b_static[int(supplied) : int(supplied) + len(futures)], strict=True))
        b_extras = b_static[int(supplied) + len(futures) :]
        with bb.dataflow():
            piece = emit.first_rows(emit.call(w, b_aux, b_extras))
            w_next, aux_next = emit.advance(i, w, b_aux, piece, b_exog, b_futures)
            tiled = bb.emit(op.tile(piece, (1, n, 1)))
            here = bb.emit(op.reshape(op.equal(relax.const(call_of_row, "int64"), i), (1, total, 1)))
            acc_next = bb.emit(op.where(here, tiled, acc))
            i_next = bb.emit(op.add(i, relax.const(1, "int64")))
            args = [i_next, acc_next, w_next, *aux_next.values(), *b_static]
            args = [bb.emit_output(a) for a in args]
        bb.emit_func_output(bb.emit(relax.Call(step_gv, args)))
    body_gv = bb.get().get_global_var("rollout_body")

    cond = bb.normalize(op.less(step_params[0], relax.const(n, "int64")))
    then_var, else_var = relax.Var("r", out_ty), relax.Var("r", out_ty)
    then_seq = relax.SeqExpr(
        [relax.BindingBlock([relax.VarBinding(then_var, relax.Call(body_gv, list(step_params)))])], then_var
    )
    else_seq = relax.SeqExpr([relax.BindingBlock([relax.VarBinding(else_var, step_params[1])])], else_var)
    c_var, r_var = relax.Var("c", relax.TensorType((), "bool")), relax.Var("r", out_ty)
    bindings = [relax.VarBinding(c_var, cond), relax.VarBinding(r_var, relax.If(c_var, then_seq, else_seq))]
    bb.update_func(
        step_gv, relax.Function(step_params, relax.SeqExpr([relax.BindingBlock(bindings)], r_var), out_ty)
    )

    inputs = params.inputs
    with bb.function(ROLLOUT_FUNC, inputs, attrs={"num_input": len(inputs)}):
        acc0 = bb.emit(op.zeros(params.out_shape, "float32"))
        out = bb.emit(
            relax.Call(step_gv, [relax.const(0, "int64"), acc0, params.window, *aux.values(), *static])
        )
        if total != steps:
            out = bb.emit(op.strided_slice(out, [1], [0], [steps]))
        bb.emit_func_output(out)


class CompiledRollout:
    """A built rollout: ``run(context, *extra, exog=, aux=, aux_future=) -> [B, steps, targets]`` here.

    Built by `compile_rollout`; `batch` rows run at once (the module is static-shape).
    """

    def __init__(self, executable, spec: RolloutSpec, steps: int, io: _MainIO, method: str):
        import tvm
        from tvm import relax

        self.spec, self.steps, self.batch, self.method = spec, steps, io.batch, method
        self.extra = [(p.name, _shape(p.ty), str(p.ty.dtype)) for p in io.extra_params]
        self.signatures = io.signatures()  # auxiliary inputs: name -> (shape, dtype)
        self.device = tvm.cpu()
        self.executable = executable
        self.vm = relax.VirtualMachine(executable, self.device)
        self._fn = self.vm[ROLLOUT_FUNC]
        self._defaults = None

    def tensor(self, array):
        """Move a numpy array to the device once (inputs reused across runs)."""
        import tvm

        return tvm.runtime.tensor(np.ascontiguousarray(array), self.device)

    def defaults(self):
        """The data-free auxiliary inputs and supplied futures at this batch, as device tensors."""
        if self._defaults is None:
            total = self.spec.calls(self.steps) * self.spec.stride
            aux = self.spec.default_aux(self.signatures, self.batch)
            fut = self.spec.default_future(self.signatures, self.batch, total)
            self._defaults = (
                {k: self.tensor(v) for k, v in aux.items()},
                {k: self.tensor(v) for k, v in fut.items()},
            )
        return self._defaults

    def _aux_args(self, aux, aux_future) -> list:
        import tvm

        default_aux, default_fut = self.defaults()
        total = self.spec.calls(self.steps) * self.spec.stride
        args = []
        for a in self.spec.aux_inputs:
            value = (aux or {}).get(a.name, default_aux[a.name])
            shape, dtype = self.signatures[a.name]
            if not isinstance(value, tvm.runtime.Tensor):
                value = np.asarray(value)
                if value.shape != shape:
                    raise RolloutSpecError(
                        f"aux['{a.name}'] must have shape {list(shape)}; got {list(value.shape)}"
                    )
                value = self.tensor(value.astype(dtype))
            args.append(value)
        futures = []
        for a in self.spec.supplied_aux:
            value = (aux_future or {}).get(a.name, default_fut[a.name])
            if not isinstance(value, tvm.runtime.Tensor):
                rows = _future_rows(
                    np.asarray(value), a.time_axis, total, self.spec, f"aux_future['{a.name}']"
                )
                value = self.tensor(rows.astype(self.signatures[a.name][1]))
            futures.append(value)
        return args, futures

    def __call__(self, context, *extra, exog=None, aux=None, aux_future=None):
        import tvm

        if not isinstance(context, tvm.runtime.Tensor):
            self.spec.check_context(context)
            if np.shape(context)[0] != self.batch:
                raise RolloutSpecError(
                    f"context for input '{self.spec.window_input}' has batch {np.shape(context)[0]}; this "
                    f"compiled rollout runs batch {self.batch}"
                )
            context = self.tensor(np.asarray(context, dtype=np.float32))
        aux_args, futures = self._aux_args(aux, aux_future)
        args = [context, *aux_args]
        if self.spec.exogenous == "supplied" and self.spec.exogenous_channels:
            if exog is None:
                raise RolloutSpecError("exogenous='supplied' needs the future exogenous values (exog=...)")
            total = self.spec.calls(self.steps) * self.spec.stride
            exog = _future_rows(np.asarray(exog, dtype=np.float32), 1, total, self.spec, "exog")
            if exog.shape != (self.batch, total, len(self.spec.exogenous_channels)):
                raise RolloutSpecError(
                    f"exog must have shape [{self.batch}, >= {total}, {len(self.spec.exogenous_channels)}]; "
                    f"got {list(exog.shape)}"
                )
            args.append(self.tensor(exog))
        args += futures
        if len(extra) != len(self.extra):
            raise RolloutSpecError(
                f"this rollout takes {len(self.extra)} inputs after the window "
                f"({[name for name, _, _ in self.extra]}); got {len(extra)}"
            )
        args += [a if isinstance(a, tvm.runtime.Tensor) else self.tensor(a) for a in extra]
        return self._fn(*args).numpy()


def _future_rows(value: np.ndarray, axis: int, total: int, spec: RolloutSpec, what: str) -> np.ndarray:
    """`total` steps of a future along `axis`: the steps the rollout reads ((calls - 1) * stride) are
    required; the last call's, never read, are padded with the last given step."""
    need = total - spec.stride
    have = value.shape[axis] if value.ndim > axis else 0
    if have < need or have == 0:
        raise RolloutSpecError(f"{what} must hold >= {need} future steps on axis {axis}; got {have}")
    index = np.minimum(np.arange(total), have - 1)
    return np.ascontiguousarray(np.take(value, index, axis=axis))


def compile_rollout(
    mod,
    spec: RolloutSpec,
    steps: int,
    *,
    method: str = "auto",
    target: str = "x86",
    loop_order: bool = True,
) -> CompiledRollout:
    """Build `mod` (fused, optionally perturbed) with a one-function rollout of `steps` time steps.

    Parameters
    ----------
    mod : tvm.IRModule
        Fused module loaded by `tvm_tqs.load`; ``main(*model_inputs, *extra)`` returns the forecast.
    spec : RolloutSpec
        The model's rollout contract (`tvm_tqs.frontend.load.rollout_spec_of`).
    steps : int
        Time steps per rollout.
    method : {"auto", "unrolled", "recursive"}
        See `rollout_module`.
    target : str
        A registered host target (the rollout runs here).
    loop_order : bool
        Apply `tvm_tqs.passes.reduction_loop_order.ReductionLoopOrder` (vectorizable matmul loops, same
        results bit for bit) before building.
    """
    from tvm_tqs.passes.reduction_loop_order import ReductionLoopOrder
    from tvm_tqs.runtime import build

    n = spec.calls(steps)
    resolved = method if method != "auto" else ("unrolled" if n <= UNROLL_MAX_CALLS else "recursive")
    full = rollout_module(mod, spec, steps, resolved)
    if loop_order:
        full = ReductionLoopOrder()(full)
    return CompiledRollout(build(full, target), spec, steps, _MainIO(mod, spec), resolved)
