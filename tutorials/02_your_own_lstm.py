"""Tutorial 2: your own forecaster: an LSTM exported to ONNX, with its rollout contract.

What it teaches: how a model of yours gets in. We build a small LSTM forecaster (an ONNX ``LSTM`` node
and a linear head), fit its head on synthetic series, save it as ONNX the way an exporter would, declare
its rollout contract (how forecasts feed back into the window), then inspect, score, compile and roll it
out, checking the compiled model against onnxruntime on the same contract.

torch is not needed: the graph is written with ``onnx.helper``. With torch, the same file comes from
``torch.onnx.export(model, window, "my_lstm.onnx", input_names=["window"], output_names=["forecast"],
dynamic_axes={"window": {0: "batch"}, "forecast": {0: "batch"}}, opset_version=17)`` on an ``nn.LSTM``
(batch_first) + ``nn.Linear`` module; everything after step 2 is identical.

Time: about 1 minute on a 2-core x86 host (the LSTM is unrolled over its 24 steps, so building takes
longer than for an MLP of the same size).

Run: python tutorials/02_your_own_lstm.py   (writes ./my_lstm.onnx and ./my_lstm.rollout.json)
"""

import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import tvm_tqs
from tvm_tqs.report.text import plan_summary, tqs_table

start = time.perf_counter()
LOOKBACK, HORIZON, CHANNELS, HIDDEN = 24, 12, 2, 16

# --- 1. Data: two coupled hourly series ---------------------------------------------------------------------
# A load-like series with a daily cycle and slow drift, and a temperature-like series that leads it. Real
# data would be read from disk and standardized with the training rows' mean and std; we standardize too.
rng = np.random.default_rng(7)
hours = np.arange(24 * 120)
temp = np.sin(2 * np.pi * (hours - 3) / 24) + 0.3 * np.sin(2 * np.pi * hours / (24 * 30))
load = (
    0.8 * np.sin(2 * np.pi * hours / 24)
    + 0.4 * np.roll(temp, 2)
    + 0.1 * np.cumsum(rng.normal(0, 0.05, len(hours)))
)
series = np.stack([load, temp], axis=1) + 0.05 * rng.standard_normal((len(hours), 2))
series = ((series - series.mean(0)) / series.std(0)).astype(np.float32)
train, held_out = series[: 24 * 100], series[24 * 100 :]  # the last 20 days are never fitted
starts = np.arange(0, len(train) - LOOKBACK - HORIZON, 3)
windows = np.stack([train[s : s + LOOKBACK] for s in starts])
targets = np.stack([train[s + LOOKBACK : s + LOOKBACK + HORIZON] for s in starts])
print(f"{len(windows)} training windows {windows.shape[1:]} -> targets {targets.shape[1:]}")


# --- 2. The ONNX graph --------------------------------------------------------------------------------------
# window [batch, L, C] -> subtract the window mean (a common trick that makes the model level-free) ->
# LSTM over time (ONNX's LSTM wants [L, batch, C]) -> last hidden state [batch, hidden] -> Linear to
# H*C -> [batch, H, C] -> add the mean back. ONNX gate order is i, o, f, c.
def lstm_graph(head_w: np.ndarray, head_b: np.ndarray, features: bool = False) -> onnx.ModelProto:
    g = np.random.default_rng(0)  # the recurrent weights are fixed (seeded); only the head is fitted
    scale = 1.0 / np.sqrt(HIDDEN)
    inits = [
        numpy_helper.from_array(
            (g.standard_normal((1, 4 * HIDDEN, CHANNELS)) * scale).astype(np.float32), "W"
        ),
        numpy_helper.from_array((g.standard_normal((1, 4 * HIDDEN, HIDDEN)) * scale).astype(np.float32), "R"),
        numpy_helper.from_array((g.standard_normal((1, 8 * HIDDEN)) * 0.1).astype(np.float32), "B"),
        numpy_helper.from_array(head_w.astype(np.float32), "head_w"),
        numpy_helper.from_array(head_b.astype(np.float32), "head_b"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array(np.array([-1, HORIZON, CHANNELS], np.int64), "out_shape"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["window"], ["level"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["window", "level"], ["centred"]),
        helper.make_node("Transpose", ["centred"], ["time_major"], perm=[1, 0, 2]),
        helper.make_node("LSTM", ["time_major", "W", "R", "B"], ["", "h_last"], hidden_size=HIDDEN),
        helper.make_node("Squeeze", ["h_last", "axis0"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "head_w"], ["y0"]),
        helper.make_node("Add", ["y0", "head_b"], ["y1"]),
        helper.make_node("Reshape", ["y1", "out_shape"], ["y2"]),
        helper.make_node("Add", ["y2", "level"], ["forecast"]),
    ]
    outputs = [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["batch", HORIZON, CHANNELS])]
    if features:  # the same graph, reading out the hidden state: used once, to fit the head
        outputs = [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", HIDDEN])]
    graph = helper.make_graph(
        nodes,
        "my_lstm",
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", LOOKBACK, CHANNELS])],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tutorial")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


# "Training": the recurrent weights stay random (an echo-state network) and the head is the ridge
# regression of the centred targets on the last hidden state. Deterministic, and enough for a model whose
# quantization errors we can watch grow.
zero_w, zero_b = np.zeros((HIDDEN, HORIZON * CHANNELS)), np.zeros(HORIZON * CHANNELS)
extract = ort.InferenceSession(lstm_graph(zero_w, zero_b, features=True).SerializeToString())
hidden = extract.run(None, {"window": windows})[0].astype(np.float64)
centred = (targets - windows.mean(1, keepdims=True)).reshape(len(windows), -1)
design = np.hstack([hidden, np.ones((len(hidden), 1))])
coef = np.linalg.solve(design.T @ design + 1e-3 * np.eye(HIDDEN + 1), design.T @ centred)
model = lstm_graph(coef[:-1], coef[-1])
fit = ort.InferenceSession(model.SerializeToString()).run(None, {"window": windows})[0]
yesterday = windows[:, :HORIZON]  # the seasonal-naive forecast: the same hours one day earlier
print(
    f"one-call training MSE {np.mean((fit - targets) ** 2):.4f} "
    f"(repeating yesterday: {np.mean((yesterday - targets) ** 2):.4f})"
)

# --- 3. The rollout contract --------------------------------------------------------------------------------
# tvm_tqs needs to know how one step of the autoregressive rollout runs. For a window [B, L, C] and a
# forecast [B, H, C] it can infer that; we look at what it infers, then attach our own: the same plus the
# channel statistics, so the data-free contexts TQS draws look like our windows (docs/rollout.md).
inferred = tvm_tqs.RolloutSpec.from_onnx(model)
print("\ninferred contract:", inferred.to_json())
spec = tvm_tqs.RolloutSpec(
    window_input="window",
    forecast_output="forecast",
    lookback=LOOKBACK,
    horizon=HORIZON,
    channels=CHANNELS,
    target_channels=(0, 1),  # both channels are forecast and fed back
    stride=HORIZON,  # every forecast step is fed back: H steps per call
    channel_mean=tuple(float(v) for v in windows.mean((0, 1))),
    channel_std=tuple(float(v) for v in windows.std((0, 1))),
)
spec.attach(model)  # stored in the ONNX metadata under "tvm_tqs.rollout"
onnx.save(model, "my_lstm.onnx")
Path("my_lstm.rollout.json").write_text(spec.to_json())  # the same contract as a file: rollout=PATH
print("attached contract:", spec.to_json())
print("saved:", Path("my_lstm.onnx").resolve(), f"({Path('my_lstm.onnx').stat().st_size:,} bytes)")

# --- 4. Inspect ---------------------------------------------------------------------------------------------
# The LSTM is unrolled over its 24 steps: the input projection (W) runs once for all steps, the recurrent
# matmul (R) once per step after the first. tvm_tqs keys weights by content, so those 23 sites share one
# weight id and are planned as one group: one precision for the whole recurrence.
ops = tvm_tqs.inspect("my_lstm.onnx", target="x86")
print(
    f"\n{len(ops)} fused call sites; the first 8 and the last 3 (`tvm-tqs inspect my_lstm.onnx` lists all):"
)
for op in ops[:8] + ops[-3:]:
    weights = " ".join(f"{w.id}[{'x'.join(map(str, w.shape))}]" for w in op.weights) or "-"
    print(f"  site {op.index:3d}  {'+'.join(op.kinds)[:52]:52s}  weights {weights:18s}  MACs {op.macs}")
readers = {}
for op in ops:
    for w in op.weights:
        readers.setdefault(w.id, []).append(op.index)
print("weights read by more than one site:", {k: len(v) for k, v in readers.items() if len(v) > 1})

# --- 5. Score and compile -----------------------------------------------------------------------------------
t0 = time.perf_counter()
report = tvm_tqs.score("my_lstm.onnx", horizon=48, seeds=2, mode="weight", linearity=False)
print(f"\nTQS in {time.perf_counter() - t0:.1f} s\n" + tqs_table(report, top=5))
# The budget is in average weight bits: 8 fits every group in int8; 6 forces some int4, and the solver
# decides which groups can take it. The recurrent sites move together (the "shared" column).
plans = {}
for budget in ("avg-bits=8", "avg-bits=6"):
    t0 = time.perf_counter()
    plans[budget] = tvm_tqs.compile("my_lstm.onnx", target="x86", budget=budget, tqs_report=report, batch=8)
    print(f"\n=== {budget}: compiled in {time.perf_counter() - t0:.1f} s\n" + plan_summary(plans[budget]))

# --- 6. Roll out: compiled (quantized) vs onnxruntime (fp32) ------------------------------------------------
# RolloutSpec.rollout drives any callable through the contract, so onnxruntime's fp32 model and the compiled
# quantized one are fed back exactly the same way. Windows from the held-out days this time.
test = np.stack([held_out[s : s + LOOKBACK] for s in range(0, 8 * 37, 37)])
steps = 48
session = ort.InferenceSession("my_lstm.onnx")
reference = spec.rollout(lambda feeds: session.run(["forecast"], feeds)[0], test, steps)
print(f"\nrollout of {steps} steps from {len(test)} held-out windows, against onnxruntime fp32:")
for budget, compiled in plans.items():
    forecast = compiled.rollout(test, horizon=steps)
    rel = np.linalg.norm(forecast - reference) / np.linalg.norm(reference)
    print(f"  {budget}: relative rollout error {rel:.3e} (predicted {compiled.plan.predicted_error:.3e})")
# At 6 bits the largest group, the recurrent weight, has to go int4, and its error is re-injected at every
# step of every call: the predicted error says so before anything is deployed.
fp32 = tvm_tqs.compile("my_lstm.onnx", target="x86", uniform="fp32", batch=8)
same = np.abs(fp32.rollout(test, horizon=steps) - reference).max()
print(f"the compiled fp32 model against onnxruntime: max abs difference {same:.2e}")

print(f"\ntutorial 2 done in {time.perf_counter() - start:.0f} s")
