"""Quick host measurement of the x86 kernels (not a test): ``python -m tvm_tqs.targets.kernels.bench``.

For each (M, K=N): our int8 dense (VNNI; fp32 in/out with dynamic per-row activation quantization
and the fused rescale, i.e. the deployable kernel), the same GEMM with int8 in / int32 out, our int4
dense, our fp32 schedule, TVM's default build of the legalized ``R.matmul`` PrimFunc (no schedule:
what the default CPU pipeline runs), and numpy fp32 (OpenBLAS). Median of ``--repeat`` runs, each
averaging enough calls to last ``--min-ms`` ms. Run it alone on the machine.

Peak model (stated assumption, see docs/kernels.md): ``--ports`` 512-bit VNNI units per core, each
issuing one ``vpdpbusd zmm`` (64 int8 MACs) per cycle, at ``--ghz`` GHz; reported per core and for
``--cores`` cores (TVM's default runtime pool is 1 thread on the 2-vCPU host, so kernels below the parallel
threshold use one core).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import tvm
from tvm import relax

from .. import x86
from . import reference as ref
from .config import ActQuant, Epilogue
from .kernelset import KernelSet


def _time_lib(lib, name: str, args, repeat: int, min_ms: float) -> float:
    dev = tvm.cpu()
    f = lib.mod.time_evaluator(name, dev, number=1, repeat=repeat, min_repeat_ms=int(min_ms))
    res = f(*args)
    return float(np.median(res.results)) * 1e6  # us


def _compile(kern, ks: KernelSet):
    return tvm.compile(tvm.IRModule({kern.name: kern.func}), target=tvm.target.Target(ks.target))


def _default_tvm_matmul(m: int, k: int, n: int, target: dict):
    """The PrimFunc TVM's default pipeline produces for ``R.matmul(x, w_t)`` (legalized, unscheduled)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape=(m, k), dtype="float32"))
    w = relax.Var("w", relax.TensorType(shape=(k, n), dtype="float32"))
    with bb.function("main", [x, w]):
        y = bb.emit(relax.op.matmul(x, w))
        bb.emit_func_output(y)
    mod = relax.transform.LegalizeOps()(bb.get())
    name = next(gv.name_hint for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc))
    func = mod[name].with_attr("global_symbol", name)
    lib = tvm.compile(tvm.IRModule({name: func}), target=tvm.target.Target(target))
    return lib, name


_NUMPY_TIMER = """
import sys, time, numpy as np
m, k, n, repeat, min_ms = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
rng = np.random.default_rng(0)
x = rng.standard_normal((m, k)).astype(np.float32)
wt = np.ascontiguousarray(rng.standard_normal((n, k)).astype(np.float32).T)
times = []
for _ in range(repeat):
    calls, t0 = 0, time.perf_counter()
    while True:
        x @ wt
        calls += 1
        el = time.perf_counter() - t0
        if el * 1e3 >= min_ms:
            break
    times.append(el / calls)
print(float(np.median(times)) * 1e6)
"""


def _numpy_us(m: int, k: int, n: int, repeat: int, min_ms: float, env: dict) -> float:
    """numpy fp32 ``x @ w.T`` timed in a fresh process: TVM's runtime pins this process's main thread,
    which starves OpenBLAS's worker threads (measured 100x slowdowns in-process)."""
    out = subprocess.run(
        [sys.executable, "-c", _NUMPY_TIMER, str(m), str(k), str(n), str(repeat), str(min_ms)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


def measure(m: int, kn: int, ks: KernelSet, repeat: int, min_ms: float) -> dict:
    k = n = kn
    rng = np.random.default_rng(0)
    dev = tvm.cpu()
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    q, s = ref.quantize_weights_int8(w)
    q4, s4 = ref.quantize_weights_int4(w)
    t = lambda a: tvm.runtime.tensor(np.ascontiguousarray(a), dev)  # noqa: E731
    row: dict = {"M": m, "K": k, "N": n}

    kern = ks.dense_int8(m, k, n, Epilogue(), ActQuant("dynamic"))
    lib = _compile(kern, ks)
    args = [t(x), *map(t, kern.const_args(ks.pack_int8(q, s))), t(np.zeros((m, n), np.float32))]
    row["int8_dense_us"] = _time_lib(lib, kern.name, args, repeat, min_ms)

    kern = ks.dense_int8(m, k, n, Epilogue(out_dtype="int32"), ActQuant("int8"))
    lib = _compile(kern, ks)
    xq = rng.integers(-127, 128, (m, k)).astype(np.int8)
    args = [t(xq), *map(t, kern.const_args(ks.pack_int8(q, s))), t(np.zeros((m, n), np.int32))]
    row["int8_gemm_us"] = _time_lib(lib, kern.name, args, repeat, min_ms)

    kern = ks.dense_int4(m, k, n, Epilogue(), ActQuant("dynamic"))
    lib = _compile(kern, ks)
    args = [t(x), *map(t, kern.const_args(ks.pack_int4(q4, s4))), t(np.zeros((m, n), np.float32))]
    row["int4_dense_us"] = _time_lib(lib, kern.name, args, repeat, min_ms)

    kern = ks.dense_fp32(m, k, n)
    lib = _compile(kern, ks)
    args = [t(x), *map(t, kern.const_args(ks.pack_fp32(w))), t(np.zeros((m, n), np.float32))]
    row["fp32_ours_us"] = _time_lib(lib, kern.name, args, repeat, min_ms)

    lib, name = _default_tvm_matmul(m, k, n, ks.target)
    args = [t(x), t(w.T), t(np.zeros((m, n), np.float32))]
    row["fp32_tvm_default_us"] = _time_lib(lib, name, args, repeat, min_ms)

    row["fp32_numpy_us"] = _numpy_us(m, k, n, repeat, min_ms, {})
    row["fp32_numpy_1t_us"] = _numpy_us(m, k, n, repeat, min_ms, {"OPENBLAS_NUM_THREADS": "1"})
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ms", default="1,32", help="comma-separated M values")
    p.add_argument("--kn", default="256,512", help="comma-separated K=N values")
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--min-ms", type=float, default=20.0)
    p.add_argument(
        "--ghz", type=float, default=3.0, help="core clock for the peak (GHz; ~2.98 measured here)"
    )
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    p.add_argument("--ports", type=int, default=2, help="512-bit VNNI ports per core (2 on Xeon SPR/EMR)")
    p.add_argument("--isa", default="avx512vnni", choices=sorted(x86.KERNEL_SETS))
    p.add_argument("--json", default=None, help="also write the rows here")
    a = p.parse_args(argv)
    ks = x86.KERNEL_SETS[a.isa].with_target({"kind": "llvm", "mcpu": x86.host_cpu()})
    core_peak = 64 * a.ports * a.ghz * 1e9  # MAC/s of one core: `ports` vpdpbusd zmm (64 MACs each) per cycle
    threads = int(tvm.get_global_func("runtime.NumThreads")())
    print(
        f"target {ks.target}; TVM runtime threads {threads}; peak {core_peak / 1e9:.0f} GMAC/s per core "
        f"(64 MAC x {a.ports} ports x {a.ghz} GHz), {a.cores} cores"
    )
    print(
        "| M | K=N | int8 dense | int8 GEMM (i8 in, i32 out) | int4 dense | fp32 ours | fp32 TVM default "
        "| fp32 numpy | fp32 numpy 1 thread | int8 dense GMAC/s | % of 1-core peak | % of all-core peak |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for m in map(int, a.ms.split(",")):
        for kn in map(int, a.kn.split(",")):
            r = measure(m, kn, ks, a.repeat, a.min_ms)
            macs = m * kn * kn
            r["int8_gmacs"] = macs / r["int8_dense_us"] / 1e3
            r["int8_core_peak_fraction"] = macs / (r["int8_dense_us"] * 1e-6) / core_peak
            r["int8_gemm_core_peak_fraction"] = macs / (r["int8_gemm_us"] * 1e-6) / core_peak
            rows.append(r)
            us = [r[key] for key in ("int8_dense_us", "int8_gemm_us", "int4_dense_us", "fp32_ours_us")]
            us += [r["fp32_tvm_default_us"], r["fp32_numpy_us"], r["fp32_numpy_1t_us"]]
            print(
                f"| {m} | {kn} | " + " | ".join(f"{v:.2f}" for v in us) + f" | {r['int8_gmacs']:.1f} "
                f"| {100 * r['int8_core_peak_fraction']:.1f} | {100 * r['int8_core_peak_fraction'] / a.cores:.1f} |",
                flush=True,
            )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(
                {"target": ks.target, "threads": threads, "core_peak_macs": core_peak, "rows": rows},
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
