"""The rollout contract: how a forecaster's predictions feed back into its inputs (docs/rollout.md).

An autoregressive rollout treats the forecaster as a discrete-time dynamical system on its inputs:
``state_{n+1} = advance(state_n, model(state_n))``. TQS, evaluation and the compiled rollout all read
the same `RolloutSpec`, so they agree on what one step of that system is.

The state is the history window, kept canonically as ``[batch, lookback, channels]`` whatever the model's
own layout (``window_layout``: ``BLC``, channels-first ``BCL`` or univariate ``BL``), plus the model's
auxiliary inputs, each advanced by its policy. One step:

1. run the model on the window (in its layout) and the auxiliary inputs;
2. read the forecast output: pick the point forecast on an extra axis (``forecast_select``, e.g. the median
   of a quantile head), then bring it to ``[batch, horizon, len(target_channels)]`` from
   ``forecast_layout`` (``BHC``, ``BCH`` or ``BH``);
3. keep the first ``stride`` forecast rows and build ``stride`` new window rows: target channels take the
   forecast, exogenous channels are held (``exogenous="hold"``) or supplied by the caller;
4. drop the oldest ``stride`` window rows and append the new ones; advance every auxiliary input along its
   time axis by ``stride`` (observed-mask: new steps observed; time: extended by its step; supplied:
   the caller's future values; constant: unchanged).

A model carries its contract as JSON in the ONNX metadata property ``tvm_tqs.rollout`` (version 1, the
original single-window form, still reads); it can also be passed as ``rollout=`` (Python) or
``--rollout FILE`` (CLI), or inferred for the common cases (`infer_rollout_spec`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import RolloutSpecError

METADATA_KEY = "tvm_tqs.rollout"
VERSION = 2
WINDOW_LAYOUTS = ("BLC", "BCL", "BL")
FORECAST_LAYOUTS = ("BHC", "BCH", "BH")
POLICIES = ("observed_mask", "constant", "time", "supplied")
_SHIFTED = ("observed_mask", "time", "supplied")  # policies that move along a time axis
_DEFAULT_VALUE = {"observed_mask": 1.0, "constant": 0.0, "supplied": 0.0, "time": 0.0}

# (shape, dtype) of model inputs / outputs, batch included, as the model declares them.
TensorSig = tuple[tuple[int, ...], str]


@dataclass(frozen=True)
class AuxInput:
    """A model input besides the window, and what it does over the rollout.

    Parameters
    ----------
    name : str
        The model input.
    policy : {"observed_mask", "constant", "time", "supplied"}
        ``observed_mask``: history as given, every fed-back step marked observed (``value``, default 1 /
        true). ``constant``: held (static covariates); data-free contexts fill it with ``value`` (default
        0). ``time``: a time feature advanced by the stride: new steps continue the last value by ``step``
        per time step (default: the difference of its last two steps), modulo ``period`` when given;
        data-free contexts start it at ``start`` (default 0) with step ``step`` (default 1). ``supplied``:
        the caller gives its future values (data-free contexts: ``value``, default 0).
    time_axis : int, optional
        Axis of the input that runs along time (required for every policy but ``constant``).
    """

    name: str
    policy: Literal["observed_mask", "constant", "time", "supplied"]
    time_axis: int | None = None
    value: float | None = None
    step: float | None = None
    period: float | None = None
    start: float | None = None

    def validate(self) -> None:
        def bad(msg: str):
            raise RolloutSpecError(f"auxiliary input '{self.name}': {msg}")

        if self.policy not in POLICIES:
            bad(f"policy must be one of {', '.join(POLICIES)} (got {self.policy!r})")
        if self.policy in _SHIFTED and (self.time_axis is None or self.time_axis < 1):
            bad(
                f"policy '{self.policy}' needs time_axis >= 1 (the axis that runs along time; 0 is the batch)"
            )
        if self.period is not None and not self.period > 0:
            bad(f"period must be > 0 (got {self.period})")
        if self.policy != "time" and (self.step, self.period, self.start) != (None, None, None):
            bad("step / period / start belong to policy 'time'")

    @property
    def fill(self) -> float:
        return _DEFAULT_VALUE[self.policy] if self.value is None else float(self.value)

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: Mapping) -> AuxInput:
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, Mapping) or "name" not in d or "policy" not in d:
            raise RolloutSpecError(f"an aux_inputs entry needs 'name' and 'policy'; got {d!r}")
        unknown = set(d) - known
        if unknown:
            raise RolloutSpecError(
                f"auxiliary input '{d['name']}' has unknown fields {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**d)

    # -- numpy reference ------------------------------------------------------------------------------
    def initial(self, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        """The data-free value of this input (masks observed, constants at their value, time counting)."""
        if self.policy != "time":
            return np.full(shape, self.fill, dtype=np.float64).astype(dtype)
        n = shape[self.time_axis]
        view = [1] * len(shape)
        view[self.time_axis] = n
        start = 0.0 if self.start is None else self.start
        step = 1.0 if self.step is None else self.step
        t = start + step * np.arange(n, dtype=np.float64)
        if self.period is not None:
            t = t - np.floor(t / self.period) * self.period
        return np.broadcast_to(t.reshape(view), shape).astype(dtype)

    def advance(self, x: np.ndarray, stride: int, future_rows: np.ndarray | None = None) -> np.ndarray:
        """This input one call later: `stride` steps shifted out along the time axis, new ones in."""
        if self.policy == "constant":
            return x
        a, n = self.time_axis, x.shape[self.time_axis]
        r = min(stride, n)  # the new steps still inside the input
        kept = np.take(x, np.arange(stride, n), axis=a)
        if self.policy == "observed_mask":
            shape = list(x.shape)
            shape[a] = r
            new = np.full(shape, self.fill, dtype=np.float64).astype(x.dtype)
        elif self.policy == "time":
            last = np.take(x, [n - 1], axis=a).astype(np.float64)
            if self.step is None and n < 2:
                raise RolloutSpecError(f"time input '{self.name}' has one step along axis {a}: give its step")
            delta = (
                self.step if self.step is not None else last - np.take(x, [n - 2], axis=a).astype(np.float64)
            )
            view = [1] * x.ndim
            view[a] = r
            mult = np.arange(stride - r + 1, stride + 1, dtype=np.float64).reshape(view)
            new = last + delta * mult
            if self.period is not None:  # the compiled rollout's formula, to the last bit
                new = new - np.floor(new / self.period) * self.period
            new = new.astype(x.dtype)
        else:
            if future_rows is None:
                raise RolloutSpecError(f"auxiliary input '{self.name}' is supplied: give its future values")
            new = np.take(future_rows, np.arange(stride - r, stride), axis=a).astype(x.dtype)
        return np.concatenate([kept, new], axis=a)


def _tuple_or_none(value, kind=float):
    return None if value is None else tuple(kind(v) for v in value)


@dataclass(frozen=True)
class RolloutSpec:
    """How one autoregressive rollout step runs (see the module docstring).

    Parameters
    ----------
    window_input : str
        The model input that holds the history window.
    forecast_output : str
        The model output that holds the forecast.
    lookback, horizon : int
        Window length L; steps the model predicts per call H.
    channels : int
        Channels in the window (1 for a univariate ``BL`` window).
    target_channels : tuple of int
        Window channels the forecast predicts, in forecast-channel order.
    stride : int
        Forecast steps fed back per call (1 <= stride <= min(horizon, lookback)).
    exogenous : {"hold", "supplied"}
        What non-target window channels do over the rollout.
    channel_mean, channel_std : tuple of float, optional
        Typical per-channel level and spread of the model's windows; data-free contexts match them.
    window_layout : {"BLC", "BCL", "BL"}
    forecast_layout : {"BHC", "BCH", "BH"}
        Layout of the forecast after `forecast_select`.
    forecast_select : (axis, index), optional
        Point forecast on an extra axis of the raw output (a quantile or distribution-parameter axis):
        the output is indexed there first.
    aux_inputs : tuple of AuxInput
        Every other model input, with its policy.
    """

    window_input: str
    forecast_output: str
    lookback: int
    horizon: int
    channels: int
    target_channels: tuple[int, ...]
    stride: int
    exogenous: Literal["hold", "supplied"] = "hold"
    channel_mean: tuple[float, ...] | None = None
    channel_std: tuple[float, ...] | None = None
    window_layout: str = "BLC"
    forecast_layout: str = "BHC"
    forecast_select: tuple[int, int] | None = None
    aux_inputs: tuple[AuxInput, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "target_channels", tuple(int(c) for c in self.target_channels))
        object.__setattr__(self, "channel_mean", _tuple_or_none(self.channel_mean))
        object.__setattr__(self, "channel_std", _tuple_or_none(self.channel_std))
        select = self.forecast_select
        if isinstance(select, Mapping):
            try:
                select = (select["axis"], select["index"])
            except KeyError:
                raise RolloutSpecError("forecast_select must be {'axis': A, 'index': I}") from None
        object.__setattr__(self, "forecast_select", _tuple_or_none(select, int))
        aux = tuple(a if isinstance(a, AuxInput) else AuxInput.from_dict(a) for a in self.aux_inputs)
        object.__setattr__(self, "aux_inputs", aux)
        self.validate()

    # -- invariants --------------------------------------------------------------------------------
    def validate(self) -> None:
        def bad(msg: str):
            raise RolloutSpecError(f"invalid rollout spec for input '{self.window_input}': {msg}")

        if self.lookback < 1 or self.horizon < 1 or self.channels < 1:
            bad(
                f"lookback, horizon and channels must be >= 1 (got {self.lookback}, {self.horizon}, {self.channels})"
            )
        if not 1 <= self.stride <= self.horizon:
            bad(f"stride must be in [1, horizon={self.horizon}] (got {self.stride})")
        if self.stride > self.lookback:
            bad(f"stride {self.stride} exceeds lookback {self.lookback}: set stride <= {self.lookback}")
        if not self.target_channels:
            bad("target_channels is empty")
        if len(set(self.target_channels)) != len(self.target_channels):
            bad(f"target_channels has duplicates: {self.target_channels}")
        if any(not 0 <= c < self.channels for c in self.target_channels):
            bad(f"target_channels {self.target_channels} out of range for {self.channels} channels")
        if self.exogenous not in ("hold", "supplied"):
            bad(f"exogenous must be 'hold' or 'supplied' (got {self.exogenous!r})")
        for name in ("channel_mean", "channel_std"):
            value = getattr(self, name)
            if value is not None and len(value) != self.channels:
                bad(f"{name} has {len(value)} entries for {self.channels} channels")
        if self.channel_std is not None and any(s <= 0 for s in self.channel_std):
            bad("channel_std entries must be > 0")
        if self.window_layout not in WINDOW_LAYOUTS:
            bad(f"window_layout must be one of {', '.join(WINDOW_LAYOUTS)} (got {self.window_layout!r})")
        if self.forecast_layout not in FORECAST_LAYOUTS:
            bad(
                f"forecast_layout must be one of {', '.join(FORECAST_LAYOUTS)} (got {self.forecast_layout!r})"
            )
        if self.window_layout == "BL" and self.channels != 1:
            bad(f"window_layout 'BL' (univariate) needs channels == 1 (got {self.channels})")
        if self.forecast_layout == "BH" and len(self.target_channels) != 1:
            bad(f"forecast_layout 'BH' forecasts one channel; target_channels is {self.target_channels}")
        if self.forecast_select is not None and (
            len(self.forecast_select) != 2 or self.forecast_select[0] < 1
        ):
            bad(f"forecast_select must be (axis >= 1, index) (got {self.forecast_select})")
        names = [a.name for a in self.aux_inputs]
        if len(set(names)) != len(names) or self.window_input in names:
            bad(f"aux_inputs names must be distinct and differ from the window input (got {names})")
        for a in self.aux_inputs:
            a.validate()

    # -- derived -----------------------------------------------------------------------------------
    @property
    def exogenous_channels(self) -> tuple[int, ...]:
        return tuple(c for c in range(self.channels) if c not in self.target_channels)

    @property
    def window_shape(self) -> tuple[int, int]:
        """Canonical window shape without the batch dimension: ``(lookback, channels)``."""
        return (self.lookback, self.channels)

    @property
    def supplied_aux(self) -> tuple[AuxInput, ...]:
        return tuple(a for a in self.aux_inputs if a.policy == "supplied")

    def model_window_shape(self, batch: int) -> tuple[int, ...]:
        """The window input's shape in the model's own layout."""
        L, C = self.lookback, self.channels
        return {"BLC": (batch, L, C), "BCL": (batch, C, L), "BL": (batch, L)}[self.window_layout]

    def calls(self, steps: int) -> int:
        """Model calls needed to forecast `steps` time steps."""
        return math.ceil(steps / self.stride)

    # -- serialisation -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready dict; a contract that uses nothing of version 2 keeps the version-1 form."""
        d = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("window_layout", "forecast_layout", "forecast_select", "aux_inputs")
        }
        d["target_channels"] = list(self.target_channels)
        for name in ("channel_mean", "channel_std"):
            if d[name] is not None:
                d[name] = list(d[name])
        if self.is_v1:
            return d
        d["version"] = VERSION
        d["window_layout"], d["forecast_layout"] = self.window_layout, self.forecast_layout
        d["forecast_select"] = (
            None
            if self.forecast_select is None
            else {"axis": self.forecast_select[0], "index": self.forecast_select[1]}
        )
        d["aux_inputs"] = [a.to_dict() for a in self.aux_inputs]
        return d

    @property
    def is_v1(self) -> bool:
        return (self.window_layout, self.forecast_layout, self.forecast_select, self.aux_inputs) == (
            "BLC",
            "BHC",
            None,
            (),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> RolloutSpec:
        if not isinstance(d, Mapping):
            raise RolloutSpecError(f"a rollout spec is a JSON object, got {type(d).__name__}")
        d = dict(d)
        version = d.pop("version", 1)
        if version not in (1, VERSION):
            raise RolloutSpecError(f"rollout spec version {version!r} is not supported (1 or {VERSION})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise RolloutSpecError(
                f"rollout spec has unknown fields {sorted(unknown)}; known: {sorted(known | {'version'})}"
            )
        try:
            return cls(**d)
        except TypeError as err:
            raise RolloutSpecError(f"rollout spec is incomplete: {err}") from None

    @classmethod
    def from_json(cls, text: str) -> RolloutSpec:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise RolloutSpecError(f"rollout spec is not valid JSON: {err}") from None
        return cls.from_dict(d)

    @classmethod
    def from_file(cls, path) -> RolloutSpec:
        try:
            with open(path) as f:
                text = f.read()
        except OSError as err:
            raise RolloutSpecError(f"cannot read rollout spec file '{path}': {err.strerror}") from None
        except UnicodeDecodeError:
            raise RolloutSpecError(f"rollout spec file '{path}' is not a text (JSON) file") from None
        try:
            return cls.from_json(text)
        except RolloutSpecError as err:
            raise RolloutSpecError(f"rollout spec file '{path}': {err}") from None

    # -- the model's side: layouts -------------------------------------------------------------------
    def to_model_window(self, window: np.ndarray, dtype: str = "float32") -> np.ndarray:
        """Canonical ``[B, L, C]`` -> the window input in the model's layout and dtype."""
        if self.window_layout == "BCL":
            window = np.transpose(window, (0, 2, 1))
        elif self.window_layout == "BL":
            window = window[:, :, 0]
        return np.ascontiguousarray(window, dtype=dtype)

    def forecast_of(self, raw: np.ndarray) -> np.ndarray:
        """The forecast output as the model returns it -> canonical ``[B, H, len(target_channels)]``."""
        y = np.asarray(raw)
        if self.forecast_select is not None:
            axis, index = self.forecast_select
            y = np.take(y, index, axis=axis)
        if self.forecast_layout == "BCH":
            y = np.transpose(y, (0, 2, 1))
        elif self.forecast_layout == "BH":
            y = y[:, :, None]
        return np.asarray(y, dtype=np.float32)

    def default_aux(self, signatures: Mapping[str, TensorSig], batch: int) -> dict[str, np.ndarray]:
        """Data-free initial values of the auxiliary inputs at `batch` rows (see `AuxInput.initial`)."""
        out = {}
        for a in self.aux_inputs:
            shape, dtype = signatures[a.name]
            out[a.name] = a.initial((batch, *shape[1:]), dtype)
        return out

    def default_future(
        self, signatures: Mapping[str, TensorSig], batch: int, steps: int
    ) -> dict[str, np.ndarray]:
        """Data-free future values of the supplied auxiliary inputs: `steps` steps along the time axis."""
        out = {}
        for a in self.supplied_aux:
            shape, dtype = signatures[a.name]
            full = [batch, *shape[1:]]
            full[a.time_axis] = steps
            out[a.name] = np.full(full, a.fill, dtype=np.float64).astype(dtype)
        return out

    # -- numpy reference of one step and of a whole rollout -----------------------------------------
    def next_window(
        self, window: np.ndarray, forecast: np.ndarray, exog: np.ndarray | None = None
    ) -> np.ndarray:
        """Shift `stride` canonical forecast rows into the canonical `window`.

        Parameters
        ----------
        window : [B, lookback, channels]
        forecast : [B, >= stride, len(target_channels)]
        exog : [B, stride, len(exogenous_channels)], required when exogenous == "supplied"
        """
        s = self.stride
        rows = np.repeat(window[:, -1:, :], s, axis=1)
        rows[:, :, list(self.target_channels)] = forecast[:, :s, :]
        if self.exogenous == "supplied" and self.exogenous_channels:
            if exog is None:
                raise RolloutSpecError("exogenous='supplied' needs future exogenous values for every step")
            rows[:, :, list(self.exogenous_channels)] = exog
        return np.concatenate([window[:, s:, :], rows], axis=1)

    def rollout(
        self,
        model: Callable[[dict], np.ndarray],
        context: np.ndarray,
        steps: int,
        exog: np.ndarray | None = None,
        aux: Mapping[str, np.ndarray] | None = None,
        aux_future: Mapping[str, np.ndarray] | None = None,
        window_dtype: str = "float32",
    ) -> np.ndarray:
        """Roll `model` out for `steps` time steps from `context`; returns ``[B, steps, len(target_channels)]``.

        Parameters
        ----------
        model : callable
            ``model(inputs) -> forecast output`` where `inputs` maps every model input name to its array
            (the window in the model's layout, the auxiliary inputs); it returns the raw forecast output,
            or a dict of outputs holding `forecast_output`.
        context : [B, lookback, channels]
            The canonical window.
        exog : [B, >= steps, n_exogenous], optional
            Future of the exogenous window channels (exogenous == "supplied").
        aux : mapping, optional
            Initial value of every auxiliary input (the model's shapes and dtypes).
        aux_future : mapping, optional
            Future of the supplied auxiliary inputs: their time axis holds >= (calls - 1) * stride steps.
        """
        self.check_context(context)
        window = np.asarray(context, dtype=np.float32)
        state = dict(aux or {})
        missing = [a.name for a in self.aux_inputs if a.name not in state]
        if missing:
            raise RolloutSpecError(
                f"rollout needs initial values of the auxiliary inputs {missing} (aux=...)"
            )
        future = dict(aux_future or {})
        pieces = []
        n_calls = self.calls(steps)
        for n in range(n_calls):
            out = model({self.window_input: self.to_model_window(window, window_dtype), **state})
            if isinstance(out, Mapping):
                out = out[self.forecast_output]
            forecast = self.forecast_of(out)
            pieces.append(forecast[:, : self.stride])
            if n == n_calls - 1:
                break
            s = self.stride
            step_exog = None if exog is None else exog[:, n * s : (n + 1) * s]
            if step_exog is not None and step_exog.shape[1] != s:
                raise RolloutSpecError(
                    f"exog must hold >= {(n_calls - 1) * s} future steps; got {exog.shape[1]}"
                )
            window = self.next_window(window, forecast, step_exog)
            for a in self.aux_inputs:
                rows = None
                if a.policy == "supplied":
                    if a.name not in future:
                        raise RolloutSpecError(f"auxiliary input '{a.name}' is supplied: pass aux_future=...")
                    rows = np.take(future[a.name], np.arange(n * s, (n + 1) * s), axis=a.time_axis)
                state[a.name] = a.advance(state[a.name], s, rows)
        return np.concatenate(pieces, axis=1)[:, :steps]

    def check_context(self, context: np.ndarray) -> None:
        shape = tuple(np.shape(context))
        if len(shape) != 3 or shape[1:] != self.window_shape:
            raise RolloutSpecError(
                f"context for input '{self.window_input}' must have shape [batch, {self.lookback}, "
                f"{self.channels}] (batch, lookback, channels: the canonical layout, whatever the model's "
                f"window_layout '{self.window_layout}'); got {list(shape)}"
            )

    # -- the model's side: does the contract fit it? --------------------------------------------------
    def check_model(
        self, inputs: Mapping[str, TensorSig], outputs: Mapping[str, TensorSig], source: str
    ) -> None:
        """One paragraph naming the input or output that does not fit this contract, and the fix."""
        from .contract_infer import check_model

        check_model(self, inputs, outputs, source)

    # -- attaching to and reading from ONNX ----------------------------------------------------------
    def attach(self, model) -> None:
        """Store this contract in an `onnx.ModelProto`'s metadata (replacing an earlier one)."""
        props = [p for p in model.metadata_props if p.key != METADATA_KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(props)
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, self.to_json()

    @classmethod
    def from_onnx(cls, model) -> RolloutSpec:
        """The contract stored in `model`'s metadata, or one inferred from its inputs and outputs."""
        for prop in model.metadata_props:
            if prop.key == METADATA_KEY:
                return cls.from_json(prop.value)
        from .contract_infer import infer_rollout_spec

        return infer_rollout_spec(model)


def infer_rollout_spec(model) -> RolloutSpec:
    """The contract inferred from an ONNX model's inputs and outputs (`tvm_tqs.contract_infer`)."""
    from .contract_infer import infer_rollout_spec as infer

    return infer(model)
