"""Tutorial 6: a third-party model with its own rollout contract (auxiliary inputs).

What it teaches: how to plan a model you did not write and whose interface tvm_tqs cannot guess. The model
(tests/corpus/masked_quantile_cf.onnx, exported from torch) is channels-first, takes a boolean
observed-mask beside its window, and outputs 9 quantiles per step instead of a point forecast. We let
tvm_tqs refuse it and print a skeleton contract, read the contract written for it
(masked_quantile_cf.rollout.json), compile with ``rollout=``, and roll it out with a mask that marks gaps
in the history, against onnxruntime on the same contract.

Time: about 20 s on a 2-core x86 host.

Run: python tutorials/06_third_party_contract.py   (writes nothing)
"""

import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import tvm_tqs
from tvm_tqs.report.text import plan_summary

start = time.perf_counter()
CORPUS = Path(__file__).resolve().parents[1] / "tests" / "corpus"
MODEL, CONTRACT = CORPUS / "masked_quantile_cf.onnx", CORPUS / "masked_quantile_cf.rollout.json"

# --- 1. What the model looks like from outside --------------------------------------------------------------
# Two inputs and one output. Nothing says which input is the history, what "valid" does over a rollout, or
# which of the 9 entries of the last axis is the forecast to feed back.
proto = onnx.load(str(MODEL))
for kind, values in (("input", proto.graph.input), ("output", proto.graph.output)):
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_param or d.dim_value for d in t.shape.dim]
        print(f"{kind:6s} {v.name:6s} {onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)!s:8s} {dims}")

# --- 2. Without a contract: refused, with a skeleton --------------------------------------------------------
# tvm_tqs infers contracts for the common cases (a [B, L, C] window and a [B, H, C] forecast). Here it gets
# far (channels-first window, "valid" along the window's time axis is an observed-mask) but a quantile head
# has no one right point forecast: rather than guess, it stops and names what is missing. Nothing is built.
try:
    tvm_tqs.compile(MODEL, target="x86", budget="size=25%")
except tvm_tqs.TQSError as err:  # RolloutSpecError, a TQSError: one paragraph and a JSON skeleton
    message = str(err)
    print(f"\nrefused ({type(err).__name__}):\n{message}")
else:
    raise SystemExit("expected the model to be refused without a contract")
skeleton = json.loads(message[message.index("{") :])

# --- 3. The contract ----------------------------------------------------------------------------------------
# Whoever knows the model fills the skeleton in. The corpus ships the filled-in file; what the skeleton left
# open ("<choose>", null) is what only the model's author knows.
contract = json.loads(CONTRACT.read_text())
print("\nfilled in by the model's author:")
for key, value in skeleton.items():
    if value != contract.get(key) or "<choose>" in json.dumps(value):
        print(f"  {key}: {json.dumps(value)} -> {json.dumps(contract.get(key))}")
MEANING = {
    "window_input": "the history: input 'values'",
    "window_layout": "BCL = channels-first [batch, channels, lookback]; tvm_tqs always hands you [B, L, C]",
    "forecast_output": "the forecast: output 'q'",
    "forecast_select": "index 4 on axis 2 (of the 9 quantiles) is the point forecast fed back: the median",
    "forecast_layout": "after the selection: [batch, horizon] (one target channel)",
    "lookback": "L = 96 window steps",
    "horizon": "H = 24 steps per call",
    "stride": "all 24 forecast steps are fed back per call",
    "target_channels": "window channel 0 is forecast (the only one)",
    "channel_mean": "typical level of the window, so TQS's data-free windows look like real ones",
    "channel_std": "typical spread of the window, likewise",
    "aux_inputs": "'valid' is an observed_mask along axis 2: history as given, fed-back steps marked true",
}
print("\nthe contract, field by field (docs/rollout.md):")
for key, why in MEANING.items():
    print(f"  {key:16s} {json.dumps(contract[key]):58s} {why}")

# --- 4. Compile with rollout= -------------------------------------------------------------------------------
# rollout= takes the file, its dict or a RolloutSpec (CLI: --rollout FILE; or attach it to the ONNX once:
# RolloutSpec.attach(proto)). It is checked against the model first: a contract the model cannot satisfy is
# refused by name before any work (try stride 97 or horizon 12).
spec = tvm_tqs.RolloutSpec.from_file(CONTRACT)
t0 = time.perf_counter()
compiled = tvm_tqs.compile(
    MODEL, target="x86", budget="size=25%", rollout=CONTRACT, horizon=48, seeds=2, batch=4
)
print(f"\ncompiled in {time.perf_counter() - t0:.1f} s ({compiled.tqs.path} path)\n" + plan_summary(compiled))

# --- 5. Roll out with gaps in the history -------------------------------------------------------------------
# A daily-ish signal with two stretches of missing readings: the values there are 0 and valid=False, as the
# model was trained to expect. `aux` gives the auxiliary inputs' initial values in the model's own layout
# ([B, 1, 96] bool); the contract advances them (fed-back steps are observed) at each call.
rng = np.random.default_rng(3)
t = np.arange(spec.lookback)[None, :, None] + 11 * np.arange(4)[:, None, None]
context = (np.sin(2 * np.pi * t / 24) + 0.2 * rng.standard_normal(t.shape)).astype(np.float32)  # [B, L, 1]
valid = np.ones((4, 1, spec.lookback), dtype=bool)
valid[:, :, 40:52] = False
valid[1, :, 80:90] = False
context[~valid.transpose(0, 2, 1)] = 0.0
steps = 48
print()
session = ort.InferenceSession(str(MODEL))


def fp32_call(feeds):  # the contract hands the callable {input name: array} in the model's own layout
    return session.run([spec.forecast_output], feeds)[0]


# The error model predicts the rollout error on TQS's data-free windows; a sharp daily cycle like this one
# drives the model harder, so expect the measured error to be of the same order, not the same number.
print(f"predicted relative rollout error (data-free windows): {compiled.plan.predicted_error:.3e}")
forecasts = {}
for name, mask in (("all observed", np.ones_like(valid)), ("with gaps", valid)):
    reference = spec.rollout(fp32_call, context, steps, aux={"valid": mask})
    forecasts[name] = compiled.rollout(context, horizon=steps, aux={"valid": mask})
    rel = np.linalg.norm(forecasts[name] - reference) / np.linalg.norm(reference)
    print(
        f"{name}: rollout {forecasts[name].shape} (median fed back), quantized vs onnxruntime fp32 {rel:.3e}"
    )
gap_effect = np.abs(forecasts["with gaps"] - forecasts["all observed"]).max()
print(f"the mask matters: max |with gaps - all observed| = {gap_effect:.3f}")

# --- 6. The quantiles are still there -----------------------------------------------------------------------
# The contract only says which quantile drives the rollout; one call of the compiled model returns all 9.
# (This briefly trained model's quantiles can cross: onnxruntime's fp32 output does the same.)
raw = compiled.run_named({"values": spec.to_model_window(context), "valid": valid})["q"]
print(f"\none call: q {raw.shape}; first step of row 0, the 9 quantiles: {np.round(raw[0, 0], 3)}")

print(f"\ntutorial 6 done in {time.perf_counter() - start:.0f} s")
