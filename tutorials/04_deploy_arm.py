"""Tutorial 4: deploy the artifact on an ARM board with only the TVM runtime.

What it teaches: what `export()` writes for an aarch64 board, and the two ways to run it there without
tvm_tqs (and without the TVM compiler): a Python loader (``tvm.runtime.load_module`` +
``relax.VirtualMachine``; `pip install apache-tvm` on the board brings the runtime) and a C++ loader
linked against ``libtvm_runtime.so`` / ``libtvm_ffi.so`` (tutorials/04_deploy/loader.cc). Both run a whole
autoregressive rollout, feeding each forecast back into the window.

What runs here: this host is x86, so the same plan is also compiled for x86 and both loaders run on that
artifact, checked against `CompiledModel.rollout`. When ``aarch64-linux-gnu-g++`` and ``qemu-aarch64``
are installed (Debian: g++-aarch64-linux-gnu, qemu-user), the C++ loader is also cross-compiled and runs
the aarch64 artifact under qemu, as the tests do; it needs the aarch64 builds of the two runtime libraries,
taken from the aarch64 wheels of the installed apache-tvm / apache-tvm-ffi versions (read from the tests'
qemu cache when present, else `pip download` into this directory, ~100 MB). Every step that cannot run
here says why and is skipped.

Time: about 30 s on a 2-core x86 host, plus the wheel download the first time in a directory.

Run: python tutorials/04_deploy_arm.py   (writes ./arm_out/, ./x86_out/, ./board/ and loader binaries)
"""

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import tvm
import tvm_ffi

import tvm_tqs
from tvm_tqs.examples import example_model
from tvm_tqs.report.text import plan_summary

start = time.perf_counter()
LOADER_CC = Path(__file__).resolve().parent / "04_deploy" / "loader.cc"
CALLS = 4  # the rollout the loaders run: 4 calls of 24 steps = 96 steps

# --- 1. Plan and build for the board ------------------------------------------------------------------------
# "arm_cpu" is a generic aarch64 CPU with NEON (`tvm-tqs targets` lists the specific cores: cortex-a76 adds
# sdot, neoverse-v1 smmla). Nothing here runs the arm build: planning is data-free and the kernels are
# cross-compiled, so the host needs no board.
path = example_model()
report = tvm_tqs.score(path, horizon=96, seeds=2, mode="weight", linearity=False)
arm = tvm_tqs.compile(path, target="arm_cpu", budget="size=25%", tqs_report=report)
print(plan_summary(arm))
arm_dir = arm.export("arm_out", overwrite=True)
library = json.loads((arm_dir / "plan.json").read_text())["library"]
print(f"\nexported for the board: {sorted(p.name for p in arm_dir.iterdir())}")
# model.so when aarch64-linux-gnu-g++ is installed here (cross-linked); otherwise model.tar, the object
# files, which tvm.runtime.load_module links on the board with its own g++.
print(f"library: {library} ({(arm_dir / library).stat().st_size:,} bytes)")

# --- 2. The same plan for this host -------------------------------------------------------------------------
# plan= forces the precisions (no TQS, no solver): the x86 artifact computes what the board computes, with
# the same integer weights, through x86 kernels. That is what we can run here.
host = tvm_tqs.compile(path, target="x86", plan=arm.plan.precisions)
assert host.plan.precisions == arm.plan.precisions
host_dir = host.export("x86_out", overwrite=True)

spec = arm.rollout_spec
rng = np.random.default_rng(0)
t = np.arange(spec.lookback)[None, :, None]
window = np.concatenate([np.sin(2 * np.pi * t / 48), 0.5 * np.cos(2 * np.pi * t / 48)], axis=2)
window = (window + 0.1 * rng.standard_normal(window.shape)).astype(np.float32)
expected = host.rollout(window, horizon=CALLS * spec.stride)  # what tvm_tqs itself computes
print(f"\nreference: CompiledModel.rollout on x86, {expected.shape}")

# --- 3. The Python loader -----------------------------------------------------------------------------------
# This is the whole program for the board: numpy and the TVM runtime, nothing else. It reads the contract
# from report.json (part of the artifact) to know how many steps each call feeds back.
BOARD_LOADER = '''\
"""Run a tvm_tqs artifact: python board_loader.py ARTIFACT_DIR WINDOW.npy CALLS OUT.npy"""
import json, sys
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

artifact, window, calls, out = Path(sys.argv[1]), np.load(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
library = json.loads((artifact / "plan.json").read_text())["library"]
contract = json.loads((artifact / "report.json").read_text())["rollout"]
assert contract.get("window_layout", "BLC") == "BLC" and not contract.get("aux_inputs"), "see docs/rollout.md"
stride = contract["stride"]

vm = relax.VirtualMachine(tvm.runtime.load_module(str(artifact / library)), tvm.cpu())
steps = []
for _ in range(calls):
    forecast = vm["main"](tvm.runtime.tensor(window.astype("float32"))).numpy()  # [B, H, C]
    steps.append(forecast[:, :stride])
    window = np.concatenate([window[:, stride:], forecast[:, :stride]], axis=1)  # feed it back
np.save(out, np.concatenate(steps, axis=1))
print(f"board_loader: {calls} calls of {artifact / library} -> {out}")
'''
board = Path("board")
board.mkdir(exist_ok=True)
(board / "board_loader.py").write_text(BOARD_LOADER)
np.save(board / "window.npy", window)
print("\n--- board/board_loader.py " + "-" * 60 + "\n" + BOARD_LOADER + "-" * 87)
print(f"on the board: pip install apache-tvm=={tvm.__version__}")
print(f"              python board_loader.py arm_out window.npy {CALLS} out.npy")
# Here: the same program on the x86 artifact, in a fresh interpreter (no tvm_tqs imported there).
proc = subprocess.run(
    [
        sys.executable,
        str(board / "board_loader.py"),
        str(host_dir),
        str(board / "window.npy"),
        str(CALLS),
        str(board / "python_out.npy"),
    ],
    capture_output=True,
    text=True,
    timeout=300,
)
if proc.returncode != 0:
    raise RuntimeError(f"board_loader.py failed ({proc.returncode}): {proc.stderr[-2000:]}")
print(proc.stdout.strip())
python_out = np.load(board / "python_out.npy")
print(f"Python loader vs CompiledModel.rollout: max abs difference {np.abs(python_out - expected).max():.2e}")


# --- 4. The C++ loader on this host -------------------------------------------------------------------------
# The wheels ship what a C++ program needs: tvm-ffi's headers (tvm_ffi/include) and both shared libraries
# (tvm/lib/libtvm_runtime.so, tvm_ffi/lib/libtvm_ffi.so). libtvm_runtime.so is the runtime alone, not the
# compiler (libtvm_compiler.so): what a board needs.
def runtime_files() -> tuple[Path, Path, Path] | str:
    include = Path(tvm_ffi.__file__).parent / "include"
    runtime = Path(tvm.__file__).parent / "lib" / "libtvm_runtime.so"
    ffi = Path(tvm_ffi.__file__).parent / "lib" / "libtvm_ffi.so"
    missing = [str(p) for p in (include / "tvm" / "ffi" / "function.h", runtime, ffi) if not p.exists()]
    return f"the installed wheels lack {missing}" if missing else (include, runtime, ffi)


def run_loader(command: list[str], model: Path, out: Path) -> np.ndarray:
    assert spec.stride == spec.horizon and spec.window_layout == "BLC", "loader.cc feeds back whole forecasts"
    b, (lookback, channels) = window.shape[0], spec.window_shape
    args = [str(model), str(board / "window.bin"), str(b), str(lookback), str(channels), str(spec.horizon)]
    proc = subprocess.run(
        [*command, *args, str(CALLS), str(out)], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    print(proc.stdout.strip())
    return np.fromfile(out, dtype=np.float32).reshape(b, CALLS * spec.horizon, channels)


window.tofile(board / "window.bin")
found = runtime_files()
cxx = shutil.which("g++")
if isinstance(found, str) or cxx is None:
    print(f"\nSKIPPED the C++ loader on this host: {found if isinstance(found, str) else 'no g++ here'}")
else:
    include, runtime, ffi = found
    print(f"\nC++ loader: headers {include}\n  runtime {runtime}\n  ffi     {ffi}")
    build = [cxx, "-std=c++17", "-O2", "-I", str(include), str(LOADER_CC), "-o", "loader_x86",
             "-L", str(runtime.parent), "-L", str(ffi.parent), "-ltvm_runtime", "-ltvm_ffi",
             f"-Wl,-rpath,{runtime.parent}:{ffi.parent}"]  # fmt: skip
    subprocess.run(build, check=True, capture_output=True, text=True)
    cpp_out = run_loader(["./loader_x86"], host_dir / library, board / "cpp_out.bin")
    print(f"C++ loader vs CompiledModel.rollout: max abs difference {np.abs(cpp_out - expected).max():.2e}")


# --- 5. The aarch64 artifact under qemu ---------------------------------------------------------------------
# The real board's part: the C++ loader cross-compiled for aarch64 and linked against the aarch64 runtime
# libraries, running arm_out/model.so under user-mode qemu. Emulation checks the numerics, not the speed.
def aarch64_runtime() -> Path | str:
    """A directory with the aarch64 libtvm_runtime.so and libtvm_ffi.so of the installed versions."""
    cache = Path(os.environ.get("TQS_QEMU_CACHE", Path.home() / ".cache" / "tvm_tqs" / "qemu")) / "lib"
    if all((cache / f).exists() for f in ("libtvm_runtime.so", "libtvm_ffi.so")):
        return cache  # prepared by the tests (tests/qemu_runner); we only read it
    here = Path("aarch64_runtime").resolve()
    if all((here / "lib" / f).exists() for f in ("libtvm_runtime.so", "libtvm_ffi.so")):
        return here / "lib"
    pins = [f"{d}=={importlib.metadata.version(d)}" for d in ("apache-tvm", "apache-tvm-ffi")]
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", *pins, "--platform", "manylinux_2_28_aarch64",
         "--only-binary=:all:", "--no-deps", "--no-cache-dir", "-d", str(here / "wheels")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if proc.returncode != 0:
        return f"pip could not download the aarch64 wheels of {pins}: {proc.stderr.strip()[-300:]}"
    (here / "lib").mkdir(exist_ok=True)
    for whl in (here / "wheels").glob("*.whl"):
        with zipfile.ZipFile(whl) as z:
            for name in z.namelist():
                if name in ("tvm/lib/libtvm_runtime.so", "tvm_ffi/lib/libtvm_ffi.so"):
                    (here / "lib" / Path(name).name).write_bytes(z.read(name))
    shutil.rmtree(here / "wheels")  # ~100 MB we no longer need
    return here / "lib"


tools = [t for t in ("aarch64-linux-gnu-g++", "qemu-aarch64") if shutil.which(t) is None]
sysroot = Path("/usr/aarch64-linux-gnu")
if tools or not sysroot.is_dir():
    missing = tools or [str(sysroot)]
    print(f"\nSKIPPED the aarch64 run: {missing} not installed (apt: g++-aarch64-linux-gnu qemu-user)")
elif library != "model.so":
    print(f"\nSKIPPED the aarch64 run: the artifact holds {library}, not a cross-linked model.so")
elif isinstance(found, str):
    print(f"\nSKIPPED the aarch64 run: no tvm-ffi headers to compile the loader against ({found})")
else:
    libs = aarch64_runtime()
    if isinstance(libs, str):
        print(f"\nSKIPPED the aarch64 run: {libs}")
    else:
        # The binary finds the two libraries through its rpath ($ORIGIN/lib), as it would on the board.
        device = Path("device")
        (device / "lib").mkdir(parents=True, exist_ok=True)
        for f in ("libtvm_runtime.so", "libtvm_ffi.so"):
            shutil.copy2(libs / f, device / "lib" / f)
        build = ["aarch64-linux-gnu-g++", "-std=c++17", "-O2", "-I", str(found[0]), str(LOADER_CC),
                 "-o", str(device / "loader"), "-L", str(device / "lib"), "-ltvm_runtime", "-ltvm_ffi",
                 "-Wl,-rpath,$ORIGIN/lib"]  # fmt: skip
        subprocess.run(build, check=True, capture_output=True, text=True)
        print(f"\naarch64 loader built: {device / 'loader'} (aarch64-linux-gnu-g++, rpath $ORIGIN/lib)")
        t0 = time.perf_counter()
        arm_out = run_loader(
            ["qemu-aarch64", "-L", str(sysroot), str(device / "loader")],
            arm_dir / library,
            board / "arm_out.bin",
        )
        print(f"under qemu in {time.perf_counter() - t0:.1f} s")
        # Same integers on both ISAs; the float epilogues may differ by an FMA contraction (about 1 ulp).
        diff = np.abs(arm_out - expected).max()
        print(
            f"aarch64 (qemu) vs x86 CompiledModel.rollout: max abs difference {diff:.2e} "
            f"(relative {diff / np.abs(expected).max():.1e})"
        )

print(f"\ntutorial 4 done in {time.perf_counter() - start:.0f} s")
