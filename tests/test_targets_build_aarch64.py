"""Quantized zoo models built for aarch64: the kernels' instructions in the model's assembly (LLVM only,
always runs), and the cross-compiled artifact run under qemu-aarch64 equal to the host's build of the
same quantized model (``@pytest.mark.qemu``: skipped without qemu-aarch64 / aarch64-linux-gnu-g++)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import qemu_runner

from tvm_tqs.examples import example_model
from tvm_tqs.frontend.load import load
from tvm_tqs.graph import fuse, fused_ops
from tvm_tqs.passes.quantize import quantize
from tvm_tqs.rollout import RolloutSpec
from tvm_tqs.runtime import VMRunner
from tvm_tqs.targets import arm
from tvm_tqs.targets.build import build, export

ZOO = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo" / "models"


def _quantized(path: Path, precision: str, target: str, batch: int = 2):
    n = len(fused_ops(fuse(str(path), {"batch": batch})))
    return quantize(load(str(path), {"batch": batch}), {i: precision for i in range(n)}, target)


@pytest.mark.parametrize(
    ("target", "present", "absent"),
    [
        ("arm_cpu/cortex-a72", ("smull", "sadalp"), ("sdot", "smmla")),
        ("arm_cpu/cortex-a76", ("sdot",), ("smmla",)),
        ("arm_cpu/neoverse-v1", ("smmla",), ()),
    ],
)
def test_model_assembly_uses_the_target_dot_product(target, present, absent):
    res = _quantized(example_model(), "int8", target)
    text = arm.asm(build(res.mod, target))
    for needle in present:
        assert re.search(rf"\b{needle}\b", text), needle
    for needle in absent:
        assert not re.search(rf"\b{needle}\b", text), needle
    if target.endswith("neoverse-v1"):  # int4 weights decode in registers into the same smmla path
        text4 = arm.asm(build(_quantized(example_model(), "int4", target).mod, target))
        assert re.search(r"\bsmmla\b", text4) and re.search(r"\bushr\b|\busra\b", text4)


@pytest.mark.qemu
@pytest.mark.parametrize(
    ("model", "target", "precision"),
    [
        ("vic_elec_mlp", "arm_cpu/neoverse-v1", "int8"),  # smmla
        ("etth1_tcn", "arm_cpu/cortex-a72", "int8"),  # NEON smull/sadalp, conv1d
        ("etth1_patchtst", "arm_cpu/cortex-a76", "int4"),  # sdot, int4 decode, gelu, residuals
    ],
)
def test_aarch64_artifact_under_qemu_equals_the_host_build(
    model, target, precision, qemu_aarch64_runner, tmp_path
):
    path = example_model() if model == "vic_elec_mlp" else ZOO / f"{model}.onnx"
    spec = RolloutSpec.from_onnx(onnx.load(str(path)))
    x = np.random.default_rng(0).standard_normal((2, *spec.window_shape)).astype(np.float32)
    res = _quantized(path, precision, target)
    art = export(build(res.mod, target), tmp_path / "art", target, res)
    assert json.loads((art / "plan.json").read_text())["target_name"] == target
    host = VMRunner(build(_quantized(path, precision, "x86").mod, "x86"))(x)[0]
    (got,) = qemu_runner.run_vm(art / "model.so", [x], [(host.shape, "float32")])
    # same integers on every ISA; the fp32 epilogues may differ by an FMA contraction (~1 ulp)
    np.testing.assert_allclose(got, host, rtol=1e-5, atol=1e-5 * np.abs(host).max())
