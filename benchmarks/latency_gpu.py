"""GPU latency of every zoo model: tvm_tqs int8 and mixed plans against TVM fp32 / fp16 (dlight) and PyTorch
eager fp32 / fp16, at batch 1 and 64, with every variant's numerics against the fp32 reference.

    python benchmarks/latency_gpu.py [--target cuda/sm_90] [--budget size=25%] [--batches 1,64]
                                     [--repeats 9] [--min-ms 40] [--models NAME ...] [--device-id 0]
    python benchmarks/latency_gpu.py --prepare DIR [...]   # build only (any machine, no GPU)
    python benchmarks/latency_gpu.py --from DIR [...]      # measure only (the GPU machine)
    python benchmarks/latency_gpu.py --dry-run [...]       # build everything for the target, run nothing

Without --prepare / --from both happen in one run. Splitting them keeps the GPU machine's time for
measuring: building (dlight on every PrimFunc, TQS for the mixed plans) takes minutes per recurrent
model, and DIR (libraries holding CUDA C, compiled by NVRTC when loaded; inputs; fp32 references; torch
weights) is all the GPU machine needs besides TVM's runtime, numpy and PyTorch.

Variants (all on the same GPU, one process):

- ``tvm_fp32`` / ``tvm_fp16``: TVM's own GPU path: the imported Relax module (fp16: TVM's
  ``ToMixedPrecision(out_dtype="float16")``, fp16 compute and storage, fp32 model inputs and outputs),
  fused, every PrimFunc scheduled by dlight's default GPU rules (`targets.gpu.schedule`), ``tvm.compile``;
- ``tqs_int8``: ``tvm_tqs.compile(model, target, uniform="int8")`` (the GPU kernel set's ``__dp4a``
  kernels where a site has one, dlight elsewhere);
- ``tqs_mixed``: the plan ``tvm_tqs.compile(model, target, budget=--budget)`` solves at batch 1 (TQS + the
  solver), built at each batch with ``plan=``;
- ``torch_fp32`` / ``torch_fp16``: the zoo's torch module (benchmarks/zoo/models.py, recipe of
  benchmarks/zoo/build.py) in eager mode under ``torch.inference_mode()``, fp16 by ``.half()``. The zoo
  keeps no torch checkpoints: the trained weights are recovered from the committed ONNX file (every
  parameter is set to a unique marker, the module is exported as the zoo exports it, and each marker's
  position in the exported initializers names the committed value to read), then checked against
  onnxruntime; when that fails the module keeps random weights, the table says so, and its numerics are
  not reported.

Timing: per (model, batch) every variant is warmed up, then measured in --repeats rounds, variants
interleaved round-robin (the order rotates every round) so that clock and load drifts hit them alike.
One measurement calls the variant back to back, N calls between two device synchronisations, N grown
until the N calls last >= --min-ms; per-call time = elapsed / N (launch overhead included, on both
sides: TVM's ``vm["main"](x)`` on a device tensor, torch's ``model(x)`` on a CUDA tensor). Medians and
IQR over the rounds.

Numerics: relative L2 distance and max abs error of each variant's output (the timing input: N(0,1)
windows, seed 0) to the fp32 reference: onnxruntime (CPU) on the committed ONNX file, computed when
preparing.

Writes benchmarks/results/latency_gpu.{json,md} naming the GPU. Measuring exits with status 2 and a
message when the target's device is not here (no CUDA GPU), before building anything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))


BATCHES = (1, 64)
VARIANTS = ("tvm_fp32", "tvm_fp16", "tqs_int8", "tqs_mixed", "torch_fp32", "torch_fp16")
TVM_VARIANTS = VARIANTS[:4]
TORCH_VARIANTS = VARIANTS[4:]
LABELS = {
    "tvm_fp32": "TVM fp32 (dlight)",
    "tvm_fp16": "TVM fp16 (dlight)",
    "tqs_int8": "tvm_tqs int8",
    "tqs_mixed": "tvm_tqs mixed",
    "torch_fp32": "PyTorch fp32",
    "torch_fp16": "PyTorch fp16",
}
# Markers for the weight recovery: unique float32 integers (exact below 2**24), far from the small
# integers that appear as graph constants (1.0, 2.0, ...).
_MARKER_BASE = 2**20
_WEIGHTS_TOL = 1e-3  # relative L2 of the rebuilt torch module vs onnxruntime that counts as "trained weights"
EXIT_NO_DEVICE = 2
MANIFEST_FORMAT = "tvm_tqs.latency_gpu.prepared"


# ----------------------------------------------------------------------------------------------------
# building: TVM variants


def _device_code(executable) -> list[str]:
    """Kinds of the code modules in an executable (a GPU build holds ``cuda`` next to ``llvm``)."""
    kinds, todo = [], list(executable.mod.imports)
    while todo:
        m = todo.pop()
        kinds.append(str(m.kind))
        todo.extend(m.imports)
    return sorted(set(kinds))


def _tvm_dlight(path: Path, batch: int, spec, fp16: bool):
    """TVM's own GPU build: import, (fp16), fuse, dlight on every PrimFunc, compile."""
    import tvm
    from tvm import relax

    from tvm_tqs.frontend.load import load
    from tvm_tqs.graph import fuse
    from tvm_tqs.targets import gpu

    mod = load(str(path), {"batch": batch})
    if fp16:
        mod = relax.transform.ToMixedPrecision(out_dtype="float16")(mod)
    mod = gpu.schedule(fuse(mod), spec)  # raises if a PrimFunc stays unbound (it would run on the host)
    return tvm.compile(mod, target=spec.target()), {}


def _tqs(path: Path, batch: int, spec, *, uniform=None, plan=None):
    import tvm_tqs

    compiled = tvm_tqs.compile(str(path), target=spec.name, uniform=uniform, plan=plan, batch=batch)
    return compiled.executable, {"plan": compiled.plan.counts()}


def _mixed_plan(path: Path, spec, budget: str, horizon: int, seeds: int) -> tuple[dict, dict, object]:
    """The plan the solver picks under `budget` at batch 1: ``({site: precision}, info, its batch-1 build)``."""
    import tvm_tqs

    t = time.perf_counter()
    compiled = tvm_tqs.compile(
        str(path), target=spec.name, budget=budget, batch=1, horizon=horizon, seeds=seeds
    )
    info = {
        "budget": budget,
        "solve_s": round(time.perf_counter() - t, 1),
        "counts": compiled.plan.counts(),
        "method": compiled.plan.method,
    }
    return dict(compiled.plan.precisions), info, compiled.executable


# ----------------------------------------------------------------------------------------------------
# building: torch eager from the zoo builders, trained weights recovered from the ONNX file


def _zoo_build():
    """benchmarks/zoo/build.py (recipes, export); it pins BLAS threads to 1 on import: undone here."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in names}
    sys.path.insert(0, str(HERE / "zoo"))
    try:
        import build as zbuild
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return zbuild


def _torch_module(path: Path, reference_x: np.ndarray, reference_y: np.ndarray | None):
    """The zoo's torch module of `path` (CPU, eval), a note on its weights, and its constructor arguments.

    Trained weights are recovered from the committed ONNX file: each parameter element is set to a unique
    marker, the module is exported with the zoo's own exporter, and every marker found in the exported
    initializers (transposed, gate-reordered or concatenated as the exporter does) points at the element
    of the committed initializer at the same position. Parameters the exporter folds away stay zero
    (they do not reach the output). The result is checked against `reference_y` (onnxruntime on
    `reference_x`); when recovery fails or misses, the module keeps its seeded random weights.
    """
    import json

    import onnx
    import torch
    from onnx import numpy_helper

    zbuild = _zoo_build()
    recipe = zbuild.ZOO[path.stem]
    args = {
        "arch": recipe.arch,
        "lookback": recipe.lookback,
        "horizon": recipe.horizon,
        "channels": len(json.loads(path.with_suffix(".json").read_text())["channels"]),
        "kw": dict(recipe.kw),
    }

    def fresh():
        torch.manual_seed(0)
        a = args
        return zbuild.zmodels.build(a["arch"], a["lookback"], a["horizon"], a["channels"], **a["kw"]).eval()

    model = fresh()
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    try:
        if _MARKER_BASE + total >= 2**24:
            raise ValueError(f"{total} parameters: too many for float32 markers")
        with torch.no_grad():
            offset = _MARKER_BASE
            for p in params:
                p.copy_(torch.arange(offset, offset + p.numel(), dtype=torch.float32).reshape(p.shape))
                offset += p.numel()
        example = np.zeros((1, recipe.lookback, args["channels"]), np.float32)
        marked = [numpy_helper.to_array(t) for t in zbuild.export(model, recipe, example).graph.initializer]
        committed = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
        values = np.zeros(total, np.float32)
        for m, c in zip(marked, committed, strict=False):
            if m.shape != c.shape or m.dtype.kind != "f":
                continue
            ids = m.astype(np.float64).ravel()
            hit = (ids >= _MARKER_BASE) & (ids < _MARKER_BASE + total) & (ids == np.round(ids))
            values[ids[hit].astype(np.int64) - _MARKER_BASE] = c.ravel()[hit]
        with torch.no_grad():
            offset = 0
            for p in params:
                p.copy_(torch.from_numpy(values[offset : offset + p.numel()]).reshape(p.shape))
                offset += p.numel()
            out = model(torch.from_numpy(reference_x)).numpy()
    except Exception as err:  # noqa: BLE001 - no exporter (onnxscript for FITS), another torch: random weights
        return (
            fresh(),
            {"weights": "random", "why": f"recovery failed: {type(err).__name__}: {err}"[:300]},
            args,
        )
    if reference_y is None:
        return model, {"weights": "recovered (unchecked: no onnxruntime)"}, args
    rel = float(np.linalg.norm(out - reference_y) / np.linalg.norm(reference_y))
    if rel > _WEIGHTS_TOL:
        return fresh(), {"weights": "random", "why": f"recovered weights off by {rel:.2e} (rel L2)"}, args
    return model, {"weights": "trained (recovered from the ONNX file)", "rel_l2_vs_onnxruntime": rel}, args


# ----------------------------------------------------------------------------------------------------
# reference and numerics


def _reference(path: Path, x: np.ndarray) -> np.ndarray | None:
    """fp32 reference output: onnxruntime (CPU) on the committed ONNX file; None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _error_text(err: Exception) -> str:
    """One line for the tables: TVM's errors end with their message, after a long C++ backtrace."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[-1] if lines else ''}"[:500]


def _errors(out: np.ndarray, ref: np.ndarray | None) -> dict:
    if ref is None:
        return {}
    out = np.asarray(out, dtype=np.float32)
    return {
        "rel_l2": float(np.linalg.norm(out - ref) / np.linalg.norm(ref)),
        "max_abs": float(np.max(np.abs(out - ref))),
        "finite": bool(np.all(np.isfinite(out))),
    }


# ----------------------------------------------------------------------------------------------------
# measuring


def _time(fn, sync, min_s: float) -> float:
    """Per-call microseconds of `fn` called back to back between two syncs, for >= `min_s` in all."""
    n = 1
    while True:
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        elapsed = time.perf_counter() - t0
        if elapsed >= min_s:
            return elapsed / n * 1e6
        # Grow towards min_s in one step when the calls are regular, at least doubling.
        n = max(2 * n, int(n * 1.2 * min_s / max(elapsed, 1e-9)))


def _tvm_runner(executable, dev, x: np.ndarray):
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(executable, dev)
    main, xt = vm["main"], tvm.runtime.tensor(x, dev)

    def output() -> np.ndarray:
        out = main(xt)
        return (out[0] if isinstance(out, (list, tuple)) else out).numpy()

    return (lambda: main(xt)), dev.sync, output


def _torch_runner(model, x: np.ndarray, fp16: bool, device_id: int):
    import copy

    import torch

    dev = torch.device("cuda", device_id)
    model = copy.deepcopy(model).to(dev)  # .to() and .half() work in place: keep the CPU fp32 original
    xt = torch.from_numpy(x).to(dev)
    if fp16:
        model, xt = model.half(), xt.half()

    def sync():
        torch.cuda.synchronize(dev)

    # Called under torch.inference_mode() (see `measure`): no autograd bookkeeping, as in deployment.
    return (lambda: model(xt)), sync, (lambda: model(xt).float().cpu().numpy())


def _measure(fns: dict, repeats: int, min_ms: float) -> dict[str, list[float]]:
    names = list(fns)
    for v in names:  # warm-up: module loading (NVRTC), first-call allocations, clocks up
        _time(*fns[v][:2], 0.05)
    times = {v: [] for v in names}
    for r in range(repeats):
        for v in names[r % len(names) :] + names[: r % len(names)]:
            times[v].append(_time(*fns[v][:2], min_ms / 1000))
    return times


# ----------------------------------------------------------------------------------------------------
# preparing (any machine): every variant built and exported, torch weights, inputs and references


def _prepare_model(path: Path, args, spec, work: Path) -> dict:
    """Build and export every variant of one model at every batch into `work`; its manifest entry."""
    import onnx

    from tvm_tqs.rollout import RolloutSpec

    rspec = RolloutSpec.from_onnx(onnx.load(str(path)))
    entry = {"model": path.stem, "batches": {}, "torch": None, "mixed": None}
    plan = solved = None
    if "tqs_mixed" in args.variants:
        try:
            plan, entry["mixed"], solved = _mixed_plan(path, spec, args.budget, args.horizon, args.seeds)
        except Exception as err:  # noqa: BLE001 - the other variants still run
            entry["mixed"] = {"error": f"{type(err).__name__}: {err}"[:500]}
    for batch in args.batches:
        x = np.random.default_rng(0).standard_normal((batch, *rspec.window_shape)).astype(np.float32)
        ref = _reference(path, x)
        stem = f"{path.stem}_b{batch}"
        np.save(work / f"{stem}_x.npy", x)
        if ref is not None:
            np.save(work / f"{stem}_ref.npy", ref)
        if entry["torch"] is None and any(v in args.variants for v in TORCH_VARIANTS):
            entry["torch"] = _prepare_torch(path, x, ref, work)
        variants = {}
        for v in (v for v in TVM_VARIANTS if v in args.variants):
            t = time.perf_counter()
            try:
                if v in ("tvm_fp32", "tvm_fp16"):
                    exe, info = _tvm_dlight(path, batch, spec, fp16=v == "tvm_fp16")
                elif v == "tqs_int8":
                    exe, info = _tqs(path, batch, spec, uniform="int8")
                elif plan is None:
                    raise RuntimeError(f"no mixed plan: {entry['mixed'].get('error', '?')}")
                elif batch == 1:  # solved at batch 1: that build is this variant
                    exe, info = solved, {"plan": entry["mixed"]["counts"]}
                else:
                    exe, info = _tqs(path, batch, spec, plan=plan)
                code = _device_code(exe)
                if spec.kind not in code:
                    raise RuntimeError(
                        f"the build holds no {spec.kind} code ({code}): it would run on the host"
                    )
                lib = f"{stem}_{v}.so"
                exe.export_library(str(work / lib))
                variants[v] = {"lib": lib, "build_s": round(time.perf_counter() - t, 2), "code": code, **info}
            except Exception as err:  # noqa: BLE001 - one variant failing must not hide the others
                variants[v] = {"error": _error_text(err)}
        entry["batches"][str(batch)] = {
            "input": f"{stem}_x.npy",
            "reference": f"{stem}_ref.npy" if ref is not None else None,
            "variants": variants,
        }
        print(
            f"  {path.stem} b{batch}: built "
            + ", ".join(f"{v} {b.get('build_s', 'FAILED')}" for v, b in variants.items()),
            flush=True,
        )
    return entry


def _prepare_torch(path: Path, x: np.ndarray, ref: np.ndarray | None, work: Path) -> dict:
    """The zoo module's constructor arguments and its weights (``<model>_torch.npz``), or why there are none."""
    try:
        model, note, build_args = _torch_module(path, x, ref)
    except Exception as err:  # noqa: BLE001 - no torch, no recipe: TVM variants only
        return {"weights": "none", "why": f"{type(err).__name__}: {err}"[:300]}
    state = f"{path.stem}_torch.npz"
    np.savez(work / state, **{k: v.detach().numpy() for k, v in model.state_dict().items()})
    return {**note, "state": state, "build": build_args}


def prepare(args, spec, work: Path) -> dict:
    """Build everything for the target into `work` (no GPU needed); writes and returns the manifest."""
    import tvm
    from common import selected_models  # imports tvm_tqs: not on the measuring-only path

    work.mkdir(parents=True, exist_ok=True)
    models, failures = [], {}
    for path in selected_models(args.models):
        print(f"== {path.stem}", flush=True)
        try:
            models.append(_prepare_model(path, args, spec, work))
        except Exception as err:  # noqa: BLE001 - one model failing must not hide the others
            failures[path.stem] = f"{type(err).__name__}: {err}"[:500]
            traceback.print_exc()
    manifest = {
        "format": MANIFEST_FORMAT,
        "target": spec.name,
        "settings": {
            "budget": args.budget,
            "batches": args.batches,
            "variants": args.variants,
            "tqs": {"horizon": args.horizon, "seeds": args.seeds},
        },
        "build_env": {"cpu": _cpu_name(), "cores": os.cpu_count(), "tvm": tvm.__version__},
        "models": models,
        "failures": failures,
    }
    (work / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


# ----------------------------------------------------------------------------------------------------
# measuring (the GPU machine): load what `prepare` wrote, time it, compare the outputs


def _torch_from(entry: dict, work: Path):
    """The torch module of a manifest entry with its saved weights (CPU), or None."""
    info = entry.get("torch") or {}
    if "state" not in info:
        return None
    import torch

    sys.path.insert(0, str(HERE / "zoo"))
    import models as zmodels

    b = info["build"]
    model = zmodels.build(b["arch"], b["lookback"], b["horizon"], b["channels"], **b["kw"])
    with np.load(work / info["state"]) as state:
        model.load_state_dict({k: torch.from_numpy(state[k]) for k in state.files})
    return model.eval()


def _inference_mode():
    try:
        import torch
    except ImportError:
        return contextlib.nullcontext()
    return torch.inference_mode()


def measure(manifest: dict, work: Path, args, dev) -> list[dict]:
    """Time and check every prepared variant on `dev` (and torch on the same GPU); results per model."""
    with _inference_mode():
        return _measure_all(manifest, work, args, dev)


def _runners(entry: dict, b: dict, work: Path, args, dev, torch_model, x) -> tuple[dict, dict, dict]:
    """Every variant of one (model, batch) ready to time: ``(runners, first outputs, errors)``.

    A variant that cannot load (NVRTC refusing the CUDA C) or run (cuFFT has no fp16 for FITS's sizes)
    is reported and left out; the others are still measured.
    """
    import tvm

    makers = {
        v: (lambda info=info: _tvm_runner(tvm.runtime.load_module(str(work / info["lib"])), dev, x))
        for v, info in b["variants"].items()
        if "lib" in info
    }
    if torch_model is not None:
        for v in (v for v in TORCH_VARIANTS if v in args.variants):
            makers[v] = lambda v=v: _torch_runner(torch_model, x, v == "torch_fp16", args.device_id)
    fns, outputs, errors = {}, {}, {}
    for v, make in makers.items():
        try:
            fns[v] = make()
            outputs[v] = fns[v][2]()  # also the first call: compiles and loads the kernels
        except Exception as err:  # noqa: BLE001 - one variant failing must not hide the others
            fns.pop(v, None)
            errors[v] = _error_text(err)
            print(f"  {entry['model']} {v}: FAILED {errors[v]}", flush=True)
    return fns, outputs, errors


def _measure_all(manifest: dict, work: Path, args, dev) -> list[dict]:
    args.variants = manifest["settings"]["variants"]
    results = []
    for entry in manifest["models"]:
        torch_model = _torch_from(entry, work) if args.torch_cuda else None
        trained = (entry.get("torch") or {}).get("weights", "").startswith("trained")
        out = {"model": entry["model"], "batches": {}}
        for batch, b in entry["batches"].items():
            x = np.load(work / b["input"])
            ref = np.load(work / b["reference"]) if b["reference"] else None
            fns, outputs, errors = _runners(entry, b, work, args, dev, torch_model, x)
            numerics = {v: _errors(y, ref) for v, y in outputs.items()}
            for v in numerics:
                if v in TORCH_VARIANTS and not trained:
                    numerics[v] = {"note": "random weights: not comparable"}
            times = _measure(fns, args.repeats, args.min_ms)
            out["batches"][batch] = {"times_us": times, "numerics": numerics, "errors": errors}
            print(
                f"  {entry['model']} b{batch}: "
                + ", ".join(f"{v} {np.median(t):.1f} us" for v, t in times.items()),
                flush=True,
            )
        results.append(out)
    return results


# ----------------------------------------------------------------------------------------------------
# report


def _iqr(a) -> float:
    q1, q3 = np.percentile(a, [25, 75])
    return float(q3 - q1)


def _rows(results: list[dict]) -> list[dict]:
    rows = []
    for res in results:
        for batch, b in res["batches"].items():
            med = {v: float(np.median(t)) for v, t in b["times_us"].items()}
            row = {
                "model": res["model"],
                "batch": int(batch),
                "median_us": med,
                "iqr_us": {v: _iqr(t) for v, t in b["times_us"].items()},
                "numerics": b["numerics"],
            }
            tqs = [med[v] for v in ("tqs_int8", "tqs_mixed") if v in med]
            for base in ("tvm_fp16", "torch_fp16", "torch_fp32"):
                if tqs and base in med:
                    row[f"best_tqs_speedup_vs_{base}"] = med[base] / min(tqs)
            rows.append(row)
    return rows


def _fmt(us: float) -> str:
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.1f}"


def markdown(payload: dict) -> str:
    env = payload["env"]
    s = payload["settings"]
    ran = "measuring only" if s.get("prepared_elsewhere") else "builds, plans and measurements"
    lines = [
        f"# GPU latency: tvm_tqs vs TVM (dlight) vs PyTorch eager on {env['gpu']}",
        "",
        f"`{payload['command']}`",
        "",
        f"{env['gpu']} (compute {env.get('compute_version', '?')}, target `{s['target']}`), host {env['cpu']}; "
        f"TVM {env['tvm']}, PyTorch {env.get('torch', '-')} (CUDA {env.get('torch_cuda', '-')}), Python "
        f"{env['python']}. Time on the GPU machine ({ran}): {env.get('wall_s', '?')} s.",
        "",
        f"Median microseconds per call (IQR in the JSON) of {s['repeats']} interleaved rounds, each >= "
        f"{s['min_ms']} ms of back-to-back calls between two device synchronisations; `ms` where noted. "
        f"Mixed plan: the solver's plan under `{s['budget']}` (TQS, batch 1), built at each batch. "
        "Speed-up columns: the faster of tvm_tqs int8 / mixed against TVM fp16 and PyTorch fp16 / fp32.",
        "",
    ]
    cols = [v for v in VARIANTS if any(v in r["median_us"] for r in payload["rows"])]
    lines.append(
        "| model | batch | "
        + " | ".join(LABELS[c] for c in cols)
        + " | tqs vs TVM fp16 | tqs vs torch fp16 | tqs vs torch fp32 |"
    )
    lines.append("|---|---|" + "---|" * (len(cols) + 3))
    for r in payload["rows"]:
        cells = [_fmt(r["median_us"][c]) if c in r["median_us"] else "-" for c in cols]
        speed = [
            f"{r[k]:.2f}x" if k in r else "-"
            for k in (
                "best_tqs_speedup_vs_tvm_fp16",
                "best_tqs_speedup_vs_torch_fp16",
                "best_tqs_speedup_vs_torch_fp32",
            )
        ]
        lines.append(f"| {r['model']} | {r['batch']} | " + " | ".join(cells + speed) + " |")
    lines += [
        "",
        "## Numerics",
        "",
        "Relative L2 distance (max abs error) of each variant's output to the fp32 reference (onnxruntime, "
        "CPU, committed ONNX file) on the timing input (N(0,1) windows, seed 0).",
        "",
        "| model | batch | " + " | ".join(LABELS[c] for c in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for r in payload["rows"]:
        cells = []
        for c in cols:
            e = r["numerics"].get(c, {})
            cells.append(f"{e['rel_l2']:.1e} ({e['max_abs']:.1e})" if "rel_l2" in e else e.get("note", "-"))
        lines.append(f"| {r['model']} | {r['batch']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Builds",
        "",
        f"Build seconds per variant (prepared on {payload['build_env']['cpu']}, {payload['build_env']['cores']} "
        "cores; the GPU machine only loads and times them); mixed plan: precisions of the weighted sites; "
        "torch: where its weights came from.",
        "",
        "| model | batch | "
        + " | ".join(LABELS[c] for c in TVM_VARIANTS)
        + " | mixed plan | torch weights |",
        "|---|---|" + "---|" * (len(TVM_VARIANTS) + 2),
    ]
    for entry in payload["models"]:
        mixed = entry.get("mixed") or {}
        plan = ", ".join(f"{k} {n}" for k, n in sorted(mixed.get("counts", {}).items())) or mixed.get(
            "error", "-"
        )
        weights = (entry.get("torch") or {}).get("weights", "-")
        for batch, b in entry["batches"].items():
            v = b["variants"]
            cells = [str(v[c].get("build_s", "FAILED")) if c in v else "-" for c in TVM_VARIANTS]
            lines.append(f"| {entry['model']} | {batch} | " + " | ".join(cells) + f" | {plan} | {weights} |")
    failed = _build_failures(payload["models"])
    if failed:
        lines += ["", "## Variants that failed to build", ""] + [f"- {line}" for line in failed]
    ran = [
        f"- {r['model']} b{batch} {LABELS[v]}: {err}"
        for r in payload.get("raw", [])
        for batch, b in r["batches"].items()
        for v, err in b.get("errors", {}).items()
    ]
    if ran:
        lines += ["", "## Variants that failed to load or run", ""] + ran
    return "\n".join(lines) + "\n"


def _build_failures(models: list[dict]) -> list[str]:
    return [
        f"{entry['model']} b{batch} {LABELS[v]}: {info['error']}"
        for entry in models
        for batch, b in entry["batches"].items()
        for v, info in b["variants"].items()
        if "error" in info
    ]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------------------------------


def _env(dev, device_id: int, torch_cuda: bool) -> dict:
    import tvm

    env = {
        "cpu": _cpu_name(),
        "tvm": tvm.__version__,
        "python": platform.python_version(),
        "gpu": str(dev.device_name),
        "compute_version": str(dev.compute_version),
        "device": f"cuda:{device_id}",
    }
    try:
        import torch

        env.update(torch=torch.__version__, torch_cuda=str(torch.version.cuda), torch_sees_gpu=torch_cuda)
    except ImportError:
        env["torch"] = "not installed"
    return env


def _parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="cuda/sm_90", help="registered CUDA target (default cuda/sm_90)")
    ap.add_argument("--budget", default="size=25%", help="budget of the mixed plan (default size=25%%)")
    ap.add_argument("--batches", default=",".join(str(b) for b in BATCHES))
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--min-ms", type=float, default=40.0)
    ap.add_argument("--models", nargs="*")
    ap.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS)
    )
    ap.add_argument("--horizon", type=int, default=96, help="TQS horizon of the mixed plan")
    ap.add_argument("--seeds", type=int, default=8, help="TQS seeds of the mixed plan")
    ap.add_argument("--device-id", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--prepare", metavar="DIR", help="only build everything into DIR (no GPU needed)")
    mode.add_argument(
        "--from", dest="from_dir", metavar="DIR", help="only measure what --prepare built in DIR"
    )
    mode.add_argument(
        "--dry-run", action="store_true", help="build every variant for the target, measure nothing"
    )
    args = ap.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",") if b]
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    return args


def _gpu(target: str, device_id: int, prepared: bool):
    """This machine's CUDA device for `target`, or None after printing why there is none.

    Measuring prepared builds (`prepared`) asks TVM alone: the GPU machine may have TVM's runtime and no
    tvm_tqs dependencies (xgboost, scipy, tqdm). Otherwise `tvm_tqs.latency.devices` also checks that the
    target's host code is for this machine.
    """
    import tvm

    if prepared:
        reason = None
        if not tvm.runtime.enabled("cuda"):
            reason = "TVM's cuda runtime is not available here (tvm.runtime.enabled('cuda') is False)"
        elif not tvm.cuda(device_id).exist:
            reason = f"this machine has no cuda:{device_id}"
    else:
        from tvm_tqs.latency.devices import why_not_runnable

        reason = why_not_runnable(target, device_id)
    if reason is None:
        return tvm.cuda(device_id)
    print(
        f"latency_gpu.py measures on this machine's CUDA GPU, and target '{target}' cannot run here: "
        f"{reason}. Run it on the GPU machine (--device-id picks the GPU); --prepare DIR / --dry-run "
        "build every variant without one.",
        file=sys.stderr,
    )
    return None


def _write(out: str, payload: dict, failures: dict) -> None:
    """benchmarks/common.py's result files; without tvm_tqs's dependencies (a bare GPU machine), the same
    files written here."""
    text = markdown(payload)
    try:
        from common import write_results
    except ImportError:
        if failures:
            text += (
                "\n## Models that failed\n\n" + "\n".join(f"- {k}: {v}" for k, v in failures.items()) + "\n"
            )
        Path(out).mkdir(parents=True, exist_ok=True)
        for name, content in (("latency_gpu.json", json.dumps(payload, indent=1)), ("latency_gpu.md", text)):
            tmp = Path(out) / f".{name}.tmp"
            tmp.write_text(content)
            os.replace(tmp, Path(out) / name)
        print(f"wrote {Path(out) / 'latency_gpu'}.md and .json")
        return
    write_results(out, "latency_gpu", payload, text, failures)


def _report_prepared(manifest: dict, what: str) -> None:
    built = sum(
        "lib" in info
        for e in manifest["models"]
        for b in e["batches"].values()
        for info in b["variants"].values()
    )
    failed = _build_failures(manifest["models"])
    print(
        f"{what} for {manifest['target']}: {built} TVM builds with cuda code, {len(failed)} failed; nothing measured"
    )
    print(
        "torch modules: "
        + str({e["model"]: (e.get("torch") or {}).get("weights") for e in manifest["models"]})
    )
    for line in failed + [f"{k}: {v}" for k, v in manifest["failures"].items()]:
        print(f"  FAILED {line}")


def main(argv=None) -> int:
    args = _parse(argv)
    manifest = spec = None
    if args.from_dir:  # measuring only: no tvm_tqs import (see `_gpu`)
        manifest = json.loads((Path(args.from_dir) / "manifest.json").read_text())
        if manifest.get("format") != MANIFEST_FORMAT:
            print(f"{args.from_dir} holds no latency_gpu.py --prepare output", file=sys.stderr)
            return 1
        args.target = manifest["target"]
    else:
        from tvm_tqs.targets.registry import get_target

        spec = get_target(args.target)
        if spec.kind != "cuda":
            print(
                f"latency_gpu.py compares with PyTorch on CUDA: '{spec.name}' is not a CUDA target",
                file=sys.stderr,
            )
            return EXIT_NO_DEVICE
    if args.prepare or args.dry_run:
        if args.prepare:
            _report_prepared(prepare(args, spec, Path(args.prepare)), f"prepared {args.prepare}")
            return 0
        with tempfile.TemporaryDirectory(prefix="tqs_latency_gpu_") as tmp:
            _report_prepared(prepare(args, spec, Path(tmp)), "dry run")
        return 0
    dev = _gpu(args.target, args.device_id, bool(args.from_dir))  # before any build: no GPU, no work
    if dev is None:
        return EXIT_NO_DEVICE
    try:
        import torch

        args.torch_cuda = bool(torch.cuda.is_available())
    except ImportError:
        args.torch_cuda = False
    t_run = time.time()
    with tempfile.TemporaryDirectory(prefix="tqs_latency_gpu_") as tmp:
        work = Path(args.from_dir) if args.from_dir else Path(tmp)
        if not args.from_dir:
            manifest = prepare(args, spec, work)
        results = measure(manifest, work, args, dev)
    env = _env(dev, args.device_id, args.torch_cuda)
    env["wall_s"] = round(time.time() - t_run, 1)
    payload = {
        "command": "python benchmarks/latency_gpu.py" + "".join(f" {a}" for a in sys.argv[1:]),
        "env": env,
        "build_env": manifest["build_env"],
        "settings": {
            "target": args.target,
            **manifest["settings"],
            "repeats": args.repeats,
            "min_ms": args.min_ms,
            "prepared_elsewhere": bool(args.from_dir),
        },
        "rows": _rows(results),
        "models": manifest["models"],
        "raw": results,
    }
    _write(args.out, payload, manifest["failures"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
