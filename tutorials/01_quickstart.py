"""Tutorial 1: quickstart on the shipped example forecaster.

What it teaches: the whole loop on the model that ships inside the package (a small MLP forecaster of
Victorian electricity demand and temperature): read its rollout contract, look at its fused operators,
score them with TQS, compile a mixed-precision plan for this x86 host under a size budget, export the
artifact, run it on numpy and compare its autoregressive rollout with the fp32 model's.

Time: about 20 s on a 2-core x86 host.

Run: python tutorials/01_quickstart.py   (writes ./quickstart_out/)
"""

import time
from pathlib import Path

import numpy as np
import onnx

import tvm_tqs
from tvm_tqs.examples import example_model
from tvm_tqs.report.text import fused_op_table, plan_summary, tqs_table

start = time.perf_counter()
path = example_model()
print("model:", path.name)

# --- 1. The rollout contract --------------------------------------------------------------------------------
# TQS treats the forecaster as a dynamical system: call it, feed its forecast back into the window, call
# it again. The contract says how (which input is the window, which output the forecast, how many steps
# are fed back per call). This model carries it in its ONNX metadata; `tvm-tqs rollout MODEL` prints it.
spec = tvm_tqs.RolloutSpec.from_onnx(onnx.load(str(path)))
print(
    f"\ncontract: window '{spec.window_input}' {spec.window_layout} lookback {spec.lookback} x "
    f"{spec.channels} channels -> forecast '{spec.forecast_output}' horizon {spec.horizon}, "
    f"stride {spec.stride}"
)

# --- 2. The fused operators ---------------------------------------------------------------------------------
# Every decision (precision, kernel, latency) is made per fused call site of the compiled graph, not per
# ONNX node: TVM fuses a MatMul with its bias and ReLU into one kernel, and that kernel is what runs.
ops = tvm_tqs.inspect(path, target="x86")
print("\n" + fused_op_table(ops))

# --- 3. TQS: which sites' errors grow over a rollout --------------------------------------------------------
# Data-free: synthetic windows shaped by the contract's channel statistics, forward passes only. "weight"
# mode perturbs each site's weights (what a quantizer does) and is what the planner uses, so we keep the
# report and hand it to compile() below instead of scoring twice. The horizon (96 steps = 4 calls) is the
# rollout length the plan protects; 2 seeds keep it quick (the default 8 gives tighter intervals).
t0 = time.perf_counter()
report = tvm_tqs.score(path, horizon=96, seeds=2, mode="weight")
print(f"\nTQS in {time.perf_counter() - t0:.1f} s\n" + tqs_table(report))

# --- 4. Compile under a budget ------------------------------------------------------------------------------
# "size=25%": the weights may take a quarter of their fp32 bytes. The solver picks int4/int8/fp16/fp32 per
# weight group so that the predicted rollout error is smallest; the plan is lowered to integer kernels
# (AVX-512 VNNI / AVX2 on x86) and built. batch=4 fixes the batch the built model runs at.
t0 = time.perf_counter()
compiled = tvm_tqs.compile(path, target="x86", budget="size=25%", tqs_report=report, batch=4)
print(f"\ncompiled in {time.perf_counter() - t0:.1f} s\n" + plan_summary(compiled))
print("precisions per site:", compiled.plan.precisions)

# --- 5. Export ----------------------------------------------------------------------------------------------
# One directory, written all or nothing: the library for the target, plan.json (per-site kernels and why a
# site stayed fp32) and report.json (the plan, TQS, trace). It is what you copy to the device (tutorial 4).
out = compiled.export(Path("quickstart_out"), overwrite=True)
print("\nexported:", out, sorted(p.name for p in out.iterdir()))

# --- 6. Run it on numpy, and roll it out --------------------------------------------------------------------
# A smooth daily cycle (48 half-hours) on the model's standardized scale stands in for real history.
# Windows are always given as [batch, lookback, channels]; the contract converts to the model's layout.
t = np.arange(spec.lookback)[None, :, None] + 7 * np.arange(4)[:, None, None]
window = np.concatenate([np.sin(2 * np.pi * t / 48), 0.5 * np.cos(2 * np.pi * t / 48)], axis=2)
window = (window + 0.1 * np.random.default_rng(0).standard_normal(window.shape)).astype(np.float32)
(one_call,) = compiled.run(window)
print(f"\none call: {window.shape} -> {one_call.shape}")

# The quantized model is judged against its fp32 self over a long rollout, not one call: errors that are
# harmless once can compound as forecasts are fed back. uniform="fp32" builds the unquantized reference.
# The prediction is for the TQS horizon and data-free windows, so expect the same order of magnitude on
# real-looking windows, not the same digits (docs/error_model.md).
fp32 = tvm_tqs.compile(path, target="x86", uniform="fp32", batch=4)
horizon = report.horizon
reference = fp32.rollout(window, horizon=horizon)
forecast = compiled.rollout(window, horizon=horizon)
measured = np.linalg.norm(forecast - reference) / np.linalg.norm(reference)
print(f"rollout of {horizon} steps ({spec.calls(horizon)} calls): {forecast.shape}")
print(f"measured relative rollout error vs fp32: {measured:.3e}")
print(f"predicted by the error model:           {compiled.plan.predicted_error:.3e}")
per_step = np.linalg.norm(forecast - reference, axis=(0, 2)) / np.linalg.norm(reference, axis=(0, 2))
print(
    "relative error per call (mean over its steps):", np.round(per_step.reshape(-1, spec.stride).mean(1), 4)
)

print(f"\ntutorial 1 done in {time.perf_counter() - start:.0f} s")
