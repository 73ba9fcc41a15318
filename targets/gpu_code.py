"""What a built GPU executable holds: its device modules and kernels, and PrimFuncs that fell back to the host.

TVM compiles a PrimFunc left without a GPU thread binding for the host, and the build succeeds;
`host_fallbacks` reads the built host code to catch that after the fact (`targets.gpu.unbound_functions`
catches it before the build). `cuda_source` and `device_kernels` read the device side.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["cuda_source", "device_kernels", "host_fallbacks", "host_loops"]


def _modules(executable: Any, kinds: tuple[str, ...]) -> list:
    """Modules of ``kinds`` in the import tree of an executable (relax VM or TIR) or a runtime module."""
    root = getattr(executable, "mod", executable)
    found, stack, seen = [], [root], set()
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        if m.kind in kinds:
            found.append(m)
        stack.extend(reversed(list(m.imports)))
    return found


def cuda_source(executable: Any) -> str:
    """The CUDA C of every CUDA module in a built executable ("" when it has none)."""
    parts = []
    for m in _modules(executable, ("cuda",)):
        src = m.inspect_source("cuda")  # a JIT-compiled module keeps its source under "cuda" too
        parts.append(src or m.inspect_source())
    return "\n".join(parts)


_KERNEL_DEF = {
    "cuda": re.compile(r"__global__\s+void\s+(?:__launch_bounds__\(\s*\d+\s*\)\s+)?(\w+)\s*\("),
    "opencl": re.compile(r"__kernel\s+void\s+(\w+)\s*\("),
}


def device_kernels(executable_or_source: Any, kind: str = "cuda") -> list[str]:
    """Names of the device kernels (``__global__`` / OpenCL ``__kernel``), in source order, once each.

    TVM names them ``<PrimFunc>_kernel`` and ``<PrimFunc>_kernel_<i>`` for the i-th launch.
    """
    if isinstance(executable_or_source, str):
        text = executable_or_source
    else:
        text = "\n".join(m.inspect_source() for m in _modules(executable_or_source, (kind,)))
    return list(dict.fromkeys(_KERNEL_DEF[kind].findall(text)))


def _llvm_functions(ir: str) -> dict[str, str]:
    """``{name: text}`` of the functions defined in LLVM IR text."""
    out = {}
    for m in re.finditer(r"^define [^\n]*?@(\"[^\"]+\"|[\w.$-]+)\(.*?^}", ir, re.S | re.M):
        out[m.group(1).strip('"')] = m.group(0)
    return out


def _has_loop(func_ir: str) -> bool:
    """A cycle in the control-flow graph of one LLVM function (a loop, whatever LLVM made of it)."""
    succ: dict[str, list[str]] = {}
    order: list[str] = []

    def start(name: str) -> str:
        succ.setdefault(name, [])
        order.append(name)
        return name

    block = None
    for line in func_ir.splitlines()[1:]:
        label = re.match(r"^(\"[^\"]+\"|[\w.$-]+):", line)
        if label:
            block = start(label.group(1).strip('"'))
            continue
        if not line.strip() or line.lstrip().startswith(("#", ";")) or line.startswith("}"):
            continue
        if block is None:
            block = start("%entry")  # an entry block without a label
        succ[block].extend(re.findall(r"label %(\"[^\"]+\"|[\w.$-]+)", line))
    succ = {b: [s.strip('"') for s in v] for b, v in succ.items()}
    if not order:
        return False
    state = {order[0]: 1}  # 1: on the DFS stack (a branch back to it closes a cycle), 2: done
    stack = [(order[0], iter(succ[order[0]]))]
    while stack:
        node, it = stack[-1]
        nxt = next(it, None)
        if nxt is None:
            state[node] = 2
            stack.pop()
        elif state.get(nxt) == 1:
            return True
        elif nxt not in state:
            state[nxt] = 1
            stack.append((nxt, iter(succ.get(nxt, ()))))
    return False


def host_loops(executable: Any) -> list[str]:
    """Host (LLVM) functions of a built executable that contain a loop.

    A GPU build's host side only checks arguments and launches kernels: straight-line code. A loop
    there is compute that stayed on the host (an unbound loop of a PrimFunc).
    """
    loops = []
    for m in _modules(executable, ("llvm",)):
        for name, text in _llvm_functions(m.inspect_source("ll")).items():
            if _has_loop(text):
                loops.append(name)
    return sorted(loops)


def _primfunc_of(host_function: str) -> str | None:
    """``__tvm_ffi_<f>`` (packed entry) and ``<f>_compute_`` (its body) -> ``<f>``; None for TVM's
    own helpers (``__tvm_ffi__*``, ``__tvm_set_raised_*``, kernel handle init, fp16 conversions)."""
    if host_function.startswith("__tvm_ffi_") and not host_function.startswith("__tvm_ffi__"):
        return host_function.removeprefix("__tvm_ffi_")
    if host_function.endswith("_compute_"):
        return host_function.removesuffix("_compute_")
    return None


def _is_alias(func_ir: str) -> bool:
    """A weak entry point that calls another packed entry (TVM's ``__tvm_ffi_main`` of a module with
    one function)."""
    head = func_ir.split("\n", 1)[0]
    return " weak " in head and re.search(r"call [^\n]*@__tvm_ffi_\w+\(", func_ir) is not None


# A launcher handles shapes, strides, dtypes and pointers: integers only. Floating-point values in a
# PrimFunc's host code are its data, computed on the host (a loop LLVM unrolled completely included).
_FLOAT = re.compile(r"\b(half|bfloat|float|double)\b")


def _float_math(func_ir: str) -> bool:
    return any(
        _FLOAT.search(line)
        for line in func_ir.splitlines()[1:]
        if not line.lstrip().startswith(("#dbg", ";", "!"))
    )


def host_fallbacks(executable: Any, kind: str = "cuda") -> dict[str, str]:
    """PrimFuncs of a GPU build that run (partly) on the host: ``{name: reason}``, empty when none.

    Criteria on the BUILT executable (not on the schedule), for the host code of each PrimFunc
    (``__tvm_ffi_<name>`` and ``<name>_compute_`` in the host LLVM module):

    * it launches at least one device kernel ``<name>_kernel[_i]`` of the ``kind`` module
      (``"cuda"`` or ``"opencl"``): a PrimFunc without any thread binding is compiled for the host;
    * it has no loop (`host_loops`) and no floating-point value: a launcher only checks arguments
      and passes pointers, while a stage left unbound (next to bound ones) is host code, a loop or,
      when small, the same loop unrolled by LLVM.

    Not seen: an unbound stage that only moves integers and that LLVM unrolled completely.
    """
    kernels = device_kernels(executable, kind)
    host: dict[str, str] = {}
    for m in _modules(executable, ("llvm",)):
        host.update(_llvm_functions(m.inspect_source("ll")))
    bad: dict[str, str] = {}
    for fn, text in sorted(host.items()):
        name = _primfunc_of(fn)
        if name is None or _is_alias(text):
            continue
        pattern = re.compile(rf"{re.escape(name)}_kernel(_\d+)?")
        if fn.startswith("__tvm_ffi_") and not any(pattern.fullmatch(k) for k in kernels):
            bad.setdefault(name, f"no {kind} kernel: compiled for the host")
        if _has_loop(text):
            bad.setdefault(name, f"a loop on the host (in {fn})")
        elif _float_math(text):
            bad.setdefault(name, f"floating-point math on the host (in {fn})")
    return dict(sorted(bad.items()))
