"""Tutorial 1: load a forecaster, look at its fused operators, run the compiled graph.

Run: python tutorials/01_load_and_inspect.py
"""

import numpy as np

import tvm_tqs
from tvm_tqs.examples import example_model
from tvm_tqs.graph import fuse
from tvm_tqs.report.text import fused_op_table
from tvm_tqs.rollout import RolloutSpec
from tvm_tqs.runtime import VMRunner, build

path = example_model()

# 1. The rollout contract the model carries: how its forecast feeds back into its input window.
import onnx  # noqa: E402

spec = RolloutSpec.from_onnx(onnx.load(str(path)))
print(spec)

# 2. The fused-op table: one row per call site of the compiled graph (the unit of every decision).
ops = tvm_tqs.inspect(path, target="x86", input_shapes={"batch": 1})
print(fused_op_table(ops))

# 3. Compile the fused graph for this host and roll the model out for 4 calls from a synthetic window.
runner = VMRunner(build(fuse(path, {"batch": 1})))
context = np.random.default_rng(0).standard_normal((1, *spec.window_shape)).astype(np.float32)
trajectory = spec.rollout(lambda inputs: runner(inputs[spec.window_input])[0], context, steps=4 * spec.stride)
print("rollout:", trajectory.shape)
