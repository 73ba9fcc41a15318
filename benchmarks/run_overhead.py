"""What does the Python API add to a call? `CompiledModel.run` vs the VM's own time, and onnxruntime's
`InferenceSession.run` vs its I/O-bound run, batch 1, one thread, on every zoo model.

    python benchmarks/run_overhead.py [--models NAME ...] [--rounds R] [--block-ms MS] [--out benchmarks/results]

Per model, all-int8 for this host (``compile(model, "x86", uniform="int8")``) and the fp32 ONNX file in
onnxruntime (1 intra-op thread, ORT_ENABLE_ALL), in one process:

- ``vm``: ``vm["main"](tensor)`` with the input tensor made once (the engine's time);
- ``run``: ``CompiledModel.run(x)`` on a numpy array (what a user calls), outputs as numpy;
- ``ort iobinding``: ``run_with_iobinding`` with bound input and output (onnxruntime's engine time);
- ``ort run``: ``InferenceSession.run(None, {name: x})`` (its public API);
- ``C++``: the exported ``model.so`` driven by the TVM runtime alone from C++ (benchmarks/native/call_timer.cc,
  built here with g++ against the wheels' libtvm_runtime.so / libtvm_ffi.so, as a deployment links it). The
  timer runs in its own process and serves blocks of calls on request, timed on its own calling thread's
  CPU clock, so ``C++ - vm`` is measured in the same ABBA pairs (A: ``vm``, B: a C++ block).

Overhead = run - vm (the issue's goal: <= 3 us) and ort run - ort iobinding, each measured in interleaved
pairs so that it holds for 0.5 ms calls on a shared machine too: R rounds of four blocks A B B A (A the
engine call, B the API call; each block about MS milliseconds of calls), the overhead of a round is the B
blocks' per-call mean minus the A blocks', and the table gives the median over rounds with its
interquartile range. The ABBA order gives both variants the same share of blocks that follow a switch
(an A B A order charged B for the cache refill after the switch: ~3 us on etth1_lstm). Times are the
calling thread's CPU time (``time.thread_time``): with one thread both engines run every kernel in the
calling thread (checked per thread in /proc), and CPU time leaves out the time another process holds the
core, which made wall-clock differences of two separately timed loops swing by more than the overhead.
The engine columns are the median per-call CPU time of the A blocks. The fresh input array is the same
object every call (the copy into the model's buffer is part of `run`'s cost).
"""

from __future__ import annotations

import os

os.environ.setdefault("TVM_NUM_THREADS", "1")

import argparse  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from common import command_line, machine_env, per_model, selected_models, write_results  # noqa: E402

HERE = Path(__file__).resolve().parent
ROUNDS, BLOCK_MS = 200, 2.0


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


def python_block(fn):
    """A block function: ``block(calls)`` runs `fn` that many times, returns its per-call CPU time (us)."""
    clock = time.thread_time

    def block(calls: int) -> float:
        start = clock()
        for _ in range(calls):
            fn()
        return (clock() - start) / calls * 1e6

    return block


def block_calls(fn, block_ms: float) -> int:
    """Calls of `fn` (warmed up here: first-call allocations, lazy buffers) lasting about `block_ms`."""
    for _ in range(20):
        fn()
    return max(1, int(block_ms * 1e-3 / max(python_block(fn)(20) * 1e-6, 1e-7)))


def paired(engine, api, rounds: int, calls: int) -> dict:
    """Per-call CPU time of the `engine` and `api` block functions, and `api`'s overhead over `engine`, from
    ABBA rounds of `calls` calls per block (see the module docstring)."""
    engine(calls)  # one unrecorded block each: caches and allocators settle
    api(calls)
    eng, use, over = [], [], []
    for _ in range(rounds):
        a1, b1, b2, a2 = engine(calls), api(calls), api(calls), engine(calls)
        eng += [a1, a2]
        use += [b1, b2]
        over.append((b1 + b2 - a1 - a2) / 2)
    q1, q3 = np.percentile(over, [25, 75])
    return {
        "engine_us": float(np.median(eng)),
        "api_us": float(np.median(use)),
        "overhead_us": float(np.median(over)),
        "overhead_iqr_us": [float(q1), float(q3)],
        "calls_per_block": calls,
    }


def build_call_timer(directory: Path) -> Path | str:
    """benchmarks/native/call_timer.cc built against the installed runtime, or why it cannot be."""
    import tvm
    import tvm_ffi

    include = Path(tvm_ffi.__file__).parent / "include"
    runtime = Path(tvm.__file__).parent / "lib" / "libtvm_runtime.so"
    ffi = Path(tvm_ffi.__file__).parent / "lib" / "libtvm_ffi.so"
    cxx = shutil.which("g++")
    missing = [str(p) for p in (include / "tvm" / "ffi" / "function.h", runtime, ffi) if not p.exists()]
    if missing or cxx is None:
        return "no g++ here" if cxx is None else f"the installed wheels lack {missing}"
    exe = directory / "call_timer"
    build = [cxx, "-std=c++17", "-O2", "-I", str(include), str(HERE / "native" / "call_timer.cc"), "-o", str(exe),
             "-L", str(runtime.parent), "-L", str(ffi.parent), "-ltvm_runtime", "-ltvm_ffi",
             f"-Wl,-rpath,{runtime.parent}:{ffi.parent}"]  # fmt: skip
    subprocess.run(build, check=True, capture_output=True, text=True)
    return exe


class CppBlocks:
    """`timer` serving blocks of calls of `library` in its own process: ``block(calls)`` asks for one block and
    returns its per-call CPU time (us), as `python_block` does for Python callables."""

    def __init__(self, timer: Path, library: Path, shape: tuple):
        args = [str(timer), str(library), *map(str, shape)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"call_timer did not start on {library} (exit {self.proc.wait()})")

    def __call__(self, calls: int) -> float:
        self.proc.stdin.write(f"{calls}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"call_timer stopped (exit {self.proc.wait()})")
        return float(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def evaluate(path: Path, rounds: int, block_ms: float, timer: Path | str) -> dict:
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
    vm_block = python_block(lambda: main(tensor))
    calls = block_calls(lambda: compiled.run(x), block_ms)
    block_calls(lambda: main(tensor), block_ms)  # warm-up
    tvm_pair = paired(vm_block, python_block(lambda: compiled.run(x)), rounds, calls)
    ort_pair = paired(python_block(ort_bound), python_block(ort_run), rounds, block_calls(ort_run, block_ms))
    cpp = {"api_us": None, "overhead_us": None, "overhead_iqr_us": None}
    if not isinstance(timer, str):
        with tempfile.TemporaryDirectory() as tmp:
            cpp_blocks = CppBlocks(timer, compiled.export(Path(tmp) / "artifact") / "model.so", x.shape)
            try:
                cpp = paired(vm_block, cpp_blocks, rounds, calls)
            finally:
                cpp_blocks.close()
    return {
        "model": path.stem,
        "us": {
            "vm": tvm_pair["engine_us"],
            "run": tvm_pair["api_us"],
            "ort iobinding": ort_pair["engine_us"],
            "ort run": ort_pair["api_us"],
            "C++": cpp["api_us"],
        },
        "cpp_minus_vm_us": cpp["overhead_us"],
        "cpp_minus_vm_iqr_us": cpp["overhead_iqr_us"],
        "run_overhead_us": tvm_pair["overhead_us"],
        "run_overhead_iqr_us": tvm_pair["overhead_iqr_us"],
        "ort_overhead_us": ort_pair["overhead_us"],
        "ort_overhead_iqr_us": ort_pair["overhead_iqr_us"],
        "calls_per_block": {"tvm": tvm_pair["calls_per_block"], "ort": ort_pair["calls_per_block"]},
    }


def markdown(results: list[dict], payload: dict) -> str:
    env = payload["environment"]
    lines = [
        "# API overhead per call, batch 1, one thread: Python, C++ runtime, onnxruntime",
        "",
        f"Command: `{payload['command']}`",
        "",
        f"Machine: {env['machine']}; {env['load']}. Method in benchmarks/run_overhead.py's docstring "
        f"({payload['rounds']} ABBA rounds of ~{payload['block_ms']:g} ms blocks per pair; calling-thread CPU "
        "time; overheads are medians of the paired per-round differences, with their interquartile range). "
        "tvm_tqs all-int8 for this host; onnxruntime on the fp32 ONNX file.",
        "",
        f"C++: {payload['cpp']} (the exported model.so driven by the TVM runtime alone, in its own process; "
        "`C++ - vm` from the same ABBA pairs against the Python VM call).",
        "",
        "| model | vm (us) | run (us) | run - vm (us) [IQR] | C++ (us) | C++ - vm (us) [IQR] | ort iobinding (us) "
        "| ort run (us) | ort run - iobinding (us) [IQR] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        u, q, o = r["us"], r["run_overhead_iqr_us"], r["ort_overhead_iqr_us"]
        c = r.get("cpp_minus_vm_iqr_us")
        cpp = (
            "- | -"
            if c is None
            else f"{u['C++']:.1f} | {r['cpp_minus_vm_us']:+.1f} [{c[0]:+.1f}, {c[1]:+.1f}]"
        )
        lines.append(
            f"| {r['model']} | {u['vm']:.1f} | {u['run']:.1f} | {r['run_overhead_us']:.1f} [{q[0]:.1f}, {q[1]:.1f}] "
            f"| {cpp} | {u['ort iobinding']:.1f} | {u['ort run']:.1f} "
            f"| {r['ort_overhead_us']:.1f} [{o[0]:.1f}, {o[1]:.1f}] |"
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
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"ABBA rounds per pair ({ROUNDS})")
    parser.add_argument(
        "--block-ms", type=float, default=BLOCK_MS, help=f"milliseconds per block ({BLOCK_MS})"
    )
    parser.add_argument("--out", default=str(HERE / "results"), help="output folder")
    args = parser.parse_args(argv)
    payload = {
        "command": command_line("run_overhead.py"),
        "environment": machine_env(),
        "rounds": args.rounds,
        "block_ms": args.block_ms,
    }
    build_dir = Path(tempfile.mkdtemp(prefix="call_timer_"))
    timer = build_call_timer(build_dir)
    payload["cpp"] = "benchmarks/native/call_timer.cc" if not isinstance(timer, str) else f"not run: {timer}"
    results, failures = per_model(
        selected_models(args.models),
        lambda path: evaluate(path, args.rounds, args.block_ms, timer),
        lambda r: print(
            f"   run - vm {r['run_overhead_us']:.1f} us, C++ - vm {r['cpp_minus_vm_us'] or 0:.1f} us, "
            f"ort {r['ort_overhead_us']:.1f} us",
            flush=True,
        ),
    )
    shutil.rmtree(build_dir, ignore_errors=True)
    payload["results"] = results
    write_results(args.out, "run_overhead", payload, markdown(results, payload), failures)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
