#!/usr/bin/env python3
"""Run a tvm_tqs latency bundle on a device: only the TVM runtime and numpy are needed.

Usage on the (air-gapped) device, from the copied bundle directory::

    python3 bundle_runner.py [BUNDLE_DIR] [--out results.json] [--device-id 0] [--skip KEY ...]

The bundle holds ``manifest.json``, the exported libraries (``libs/*.so``) and model inputs
(``inputs/*.npy``). Every kernel and model listed is timed with ``time_evaluator`` on seeded random
inputs; ``results.json`` (written atomically at the end) holds one record per entry, self-describing
so that the host can import it without the manifest. Progress goes to ``results.partial.jsonl``
(one fsync'd line per entry) so that a crash or Ctrl-C loses nothing: a rerun skips what is there.

The manifest names the device kind (``cpu``, ``cuda``, ``opencl``). GPU bundles run on ``cuda:N`` /
``opencl:N`` (``--device-id N``) and need a TVM runtime with that backend, which compiles the CUDA C /
OpenCL source inside the libraries when it loads them. Without the device the runner stops before
measuring anything (exit status 3, `EXIT_NO_DEVICE`).

This file is also imported by the local and RPC runners (``tvm_tqs.latency.bundles``, ``local_runner``,
``rpc_runner``): they time with the
same functions (``random_arrays``, ``time_function``, ``summarize``), so the three runners measure
in exactly the same way. It must therefore import nothing from tvm_tqs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback

import numpy as np

FORMAT = "tvm_tqs.latency.bundle"
VERSION = 1
MANIFEST = "manifest.json"
RESULTS = "results.json"
PARTIAL = "results.partial.jsonl"
# Exit status when the bundle's device is not on this machine (nothing was measured; a rerun elsewhere).
EXIT_NO_DEVICE = 3


class DeviceMissing(RuntimeError):
    """The device kind the bundle was built for is not on this machine."""


# Integer tensors that may hold indices (gather/take positions, shape values) get zeros: always in
# range, so a kernel that indexes with them cannot read out of bounds. Narrow integers are data
# (quantized activations, packed weights) and get the full range; timing of integer arithmetic does
# not depend on the values.
_INDEX_DTYPES = ("int32", "int64", "uint32", "uint64")


def random_arrays(args, seed: int) -> list[np.ndarray]:
    """Seeded inputs for argument specs ``[(shape, dtype), ...]``.

    Floats are standard normal (no denormals, no NaNs, which would change the timing), int8/uint8/int16
    uniform over their range, int32/int64 zeros (see ``_INDEX_DTYPES``), bool uniform.
    """
    rng = np.random.default_rng(seed)
    out = []
    for shape, dtype in args:
        shape = tuple(int(s) for s in shape)
        dtype = str(dtype)
        if dtype.startswith("float"):
            arr = rng.standard_normal(shape).astype(dtype)
        elif dtype in _INDEX_DTYPES:
            arr = np.zeros(shape, dtype=dtype)
        elif dtype == "bool":
            arr = rng.integers(0, 2, shape).astype(bool)
        elif dtype.startswith(("int", "uint")):
            info = np.iinfo(dtype)
            arr = rng.integers(int(info.min), int(info.max), shape, endpoint=True).astype(dtype)
        else:
            raise ValueError(f"no input generator for dtype {dtype!r}")
        out.append(arr)
    return out


def summarize(results_s) -> dict:
    """Statistics of the per-repeat mean times (seconds in, milliseconds out)."""
    ms = np.asarray(results_s, dtype=np.float64) * 1e3
    q1, med, q3 = (float(v) for v in np.percentile(ms, [25, 50, 75]))
    return {
        "median_ms": med,
        "q1_ms": q1,
        "q3_ms": q3,
        "std_ms": float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
        "min_ms": float(ms.min()),
        "results_ms": [float(v) for v in ms],
    }


def time_function(owner, name: str, dev, tensors, config: dict) -> dict:
    """Time ``owner[name](*tensors)`` on ``dev``; ``owner`` is a runtime Module or a VirtualMachine.

    ``config`` holds ``number``, ``repeat``, ``min_repeat_ms`` and ``warmup``. Explicit warm-up calls
    first (page faults, lazy initialisation, caches), then ``time_evaluator``, which grows ``number``
    until one repeat lasts at least ``min_repeat_ms`` (so a 20 ns kernel is averaged over enough calls
    to beat the timer) and returns one mean per repeat.
    """
    func = owner[name]
    for _ in range(int(config.get("warmup", 1))):
        func(*tensors)
    dev.sync()
    timer = owner.time_evaluator(
        name,
        dev,
        number=int(config.get("number", 1)),
        repeat=int(config.get("repeat", 10)),
        min_repeat_ms=int(config.get("min_repeat_ms", 10)),
    )
    return summarize(timer(*tensors).results)


def device_info(dev=None) -> dict:
    """What the results were measured on (recorded, not interpreted): the host, and for a GPU ``dev`` its
    kind and index (``"cuda:0"``), name and compute version."""
    info = {"machine": platform.machine(), "node": platform.node(), "platform": platform.platform()}
    if dev is not None and str(dev).split(":", 1)[0] not in ("cpu", "llvm"):
        info["device"] = str(dev)
        for attr in ("device_name", "compute_version"):
            try:
                info[attr] = getattr(dev, attr)
            except Exception:  # noqa: BLE001 - not every backend answers every attribute
                pass
    return info


def contiguous(a: np.ndarray) -> np.ndarray:
    """C-contiguous copy when needed; unlike np.ascontiguousarray, keeps 0-d arrays 0-d."""
    return a if a.flags.c_contiguous else np.array(a, order="C")


def _tensors(arrays, dev):
    import tvm

    return [tvm.runtime.tensor(contiguous(np.asarray(a)), dev) for a in arrays]


def open_device(name: str, device_id: int = 0):
    """``tvm.runtime.device(name, device_id)``; raises DeviceMissing (with what to do) when it is not here."""
    import tvm

    dev = tvm.runtime.device(name, device_id)
    if name in ("cpu", "llvm"):
        return dev
    if not tvm.runtime.enabled(name):
        raise DeviceMissing(
            f"this bundle measures on '{name}', and TVM's {name} runtime is not available here "
            f"(tvm.runtime.enabled('{name}') is False: no {name} driver, or a TVM built without {name}): "
            f"run it on the machine with the GPU, with a TVM runtime that has {name}"
        )
    if not dev.exist:
        raise DeviceMissing(
            f"this bundle measures on '{name}:{device_id}', and this machine has no such device: run it on "
            "the machine with the GPU (--device-id picks another GPU there)"
        )
    return dev


def _run_kernel(bundle: str, entry: dict, dev, config: dict, modules: dict) -> dict:
    import tvm

    lib = entry["lib"]
    if lib not in modules:
        modules[lib] = tvm.runtime.load_module(os.path.join(bundle, lib))
    arrays = random_arrays(entry["args"], int(config.get("seed", 0)))
    return time_function(modules[lib], entry["symbol"], dev, _tensors(arrays, dev), config)


def _run_model(bundle: str, entry: dict, dev, config: dict) -> dict:
    import tvm
    from tvm.runtime.vm import VirtualMachine

    lib = tvm.runtime.load_module(os.path.join(bundle, entry["lib"]))
    vm = VirtualMachine(lib, dev)
    arrays = [np.load(os.path.join(bundle, path)) for path in entry["inputs"]]
    return time_function(vm, "main", dev, _tensors(arrays, dev), config)


def _append_line(path: str, record: dict) -> None:
    # One write per line on an O_APPEND descriptor, then fsync: a crash leaves at most a torn last line.
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_partial(path: str) -> dict:
    """Records of a progress file by key; a torn last line (crash mid-write) is ignored."""
    done = {}
    if not os.path.exists(path):
        return done
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                continue
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            done[rec["key"]] = rec
    return done


def run_bundle(
    bundle: str,
    out: str | None = None,
    device: str | None = None,
    skip=(),
    fresh: bool = False,
    device_id: int = 0,
) -> dict:
    """Measure every entry of the bundle in ``bundle``; returns (and writes) the results document.

    ``device`` overrides the manifest's device kind; raises DeviceMissing before measuring anything when
    the device is not on this machine.
    """
    with open(os.path.join(bundle, MANIFEST)) as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT or int(manifest.get("version", 0)) > VERSION:
        raise SystemExit(f"{bundle}: not a version-{VERSION} {FORMAT} manifest")
    config = manifest["config"]
    dev = open_device(device or manifest.get("device", "cpu"), device_id)
    partial = os.path.join(bundle, PARTIAL)
    if fresh and os.path.exists(partial):
        os.remove(partial)
    done = read_partial(partial)
    modules: dict = {}
    entries = [("kernel", e) for e in manifest.get("kernels", [])] + [
        ("model", e) for e in manifest.get("models", [])
    ]
    for kind, entry in entries:
        key = entry["key"]
        if key in done:
            continue
        record = {k: v for k, v in entry.items() if k not in ("lib", "symbol", "inputs")}
        record.update(kind=kind, timestamp=time.time())
        if key in skip:
            record["error"] = "skipped (crashed the measuring process)"
        else:
            try:
                stats = (
                    _run_kernel(bundle, entry, dev, config, modules)
                    if kind == "kernel"
                    else _run_model(bundle, entry, dev, config)
                )
                record.update(stats)
            except Exception as err:  # noqa: BLE001 - one failing kernel must not stop the others
                record["error"] = f"{type(err).__name__}: {err}".strip()[:2000]
                traceback.print_exc(file=sys.stderr)
        _append_line(partial, record)
        done[key] = record
        status = f"{record['median_ms']:.4g} ms" if "median_ms" in record else record["error"].splitlines()[0]
        print(f"[{len(done)}/{len(entries)}] {entry.get('name', key)}: {status}", flush=True)
    order = {e["key"]: i for i, (_, e) in enumerate(entries)}
    results = sorted((r for k, r in done.items() if k in order), key=lambda r: order[r["key"]])
    doc = {
        "format": FORMAT + ".results",
        "version": VERSION,
        "bundle_id": manifest.get("bundle_id"),
        "target": manifest.get("target"),
        "config": config,
        "device": device_info(dev),
        "results": results,
    }
    out = out or os.path.join(bundle, RESULTS)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)  # atomic: the host never reads a half-written results.json
    return doc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Measure a tvm_tqs latency bundle on this device.")
    p.add_argument("bundle", nargs="?", default=os.path.dirname(os.path.abspath(__file__)))
    p.add_argument("--out", default=None, help="results file (default: BUNDLE/results.json)")
    p.add_argument(
        "--device", default=None, help="TVM device kind (default: the manifest's: cpu, cuda, opencl)"
    )
    p.add_argument("--device-id", type=int, default=0, help="index of the GPU to measure on (default 0)")
    p.add_argument("--skip", action="append", default=[], help="entry key to record as failed, not run")
    p.add_argument("--fresh", action="store_true", help="ignore earlier progress in results.partial.jsonl")
    a = p.parse_args(argv)
    try:
        doc = run_bundle(a.bundle, a.out, a.device, set(a.skip), a.fresh, a.device_id)
    except DeviceMissing as err:
        print(f"bundle_runner: {err}", file=sys.stderr)
        return EXIT_NO_DEVICE
    failed = sum("error" in r for r in doc["results"])
    print(
        f"{len(doc['results'])} entries measured ({failed} failed) -> {a.out or os.path.join(a.bundle, RESULTS)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
