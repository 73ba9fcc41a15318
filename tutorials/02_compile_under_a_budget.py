"""Tutorial 2: TQS scores, a plan under a size budget, the quantized model against its fp32 self.

Run: python tutorials/02_compile_under_a_budget.py
"""

import numpy as np
import onnx

import tvm_tqs
from tvm_tqs.examples import example_model
from tvm_tqs.report.text import plan_summary

path = example_model()
spec = tvm_tqs.RolloutSpec.from_onnx(onnx.load(str(path)))

# 1. Data-free sensitivity of every fused op (weight mode: what the planner uses). Reuse it below.
report = tvm_tqs.score(path, horizon=96, seeds=8, mode="weight")

# 2. Plans for this host at three size budgets: the exact knapsack picks int4/int8/fp16 per op.
window = np.random.default_rng(0).standard_normal((4, *spec.window_shape)).astype(np.float32)
fp32 = tvm_tqs.compile(path, target="x86", uniform="fp32", batch=4)
reference = fp32.rollout(window, horizon=96)
for budget in ("size=50%", "size=25%", "size=18%"):
    compiled = tvm_tqs.compile(path, target="x86", budget=budget, tqs_report=report, batch=4)
    rollout = compiled.rollout(window, horizon=96)
    measured = np.linalg.norm(rollout - reference) / np.linalg.norm(reference)
    print(f"\n=== {budget}: measured relative rollout error vs fp32 {measured:.3e}")
    print(plan_summary(compiled))

# 3. The same plan for an ARM board: an artifact to copy to the device.
arm = tvm_tqs.compile(path, target="arm_cpu/cortex-a76", budget="size=25%", tqs_report=report)
print("\nwritten:", sorted(p.name for p in arm.export("tutorial_out", overwrite=True).iterdir()))
