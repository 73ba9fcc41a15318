"""Every zoo model (and the packaged example) compiles for a CUDA and an OpenCL target, end to end.

``tvm_tqs.compile(model, target, budget="size=25%")`` plans, quantizes and builds; the CompiledModel
exports an artifact; no PrimFunc of the built executable runs on the host (`gpu_code.host_fallbacks`,
on the built code); for CUDA the whole module's CUDA C compiles with nvcc for the Jetson's sm_87 and
every int8 / int4 kernel in it uses ``dp4a``. Slow (TQS scoring of 11 models, twice: ~28 min on 2
cores): ``pytest -m slow tests/test_gpu_zoo.py``. Nothing here runs a kernel (no GPU needed).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

import tvm_tqs
from tvm_tqs.examples import example_model
from tvm_tqs.targets import gpu_code, nvcc
from tvm_tqs.targets.build import LIBRARY, PLAN

ROOT = Path(__file__).resolve().parents[1]
ZOO = sorted((ROOT / "benchmarks" / "zoo" / "models").glob("*.onnx")) + [example_model()]
TARGETS = ["cuda/jetson-orin", "opencl/mali"]
INT_KERNEL = re.compile(r"tqs_(dense|conv1d)_w[48]_")  # quantized-kernel PrimFunc names (kernelset._name)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("path", ZOO, ids=[p.stem for p in ZOO])
def test_zoo_model_compiles_and_exports(path, target, tmp_path):
    if target.startswith("cuda") and not nvcc.available():
        pytest.skip("nvcc not found")
    compiled = tvm_tqs.compile(str(path), target=target, budget="size=25%")
    assert isinstance(compiled, tvm_tqs.CompiledModel)
    exe = compiled.executable
    kind = target.split("/")[0]

    # the built code: every PrimFunc launches device kernels and none loops on the host
    assert gpu_code.host_fallbacks(exe, kind) == {}
    assert gpu_code.device_kernels(exe, kind)

    out = compiled.export(tmp_path / "artifact")
    assert (out / LIBRARY).is_file() and (out / LIBRARY).stat().st_size > 0
    assert json.loads((out / PLAN).read_text())["target_name"] == target

    if kind != "cuda":
        return
    source = gpu_code.cuda_source(exe)
    ptx = nvcc.compile_cuda(source, "sm_87")
    assert nvcc.ptx_target(ptx) == "sm_87"
    entries = nvcc.ptx_entries(ptx)
    assert set(entries) == set(gpu_code.device_kernels(source))
    per_func: dict[str, Counter] = {}
    for name, ops in entries.items():  # <PrimFunc>_kernel[_i] -> <PrimFunc>
        per_func.setdefault(name.rsplit("_kernel", 1)[0], Counter()).update(ops)
    for func, ops in per_func.items():  # each int8 / int4 PrimFunc accumulates with dp4a
        if INT_KERNEL.match(func):
            assert any(op.startswith("dp4a") for op in ops), func
    # what the artifact ships: CUDA C (compiled on the device at load) or nvcc's code for sm_87
    for fmt, code in nvcc.embedded_device_code(out / LIBRARY):
        assert fmt == "cuda" or nvcc.code_arch(fmt, code)[0] == "sm_87", (fmt, nvcc.code_arch(fmt, code))
