"""Inferring a rollout contract from a model's inputs and outputs, and checking a contract against a model.

Inference covers the common exports: one float window input ``[B, L, C]``, ``[B, C, L]`` or ``[B, L]``, one
forecast output ``[B, H, C]``, ``[B, C, H]`` or ``[B, H]``, and auxiliary inputs whose role their type
and name give away (a bool input along the window's time axis is an observed-mask; an integer input along
it named like a calendar field is a time feature). When it cannot decide, the error names what is missing
and carries a ready-to-edit JSON skeleton (docs/rollout.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from .contract import VERSION, AuxInput, RolloutSpec, TensorSig
from .errors import RolloutSpecError

_FLOAT = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool"}
_ONNX_DTYPES.update(_FLOAT)
_TIME_NAME = re.compile(r"hour|minute|day|week|month|year|time|tod|dow|calendar|step|position|date", re.I)
# Names whose period is certain (0-based calendar fields) and counters that have none; any other time-like
# name (month: 0- or 1-based? minute_of_day?) is left for the user to declare.
_PERIODS = {"hour": 24.0, "hour_of_day": 24.0, "hourofday": 24.0, "minute": 60.0, "minute_of_hour": 60.0,
            "dayofweek": 7.0, "day_of_week": 7.0, "weekday": 7.0, "dow": 7.0}  # fmt: skip
_COUNTERS = {
    "t",
    "time",
    "time_idx",
    "time_index",
    "timestep",
    "step",
    "steps",
    "position",
    "positions",
    "pos",
}
_NOT_OBSERVED = re.compile(r"pad|missing|nan|invalid", re.I)  # a bool mask that marks what is NOT observed
_FORECAST_NAME = re.compile(r"forecast|pred|output|^y$|^out", re.I)
_TODO = "<choose>"


def _signature(value_info) -> tuple[list, str]:
    tt = value_info.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
    return dims, _ONNX_DTYPES.get(tt.elem_type, f"onnx type {tt.elem_type}")


def _static(d) -> bool:
    return isinstance(d, int) and d > 0


class _Inference:
    """What could be read off the model, and what could not (for the skeleton and the message)."""

    def __init__(self, model):
        initializers = {t.name for t in model.graph.initializer}
        self.inputs = {i.name: _signature(i) for i in model.graph.input if i.name not in initializers}
        self.outputs = {o.name: _signature(o) for o in model.graph.output}
        self.fields: dict = {"version": VERSION}
        self.missing: list[str] = []

    def todo(self, field: str, why: str, placeholder=_TODO):
        self.missing.append(why)
        self.fields[field] = placeholder

    def window(self) -> None:
        floats = [n for n, (_, dt) in self.inputs.items() if dt in _FLOAT.values()]
        if len(floats) != 1:
            self.todo(
                "window_input",
                f"which input is the history window (float inputs: {floats or 'none'})",
                floats[0] if floats else _TODO,
            )
            self.fields.setdefault("window_layout", _TODO)
            return
        name = floats[0]
        self.fields["window_input"] = name
        dims = self.inputs[name][0]
        if len(dims) == 2 and _static(dims[1]):
            self.fields.update(window_layout="BL", lookback=dims[1], channels=1)
        elif len(dims) != 3 or not all(_static(d) for d in dims[1:]):
            self.todo("window_layout", f"the layout of window '{name}' {dims} (BLC, BCL or BL)")

    def forecast(self) -> None:
        floats = [n for n, (_, dt) in self.outputs.items() if dt in _FLOAT.values()]
        named = [n for n in floats if _FORECAST_NAME.search(n)]
        pick = floats if len(floats) == 1 else named if len(named) == 1 else []
        if not pick:
            self.todo("forecast_output", f"which output is the forecast (outputs: {list(self.outputs)})")
            return
        self.fields["forecast_output"] = pick[0]

    def layouts(self) -> None:
        """Window and forecast layouts from the dims the two share (the channel count)."""
        if _TODO in (self.fields.get("window_input"), self.fields.get("forecast_output")):
            return
        x = self.inputs[self.fields["window_input"]][0]
        y = self.outputs[self.fields["forecast_output"]][0]
        if not all(_static(d) for d in y[1:]) or len(y) not in (2, 3):
            self.todo(
                "forecast_layout",
                f"the layout of output '{self.fields['forecast_output']}' {y}: a forecast is [B, H, C], "
                f"[B, C, H] or [B, H]; an extra axis (quantiles, distribution parameters) needs "
                f"forecast_select {{'axis': A, 'index': I}}",
            )
            self.fields.setdefault("forecast_select", {"axis": len(y) - 1, "index": _TODO})
            return
        if len(x) == 2:  # univariate window
            if len(y) == 2:
                self.fields.update(forecast_layout="BH", horizon=y[1])
            elif 1 in y[1:]:
                layout = "BHC" if y[2] == 1 else "BCH"
                self.fields.update(forecast_layout=layout, horizon=y[1] if layout == "BHC" else y[2])
            else:
                self.todo("forecast_select", f"which axis of output {y} is the point forecast")
            return
        if "window_layout" in self.fields:
            return
        (a, b), (c, d) = x[1:3], (y[1:3] if len(y) == 3 else (None, y[1]))
        if (a == 1) != (b == 1) and len(y) == 3 and 1 not in (c, d):
            # A univariate window ([B, 1, L] or [B, L, 1]) and a forecast with an extra axis: a quantile or
            # distribution head. Its point forecast cannot be guessed.
            L = b if a == 1 else a
            self.fields.update(
                window_layout="BCL" if a == 1 else "BLC",
                lookback=L,
                channels=1,
                forecast_layout="BH",
                horizon=c,
            )
            self.fields["forecast_select"] = {"axis": 2, "index": _TODO}
            self.missing.append(
                f"which entry of output '{self.fields['forecast_output']}' {y} is the point forecast of the "
                f"univariate window {x} (forecast_select: the axis and index of, e.g., the median quantile)"
            )
            return
        options = []
        for wl, (L, C) in (("BLC", (a, b)), ("BCL", (b, a))):
            if len(y) == 2:
                if C == 1:
                    options.append((wl, "BH", L, C, d))
                continue
            for fl, (H, C2) in (("BHC", (c, d)), ("BCH", (d, c))):
                if C2 == C:
                    options.append((wl, fl, L, C, H))
        if not options:
            if len(y) == 3:  # read as [B, L, C] -> [B, H, C'] with C' != C: which channels are predicted?
                self.fields.update(
                    window_layout="BLC", forecast_layout="BHC", lookback=a, channels=b, horizon=c
                )
                self.missing.append(
                    f"input '{self.fields['window_input']}' has {b} channels but output "
                    f"'{self.fields['forecast_output']}' has {d}: which window channels the forecast "
                    f"predicts (target_channels; or the layouts, if they are not [B, L, C] -> [B, H, C])"
                )
                self.fields["target_channels"] = _TODO
                return
            self.todo(
                "window_layout", f"how window {x} and forecast {y} line up (no channel count they share)"
            )
            self.fields.setdefault("forecast_layout", _TODO)
            return
        wl, fl, L, C, H = options[0]
        if len({(o[2], o[3], o[4]) for o in options}) > 1:  # L == H, or C == L: no way to tell
            readings = "; ".join(
                f"{o[0]}/{o[1]}: lookback {o[2]}, channels {o[3]}, horizon {o[4]}" for o in options
            )
            self.todo(
                "window_layout",
                f"the layouts of window {x} and forecast {y}: several readings fit ({readings})",
            )
            self.fields.setdefault("forecast_layout", _TODO)
            return
        self.fields.update(window_layout=wl, forecast_layout=fl, lookback=L, channels=C, horizon=H)

    def aux(self) -> None:
        window = self.fields.get("window_input")
        lookback = self.fields.get("lookback")
        aux = []
        for name, (dims, dtype) in self.inputs.items():
            if name == window:
                continue
            axis = next((i for i, d in enumerate(dims) if i > 0 and d == lookback), None)
            entry = {"name": name}
            key = name.lower()
            if dtype == "bool" and axis is not None and not _NOT_OBSERVED.search(name):
                entry.update(policy="observed_mask", time_axis=axis)
            elif dtype.startswith("int") and axis is not None and (key in _PERIODS or key in _COUNTERS):
                entry.update(policy="time", time_axis=axis)
                if key in _PERIODS:
                    entry["period"] = _PERIODS[key]
            elif dtype.startswith("int") and axis is not None and _TIME_NAME.search(name):
                entry.update(policy="time", time_axis=axis, period=_TODO, start=_TODO)
                self.missing.append(
                    f"the period and start of time input '{name}' ({dtype} {dims}), or null for a counter"
                )
            else:
                entry.update(policy=_TODO, time_axis=axis)
                self.missing.append(
                    f"the policy of input '{name}' ({dtype} {dims}): observed_mask, constant, time or supplied"
                )
            aux.append(entry)
        self.fields["aux_inputs"] = aux

    def finish(self) -> dict:
        f = self.fields
        for key in ("lookback", "horizon", "channels"):
            if key not in f:
                f[key] = _TODO
        f.setdefault("window_layout", "BLC")
        f.setdefault("forecast_layout", "BHC")
        f.setdefault("forecast_select", None)
        if f.get("target_channels") == _TODO:
            pass
        elif isinstance(f["channels"], int):
            f["target_channels"] = list(range(f["channels"])) if f["forecast_layout"] != "BH" else [0]
            if f["forecast_layout"] == "BH" and f["channels"] > 1:
                f["target_channels"] = _TODO
                self.missing.append("which window channel the univariate forecast predicts (target_channels)")
        else:
            f["target_channels"] = _TODO
        if isinstance(f["lookback"], int) and isinstance(f["horizon"], int):
            f["stride"] = min(f["lookback"], f["horizon"])
        else:
            f["stride"] = _TODO
        f.update(exogenous="hold", channel_mean=None, channel_std=None)
        return f


def skeleton_json(fields: Mapping) -> str:
    return json.dumps(fields, indent=2, sort_keys=True)


def infer_rollout_spec(model) -> RolloutSpec:
    """The contract of an ONNX model for the common cases; otherwise one paragraph and a JSON skeleton."""
    inf = _Inference(model)
    inf.window()
    inf.forecast()
    inf.layouts()
    inf.aux()
    fields = inf.finish()
    if inf.missing:
        raise RolloutSpecError(
            "cannot infer a rollout contract: missing "
            + "; ".join(dict.fromkeys(inf.missing))
            + '. Write this skeleton to a file, replace every "<choose>" (docs/rollout.md lists the '
            "choices), and pass it as rollout=RolloutSpec.from_file(PATH) or --rollout PATH (or attach it "
            f"to the model, metadata key 'tvm_tqs.rollout'):\n{skeleton_json(fields)}"
        )
    return RolloutSpec.from_dict(fields)


def check_model(
    spec: RolloutSpec, inputs: Mapping[str, TensorSig], outputs: Mapping[str, TensorSig], source: str
) -> None:
    """Raise one paragraph naming the input or output of `source` that `spec` does not fit, and the fix."""

    def bad(msg: str):
        raise RolloutSpecError(f"the rollout contract does not fit {source}: {msg}")

    if spec.window_input not in inputs:
        bad(f"its window input '{spec.window_input}' is not an input of the model (inputs: {list(inputs)})")
    shape, dtype = inputs[spec.window_input]
    batch = shape[0]
    want = spec.model_window_shape(batch)
    if tuple(shape) != want:
        bad(
            f"input '{spec.window_input}' has shape {list(shape)} but window_layout "
            f"'{spec.window_layout}' with lookback {spec.lookback} and channels {spec.channels} means "
            f"{list(want)}: fix lookback / channels / window_layout to match the input"
        )
    if not dtype.startswith(("float", "bfloat")):
        bad(f"window input '{spec.window_input}' is {dtype}; the window must be floating point")
    aux = {a.name: a for a in spec.aux_inputs}
    for name, (ashape, adtype) in inputs.items():
        if name == spec.window_input:
            continue
        if name not in aux:
            bad(
                f"input '{name}' ({adtype} {list(ashape)}) is neither the window nor an auxiliary input: add "
                f'{{"name": "{name}", "policy": "observed_mask" | "constant" | "time" | "supplied", '
                f'"time_axis": ...}} to aux_inputs'
            )
        a: AuxInput = aux[name]
        if not ashape or ashape[0] != batch:
            bad(
                f"auxiliary input '{name}' has shape {list(ashape)}; its axis 0 must be the batch "
                f"({batch}, as the window's)"
            )
        if a.policy == "constant":
            continue
        if a.time_axis >= len(ashape):
            bad(f"auxiliary input '{name}' has rank {len(ashape)}; time_axis {a.time_axis} is out of range")
        if a.policy == "time" and a.step is None and ashape[a.time_axis] < 2:
            bad(f"time input '{name}' has 1 step along axis {a.time_axis}: give its step")
    for name in aux:
        if name not in inputs:
            bad(f"auxiliary input '{name}' is not an input of the model (inputs: {list(inputs)})")
    if spec.forecast_output not in outputs:
        bad(f"its forecast output '{spec.forecast_output}' is not an output (outputs: {list(outputs)})")
    y, ydtype = outputs[spec.forecast_output]
    y = list(y)
    if not ydtype.startswith(("float", "bfloat")):
        bad(f"output '{spec.forecast_output}' is {ydtype}, not a forecast (a forecast is floating point)")
    if spec.forecast_select is not None:
        axis, index = spec.forecast_select
        if axis >= len(y) or not 0 <= index < y[axis]:
            bad(
                f"forecast_select {{'axis': {axis}, 'index': {index}}} is outside output "
                f"'{spec.forecast_output}' of shape {y}"
            )
        y = y[:axis] + y[axis + 1 :]
    layout = {"BHC": ("horizon", "targets"), "BCH": ("targets", "horizon"), "BH": ("horizon",)}
    names = layout[spec.forecast_layout]
    targets = len(spec.target_channels)
    expect = {"horizon": spec.horizon, "targets": targets}
    if len(y) != 1 + len(names) or y[0] != batch or any(y[1 + i] != expect[n] for i, n in enumerate(names)):
        want_y = [batch] + [expect[n] for n in names]
        bad(
            f"output '{spec.forecast_output}' is {list(outputs[spec.forecast_output][0])}, which is not a "
            f"forecast of this contract: forecast_layout '{spec.forecast_layout}'"
            + (f" after forecast_select {spec.forecast_select}" if spec.forecast_select else "")
            + f" with horizon {spec.horizon} and {targets} target channel(s) means {want_y}; fix horizon / "
            "target_channels / forecast_layout / forecast_select, or name the forecast output"
        )
