"""Batch-1 fp32 latency of the recurrent zoo models: unrolled recurrence vs one loop kernel per layer
(`tvm_tqs.load(recurrent="loop")`) vs onnxruntime fp32, one thread.

    python benchmarks/recurrent_loop.py [--models etth1_gru etth1_lstm vic_elec_gru] [--repeats 9] [--min-ms 30]

Each TVM variant is ``load`` -> ``passes.fuse.fuse_pipeline`` -> built twice: ``runtime.build`` (TVM's
default lowering, libm exp/tanh, what TQS rollouts run) and ``targets.build.build`` for "x86" (the
artifact build: host schedules and vectorizable exp/tanh/sigmoid). Timing: ``vm["main"]`` on a prepared
input tensor (onnxruntime: ``run_with_iobinding`` with the input bound once) called in a loop for >=
--min-ms, per-call mean; the variants are interleaved round-robin with the order rotated every repeat,
so that load drifts hit them alike; medians and IQR of the repeats. TVM_NUM_THREADS and onnxruntime's
intra-op threads are 1 (set before TVM is imported). Also checks each variant against onnxruntime on
the same input. Writes benchmarks/results/recurrent_loop.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ["TVM_NUM_THREADS"] = "1"
os.environ.setdefault("TVM_BIND_THREADS", "0")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import command_line, machine_env, selected_models, write_results  # noqa: E402

MODELS = ["etth1_gru", "etth1_lstm", "vic_elec_gru"]
MODES = ("unroll", "loop")
BUILDS = ("runtime", "artifact")


def _tvm_variants(path: Path, x: np.ndarray) -> dict:
    import tvm
    from tvm import relax

    import tvm_tqs
    from tvm_tqs.passes.fuse import fuse_pipeline
    from tvm_tqs.runtime import build as runtime_build
    from tvm_tqs.targets.build import build as artifact_build

    variants = {}
    for mode in MODES:
        start = time.perf_counter()
        fused = fuse_pipeline()(tvm_tqs.load(path, recurrent=mode))
        calls = str(fused["main"]).count("R.call_tir")
        for how, builder in (("runtime", runtime_build), ("artifact", artifact_build)):
            vm = relax.VirtualMachine(builder(fused, "x86"), tvm.cpu())
            fn, arg = vm["main"], tvm.runtime.tensor(x)
            out = fn(arg)
            first = out if isinstance(out, tvm.runtime.Tensor) else out[0]
            variants[f"tvm {how} {mode}"] = {
                "call": (lambda fn=fn, arg=arg: fn(arg)),
                "output": first.numpy(),
                "calls": calls,
                "build_s": round(time.perf_counter() - start, 1),
            }
    return variants


def _ort_variant(path: Path, x: np.ndarray) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    binding = sess.io_binding()
    binding.bind_cpu_input(sess.get_inputs()[0].name, x)
    for out in sess.get_outputs():
        binding.bind_output(out.name)
    sess.run_with_iobinding(binding)
    reference = binding.copy_outputs_to_cpu()[0]
    return {"ort fp32": {"call": lambda: sess.run_with_iobinding(binding), "output": reference}}


def _per_call_us(call, min_ms: float) -> float:
    calls, start = 0, time.perf_counter()
    while True:
        call()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed * 1e3 >= min_ms:
            return elapsed / calls * 1e6


def measure(path: Path, repeats: int, min_ms: float) -> dict:
    name = path.stem
    import onnxruntime as ort

    inp = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([1, *inp.shape[1:]]).astype(np.float32)
    variants = {**_ort_variant(path, x), **_tvm_variants(path, x)}
    reference = variants["ort fp32"]["output"]
    samples = {k: [] for k in variants}
    order = list(variants)
    for _ in range(3):  # warm-up: caches, lazy initialisation
        for k in order:
            variants[k]["call"]()
    for r in range(repeats):
        for k in order[r % len(order) :] + order[: r % len(order)]:
            samples[k].append(_per_call_us(variants[k]["call"], min_ms))
    rows = {}
    for k, v in variants.items():
        q1, med, q3 = np.percentile(samples[k], [25, 50, 75])
        rows[k] = {
            "median_us": round(float(med), 1),
            "iqr_us": [round(float(q1), 1), round(float(q3), 1)],
            "max_abs_err_vs_ort": float(np.abs(v["output"] - reference).max()),
            "call_tir_sites": v.get("calls"),
            "load_fuse_build_s": v.get("build_s"),
        }
    print(name, {k: r["median_us"] for k, r in rows.items()}, flush=True)
    return rows


def _markdown(results: dict, args) -> str:
    lines = [
        "# Recurrent layers as loop kernels: batch-1 fp32 latency, 1 thread",
        "",
        f"Command: `{command_line('recurrent_loop.py')}`; {args.repeats} interleaved repeats of >= "
        f"{args.min_ms} ms each, median (IQR) in us per call. `runtime`: `tvm_tqs.runtime.build` (libm); "
        "`artifact`: `targets.build.build(..., 'x86')` (schedules, fast math). Max abs error vs onnxruntime "
        "on the same random window.",
        "",
        "| model | variant | call_tir sites | median us | IQR | vs ORT | max abs err |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, rows in results.items():
        ort_us = rows["ort fp32"]["median_us"]
        for k, r in rows.items():
            lines.append(
                f"| {model} | {k} | {r['call_tir_sites'] or '-'} | {r['median_us']} | "
                f"{r['iqr_us'][0]}-{r['iqr_us'][1]} | {r['median_us'] / ort_us:.2f}x | {r['max_abs_err_vs_ort']:.1e} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--min-ms", type=float, default=30.0)
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    results = {path.stem: measure(path, args.repeats, args.min_ms) for path in selected_models(args.models)}
    payload = {"command": command_line("recurrent_loop.py"), "machine": machine_env(), "results": results}
    write_results(args.out, "recurrent_loop", payload, _markdown(results, args))


if __name__ == "__main__":
    main()
