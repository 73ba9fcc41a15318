"""What does the Python API add to a call? `CompiledModel.run` vs the VM's own time, and onnxruntime's
`InferenceSession.run` vs its I/O-bound run, batch 1, one thread, on every zoo model.

    python benchmarks/run_overhead.py [--models NAME ...] [--calls N] [--repeats R] [--out benchmarks/results]

Per model, all-int8 for this host (``compile(model, "x86", uniform="int8")``) and the fp32 ONNX file in
onnxruntime (1 intra-op thread, ORT_ENABLE_ALL), timed in one process, interleaved: R rounds, each timing N
calls of every variant back to back; the median over rounds of the per-call mean:

- ``vm``: ``vm["main"](tensor)`` with the input tensor made once (the engine's time);
- ``run``: ``CompiledModel.run(x)`` on a numpy array (what a user calls), outputs as numpy;
- ``ort iobinding``: ``run_with_iobinding`` with bound input and output (onnxruntime's engine time);
- ``ort run``: ``InferenceSession.run(None, {name: x})`` (its public API).

Overhead = run - vm (the issue's goal: <= 3 us) and ort run - ort iobinding. The fresh input array is the
same object every call (the copy into the model's buffer is part of `run`'s cost).
"""

from __future__ import annotations

import os

os.environ.setdefault("TVM_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from common import command_line, machine_env, per_model, selected_models, write_results  # noqa: E402

HERE = Path(__file__).resolve().parent
CALLS, REPEATS = 2000, 15


def _ort(path: Path, x: np.ndarray):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    binding = sess.io_binding()
    binding.bind_cpu_input(name, x)
    for out in sess.get_outputs():
        binding.bind_output(out.name)
    return (lambda: sess.run_with_iobinding(binding)), (lambda: sess.run(None, {name: x}))


def evaluate(path: Path, calls: int, repeats: int) -> dict:
    import onnx
    import tvm
    from tvm import relax

    import tvm_tqs
    from tvm_tqs.rollout import RolloutSpec

    spec = RolloutSpec.from_onnx(onnx.load(str(path)))
    x = np.random.default_rng(0).standard_normal((1, *spec.window_shape)).astype(np.float32)
    compiled = tvm_tqs.compile(str(path), target="x86", uniform="int8", batch=1)
    vm = relax.VirtualMachine(compiled.executable, tvm.cpu())
    main, tensor = vm["main"], tvm.runtime.tensor(x)
    ort_bound, ort_run = _ort(path, x)
    variants = {
        "vm": lambda: main(tensor),
        "run": lambda: compiled.run(x),
        "ort iobinding": ort_bound,
        "ort run": ort_run,
    }
    for fn in variants.values():  # warm-up: first-call allocations, lazy buffers
        for _ in range(50):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - t0) / calls * 1e6)
    med = {k: float(np.median(v)) for k, v in samples.items()}
    return {
        "model": path.stem,
        "us": med,
        "run_overhead_us": med["run"] - med["vm"],
        "ort_overhead_us": med["ort run"] - med["ort iobinding"],
        "samples_us": samples,
    }


def markdown(results: list[dict], payload: dict) -> str:
    env = payload["environment"]
    lines = [
        "# Python API overhead per call, batch 1, one thread",
        "",
        f"Command: `{payload['command']}`",
        "",
        f"Machine: {env['machine']}; {env['load']}. Method in benchmarks/run_overhead.py's docstring "
        f"({payload['repeats']} interleaved rounds of {payload['calls']} calls; medians of the per-call "
        "means). tvm_tqs all-int8 for this host; onnxruntime on the fp32 ONNX file.",
        "",
        "| model | vm (us) | run (us) | run - vm (us) | ort iobinding (us) | ort run (us) | ort run - iobinding (us) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        u = r["us"]
        lines.append(
            f"| {r['model']} | {u['vm']:.1f} | {u['run']:.1f} | {r['run_overhead_us']:.1f} | "
            f"{u['ort iobinding']:.1f} | {u['ort run']:.1f} | {r['ort_overhead_us']:.1f} |"
        )
    over = [r["run_overhead_us"] for r in results]
    if over:
        lines += [
            "",
            f"`run` adds {np.median(over):.1f} us per call over the VM (median; {min(over):.1f}-{max(over):.1f}); "
            f"goal <= 3 us: met on {sum(o <= 3.0 for o in over)}/{len(over)} models.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="zoo model names (default: all)")
    parser.add_argument("--calls", type=int, default=CALLS, help=f"calls per round ({CALLS})")
    parser.add_argument("--repeats", type=int, default=REPEATS, help=f"interleaved rounds ({REPEATS})")
    parser.add_argument("--out", default=str(HERE / "results"), help="output folder")
    args = parser.parse_args(argv)
    payload = {
        "command": command_line("run_overhead.py"),
        "environment": machine_env(),
        "calls": args.calls,
        "repeats": args.repeats,
    }
    results, failures = per_model(
        selected_models(args.models),
        lambda path: evaluate(path, args.calls, args.repeats),
        lambda r: print(
            f"   run - vm {r['run_overhead_us']:.1f} us, ort {r['ort_overhead_us']:.1f} us", flush=True
        ),
    )
    payload["results"] = results
    write_results(args.out, "run_overhead", payload, markdown(results, payload), failures)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
