"""CUDA device code of built modules: nvcc compilation, PTX inspection, embedding into artifacts.

A CUDA build made by TVM 0.27 on a machine without the NVIDIA driver holds CUDA C source
(``exe.mod.imports[0].imports[0].inspect_source()``); the device compiles it when it loads the
library, through the Python callback ``tvm_callback_cuda_compile`` (NVRTC from ``cuda-bindings``, or
nvcc with ``TVM_CUDA_COMPILE_MODE=nvcc``). A device without Python TVM, NVRTC or nvcc cannot load
such an artifact at all. This module compiles that source offline with nvcc, for the target's exact
arch, and puts PTX (or a cubin / fatbin) into the artifact instead::

    with nvcc.embed(spec):                                   # build(): hosts with the driver
        exe = tvm.compile(mod, target=spec.target())
    exe.export_library(path, **nvcc.export_options(spec))    # export(): every host

How TVM 0.27 gets device code into a library (read from its sources; the driver-less path is what
the tests here exercise, the build-time path needs a host with the NVIDIA driver):

* codegen hands the CUDA C to ``ffi.Module.create.cuda``, registered by ``libtvm_runtime_cuda.so``,
  which only loads where ``libcuda.so.1`` (the driver) exists. There it JIT-compiles at build time
  through ``tvm_callback_cuda_compile(code)`` (default NVRTC with ``--use_fast_math`` for the arch of
  ``Target.current()`` or of the local GPU) and keeps the binary: `embed` replaces that callback.
* without the driver (this repository's CI, any cross-building host) codegen falls back to a module
  that keeps the source with format ``"cuda"``; `tvm.runtime.load_module` of an export fails here
  (no ``ffi.Module.load_from_bytes.cuda`` loader). `export_options` passes ``fpack_imports`` to
  ``export_library``: the serialized import tree is rewritten, each ``"cuda"`` module's source
  replaced by nvcc's output (same function table), and embedded as TVM would (``codegen_blob``).

Inspection helpers (`ptx_entries`, `embedded_device_code`, `code_arch`; the built module's side is in
`targets.gpu_code`) back the tests: the quantized kernels compile for sm_87 and
sm_90 and use ``dp4a``; no PrimFunc of a GPU build runs on the host; the artifact holds code for the
right arch.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import struct
import subprocess
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import tvm

from .gpu_code import _modules

__all__ = [
    "DEFAULT_FORMAT",
    "FORMATS",
    "NvccError",
    "arch",
    "assemble",
    "available",
    "code_arch",
    "compile_cuda",
    "embed",
    "embed_blob",
    "embedded_device_code",
    "export_options",
    "nvcc_path",
    "pack_imports",
    "ptx_entries",
    "ptx_target",
    "version",
]

FORMATS = ("ptx", "cubin", "fatbin")
DEFAULT_FORMAT = "ptx"
ENV_NVCC = "TVM_TQS_NVCC"  # an nvcc to use (e.g. the device's CUDA 12.x toolkit; see `export_options`)
ENV_FORMAT = "TVM_TQS_CUDA_FORMAT"  # ptx | cubin | fatbin | source (source: keep the CUDA C, no nvcc)
CALLBACK = "tvm_callback_cuda_compile"
BLOB_SYMBOL = "__tvm_ffi__library_bin"

# What TVM's own nvcc / NVRTC invocations pass (tvm.support.nvcc), minus --use_fast_math: the
# kernels quantize with one IEEE reciprocal per row (``1 / s``, ``amax / 127``) that
# `kernels.reference.quantize_activations` reproduces bit for bit; fast math makes them approximate
# (rcp.approx.ftz / div.approx.ftz, and tanh.approx in the epilogues), so the int8 activations could
# differ from the CPU kernels' by one step.
_FLAGS = (
    "-O3",
    "-U__CUDA_NO_HALF_OPERATORS__",
    "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__",
    "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT162_OPERATORS__",
    "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
    "--expt-relaxed-constexpr",
    "-diag-suppress=177",  # TVM's header and CSE temporaries: "declared but never referenced", by the dozen
)


class NvccError(RuntimeError):
    """nvcc is missing or failed (the message holds the tail of its output)."""


# -- the compiler ------------------------------------------------------------------------------


@functools.cache
def nvcc_path() -> str | None:
    """The nvcc to use: ``$TVM_TQS_NVCC``, ``nvcc`` on PATH, ``$CUDA_HOME/bin``, ``/usr/local/cuda/bin``."""
    explicit = os.environ.get(ENV_NVCC)
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and os.access(os.path.join(root, "bin", "nvcc"), os.X_OK):
            return os.path.join(root, "bin", "nvcc")
    return None


@functools.cache
def version() -> tuple[int, int] | None:
    """nvcc's (major, minor) release, or None when there is no working nvcc."""
    path = nvcc_path()
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def available() -> bool:
    """Whether a working nvcc was found (tests skip without one)."""
    return version() is not None


def arch(target: Any) -> str:
    """The ``sm_XY`` of a CUDA target: registry name, `TargetSpec`, `tvm.target.Target`, dict or ``"sm_XY"``."""
    if isinstance(target, str) and re.fullmatch(r"sm_\d+[af]?", target):
        return target
    if isinstance(target, str) or hasattr(target, "tvm_target"):
        from .registry import get_target

        target = get_target(target).tvm_target
    t = target if isinstance(target, tvm.target.Target) else tvm.target.Target(target)
    if t.kind.name != "cuda":
        raise ValueError(f"not a CUDA target: {t}")
    sm = str(t.attrs.get("arch", ""))
    if not sm.startswith("sm_"):
        raise ValueError(f"CUDA target without an sm_XY arch: {t} (set 'arch')")
    return sm


def _arch_flags(sm: str, fmt: str) -> list[str]:
    if fmt == "fatbin":  # SASS for the exact arch + its PTX (the driver JIT-compiles it for newer GPUs)
        num = sm.removeprefix("sm_")
        return ["-gencode", f"arch=compute_{num},code=[sm_{num},compute_{num}]"]
    return [f"-arch={sm}"]


def compile_cuda(
    source: str,
    target: Any,
    fmt: str = DEFAULT_FORMAT,
    *,
    fast_math: bool = False,
    options: tuple[str, ...] | list[str] = (),
    timeout: float = 900,
) -> bytes:
    """Compile CUDA C (a built module's `cuda_source`) with nvcc into PTX, a cubin or a fatbin.

    Parameters
    ----------
    source : str
        The CUDA C of a built module.
    target
        Its arch (``"sm_87"``) or a CUDA target (registry name, TargetSpec, Target, dict).
    fmt : {"ptx", "cubin", "fatbin"}
        ``fatbin`` holds the SASS for the arch and its PTX.
    fast_math : bool
        ``--use_fast_math`` as TVM passes it; off by default (approximate reciprocals change the
        kernels' activation quantization, see ``_FLAGS``).
    options : sequence of str
        More nvcc flags.
    timeout : float
        Seconds before nvcc is stopped (a whole model compiles in seconds).

    Returns
    -------
    bytes
        The file nvcc wrote (PTX is text, without a trailing NUL).
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    path = nvcc_path()
    if path is None or not available():
        raise NvccError(f"nvcc not found (PATH, ${ENV_NVCC}, $CUDA_HOME/bin, /usr/local/cuda/bin)")
    sm = arch(target)
    with tempfile.TemporaryDirectory(prefix="tvm_tqs_nvcc_") as tmp:
        src, out = Path(tmp, "kernels.cu"), Path(tmp, f"kernels.{fmt}")
        src.write_text(source)
        cmd = [path, f"--{fmt}", *_arch_flags(sm, fmt), *_FLAGS]
        cmd += ["--use_fast_math"] if fast_math else []
        cmd += [*options, "-o", str(out), str(src)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            raise NvccError(f"nvcc ran over {timeout:.0f} s for {sm} ({fmt})") from err
        if proc.returncode != 0 or not out.is_file():
            log = (proc.stderr + proc.stdout).strip()
            raise NvccError(f"nvcc failed for {sm} ({fmt}), exit {proc.returncode}:\n{log[-4000:]}")
        return out.read_bytes()


def _ptxas_path() -> str | None:
    """ptxas of nvcc's toolkit: beside nvcc (or the file a wrapper script of that name sits beside)."""
    nvcc = nvcc_path()
    dirs = [os.path.dirname(nvcc), os.path.dirname(os.path.realpath(nvcc))] if nvcc else []
    for d in [*dirs, "/usr/local/cuda/bin"]:
        if os.access(os.path.join(d, "ptxas"), os.X_OK):
            return os.path.join(d, "ptxas")
    return shutil.which("ptxas")


def assemble(ptx: str | bytes, target: Any, *, timeout: float = 900) -> bytes:
    """Assemble PTX into a cubin for ``target``'s arch with ptxas (beside nvcc): what the driver does
    to embedded PTX at load time, so an error it would hit on the device shows here."""
    ptxas = _ptxas_path()
    if ptxas is None:
        raise NvccError("ptxas not found (beside nvcc, on PATH, in /usr/local/cuda/bin)")
    sm = arch(target)
    with tempfile.TemporaryDirectory(prefix="tvm_tqs_ptxas_") as tmp:
        src, out = Path(tmp, "kernels.ptx"), Path(tmp, "kernels.cubin")
        src.write_bytes(ptx.encode() if isinstance(ptx, str) else bytes(ptx).rstrip(b"\0"))
        proc = subprocess.run(
            [ptxas, f"-arch={sm}", "-O3", "-o", str(out), str(src)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0 or not out.is_file():
            raise NvccError(
                f"ptxas failed for {sm}, exit {proc.returncode}:\n{(proc.stderr + proc.stdout)[-4000:]}"
            )
        return out.read_bytes()


# -- PTX ---------------------------------------------------------------------------------------


def _text(ptx: str | bytes) -> str:
    return ptx.decode("utf-8", "replace").rstrip("\0") if isinstance(ptx, bytes | bytearray) else ptx


def ptx_target(ptx: str | bytes) -> str | None:
    """The ``.target`` of a PTX module (``"sm_87"``)."""
    m = re.search(r"^\s*\.target\s+(\w+)", _text(ptx), re.M)
    return m.group(1) if m else None


def ptx_entries(ptx: str | bytes) -> dict[str, Counter]:
    """Per ``.entry`` (kernel) of a PTX module: its instructions, counted by full opcode
    (``dp4a.s32.s32``, ``ld.global.nc.u32``; predicates dropped).
    """
    text = _text(ptx)
    out = {}
    for m in re.finditer(r"\.entry\s+(\w+)\s*\(", text):
        start = text.index("{", text.index(")", m.end()))
        depth, pos = 0, start
        for pos in range(start, len(text)):  # the body: braces nest ({ .reg ...; } scopes)
            depth += {"{": 1, "}": -1}.get(text[pos], 0)
            if depth == 0:
                break
        ops = Counter()
        for line in text[start + 1 : pos].splitlines():
            s = re.sub(r"//.*", "", line).strip().lstrip("{}").strip()
            if not s or s.startswith(".") or s.endswith(":"):
                continue  # directives, labels
            s = re.sub(r"^@!?%\w+\s+", "", s)  # predicate guard
            ops[s.split()[0].rstrip(";")] += 1
        out[m.group(1)] = ops
    return out


# -- what an artifact holds --------------------------------------------------------------------


def code_arch(fmt: str, code: bytes) -> list[str]:
    """The arches device code is for: ``["sm_87"]`` for PTX / a cubin; a fatbin lists each part
    (``"sm_87"`` for SASS, ``"compute_87"`` for PTX); ``[]`` for CUDA source."""
    if fmt == "ptx":
        t = ptx_target(code)
        return [t] if t else []
    if fmt in ("cubin", "fatbin") and code[:4] == b"\x7fELF":
        return [f"sm_{_cubin_sm(code)}"]
    if fmt in ("cubin", "fatbin") and code[:4] == b"\x50\xed\x55\xba":
        return _fatbin_archs(code)
    return []


def _cubin_sm(elf: bytes) -> int:
    abi_version, flags = elf[8], struct.unpack_from("<I", elf, 48)[0]
    # EF_CUDA_SM: bits 8-15 from ELF ABI version 8 (CUDA 12.8+), bits 0-7 before
    return (flags >> 8) & 0xFF if abi_version >= 8 else flags & 0xFF


def _fatbin_archs(data: bytes) -> list[str]:
    """Entries of a fatbin: a 16-byte header (magic, version, header size, payload size), then per
    entry kind (1 PTX, 2 ELF) at +0, its header size at +4, payload size at +8, arch at +28."""
    header, size = struct.unpack_from("<HQ", data, 6)
    pos, end, archs = header, header + size, []
    while pos + 32 <= min(end, len(data)):
        kind, ehead, payload = struct.unpack_from("<H2xIQ", data, pos)
        sm = struct.unpack_from("<I", data, pos + 28)[0]
        archs.append(f"{'compute' if kind == 1 else 'sm'}_{sm}")
        pos += ehead + payload
    return archs


def _u64(buf: bytes, pos: int) -> tuple[int, int]:
    if pos + 8 > len(buf):
        raise ValueError("truncated library blob")
    return struct.unpack_from("<Q", buf, pos)[0], pos + 8


def _str(buf: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = _u64(buf, pos)
    if pos + n > len(buf):
        raise ValueError("truncated library blob")
    return buf[pos : pos + n], pos + n


def _parse_blob(blob: bytes) -> tuple[list[int], list[int], list[tuple[str, bytes | None]]]:
    """tvm-ffi's library blob: ``u64 nbytes``, the import tree (CSR ``vec<u64>`` row pointers and
    child indices), then per module ``str kind`` and, except for the host library ``_lib``, ``bytes``
    (what the module's SaveToBytes wrote)."""
    nbytes, pos = _u64(blob, 0)
    body = blob[pos : pos + nbytes]
    if len(body) != nbytes:
        raise ValueError("truncated library blob")
    vecs, pos = [], 0
    for _ in range(2):
        n, pos = _u64(body, pos)
        vec = []
        for _ in range(n):
            v, pos = _u64(body, pos)
            vec.append(v)
        vecs.append(vec)
    row_ptr, children = vecs
    modules: list[tuple[str, bytes | None]] = []
    for _ in range(max(0, len(row_ptr) - 1)):
        kind, pos = _str(body, pos)
        payload = None
        if kind != b"_lib":
            payload, pos = _str(body, pos)
        modules.append((kind.decode(), payload))
    if pos != len(body):
        raise ValueError(f"library blob: {len(body) - pos} bytes left after {len(modules)} modules")
    return row_ptr, children, modules


def _build_blob(row_ptr: list[int], children: list[int], modules: list[tuple[str, bytes | None]]) -> bytes:
    def vec(v):
        return struct.pack(f"<Q{len(v)}Q", len(v), *v)

    def string(s: bytes):
        return struct.pack("<Q", len(s)) + s

    body = vec(row_ptr) + vec(children)
    for kind, payload in modules:
        body += string(kind.encode()) + (b"" if payload is None else string(payload))
    return struct.pack("<Q", len(body)) + body


def _split_cuda(payload: bytes) -> tuple[bytes, bytes, bytes]:
    """A CUDA module's bytes ``[str fmt][function table][bytes code]`` -> (fmt, table, code).

    The table's layout is TVM's business; the code is the last field, so it starts where a u64
    length equals the number of bytes after it (the first such position after the format).
    """
    fmt, start = _str(payload, 0)
    for pos in range(start, len(payload) - 7):
        if struct.unpack_from("<Q", payload, pos)[0] == len(payload) - pos - 8:
            return fmt, payload[start:pos], payload[pos + 8 :]
    raise ValueError("CUDA module bytes without a trailing code field")


def embed_blob(
    blob: bytes, compile_fn: Callable[[str], bytes], fmt: str, sources: set[str] | None = None
) -> bytes:
    """Replace the CUDA source of every ``"cuda"``-format module in a library blob by ``compile_fn(source)``.

    Parameters
    ----------
    blob : bytes
        ``runtime.ModulePackImportsToTensor(mod)``: what ``export_library`` embeds.
    compile_fn : callable
        CUDA C -> device code (`compile_cuda` for an arch).
    fmt : str
        The format recorded for the new code (``ptx``, ``cubin``, ``fatbin``). TVM's loader only
        tells ``"cuda"`` (compile now) from the rest, which it hands to ``cuModuleLoadData``.
    sources : set of str, optional
        The CUDA sources the blob must hold (from the in-memory modules): a check that the blob was
        read right.

    Returns
    -------
    bytes
        The new blob; modules already compiled (a build on a host with the driver) are kept.
    """
    row_ptr, children, modules = _parse_blob(blob)
    out = []
    for kind, payload in modules:
        if kind == "cuda" and payload is not None:
            old_fmt, table, code = _split_cuda(payload)
            if old_fmt == b"cuda":
                source = code.decode("utf-8")
                if sources is not None and source not in sources:
                    raise ValueError("CUDA module bytes do not hold the module's source")
                data = compile_fn(source)
                if fmt == "ptx" and not data.endswith(b"\0"):
                    data += b"\0"  # cuModuleLoadData reads PTX as a C string
                payload = (
                    struct.pack("<Q", len(fmt)) + fmt.encode() + table + struct.pack("<Q", len(data)) + data
                )
        out.append((kind, payload))
    return _build_blob(row_ptr, children, out)


def _llvm_target_string(mod) -> str | None:
    """The host LLVM target of the library (what ``export_library`` packs the blob for)."""
    for m in _modules(mod, ("llvm",)):
        return m.get_function("_get_target_string")()
    return None


def pack_imports(target: Any, fmt: str = DEFAULT_FORMAT, *, fast_math: bool = False) -> Callable:
    """An ``fpack_imports`` for ``export_library`` that embeds nvcc's ``fmt`` for ``target``'s arch.

    It writes ``devc.o`` (LLVM's ``codegen_blob``, as ``export_library`` does by default) or, without
    a host LLVM module, ``devc.c``; the library is then linked by the target's compiler as usual.
    """
    sm = arch(target)
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")

    def fpack_imports(mod, is_system_lib: bool, prefix: str, workspace_dir: str) -> str:
        import tvm_ffi

        blob = bytes(tvm_ffi.get_global_func("runtime.ModulePackImportsToTensor")(mod).numpy().tobytes())
        sources = {m.inspect_source("cuda") for m in _modules(mod, ("cuda",))}
        blob = embed_blob(blob, lambda src: compile_cuda(src, sm, fmt, fast_math=fast_math), fmt, sources)
        llvm_target = _llvm_target_string(mod)
        if llvm_target and tvm.runtime.enabled("llvm"):
            path = os.path.join(workspace_dir, f"{prefix}devc.o")
            obj = tvm_ffi.get_global_func("codegen.codegen_blob")(blob, is_system_lib, llvm_target, prefix)
            obj.write_to_file(path)
            return path
        if is_system_lib:
            raise NvccError("embedding device code into a system library needs a host LLVM module")
        path = os.path.join(workspace_dir, f"{prefix}devc.c")
        with open(path, "w") as f:
            f.write(_c_blob(prefix + BLOB_SYMBOL, blob))
        return path

    return fpack_imports


def _c_blob(symbol: str, blob: bytes) -> str:
    rows = ",\n".join(",".join(f"0x{b:02x}" for b in blob[i : i + 20]) for i in range(0, len(blob), 20))
    return (
        '#ifdef __cplusplus\nextern "C" {\n#endif\n'
        f"extern const unsigned char {symbol}[];\n"
        f"const unsigned char {symbol}[{len(blob)}] = {{\n{rows}\n}};\n"
        "#ifdef __cplusplus\n}\n#endif\n"
    )


def _format_from_env(fmt: str | None) -> str | None:
    fmt = fmt or os.environ.get(ENV_FORMAT, DEFAULT_FORMAT)
    if fmt == "source":
        return None
    if fmt not in FORMATS:
        raise ValueError(f"{ENV_FORMAT} must be one of {FORMATS} or 'source', got {fmt!r}")
    return fmt


def _is_cuda(target: Any) -> bool:
    try:
        arch(target)
    except ValueError:
        return False
    return True


@functools.cache
def _warn_source_once() -> None:
    warnings.warn(
        "nvcc not found: CUDA artifacts keep CUDA C source, which the device compiles when it loads "
        "them (needs Python TVM with NVRTC or nvcc there). Install the CUDA toolkit or set "
        f"{ENV_NVCC} to embed PTX.",
        stacklevel=3,
    )


def export_options(target: Any, fmt: str | None = None, *, fast_math: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``export_library`` that embed device code for a CUDA target.

    ``{}`` (keep the CUDA source, with a warning) for non-CUDA targets, without nvcc, or with
    ``$TVM_TQS_CUDA_FORMAT=source``. ``fmt`` defaults to ``$TVM_TQS_CUDA_FORMAT`` or ``"ptx"``.
    nvcc's release sets the PTX ISA / cubin version, hence the oldest driver that loads the result
    (nvcc 13: r580): building for an older device (JetPack 6: CUDA 12.6), point ``$TVM_TQS_NVCC``
    at that CUDA's nvcc.
    """
    if not _is_cuda(target):
        return {}
    fmt = _format_from_env(fmt)
    if fmt is None:
        return {}
    if not available():
        _warn_source_once()
        return {}
    return {"fpack_imports": pack_imports(target, fmt, fast_math=fast_math)}


@contextlib.contextmanager
def embed(target: Any, fmt: str | None = None, *, fast_math: bool = False) -> Iterator[None]:
    """Within the block, TVM's build-time CUDA compilation uses nvcc for ``target``'s arch.

    Only hosts where TVM's CUDA runtime loads (the NVIDIA driver is installed) compile CUDA while
    building; there TVM's default callback uses NVRTC (``cuda-bindings``; an error without it) for
    the arch of the current target or of the local GPU, with fast math. This replaces
    ``tvm_callback_cuda_compile`` by nvcc for the exact arch and restores the previous callback on
    exit. A no-op for non-CUDA targets, without nvcc, or with ``$TVM_TQS_CUDA_FORMAT=source``.
    Not thread-safe: the callback is process-global.
    """
    fmt = _format_from_env(fmt) if _is_cuda(target) else None
    if fmt is None or not available():
        yield
        return
    import tvm_ffi

    sm = arch(target)

    def callback(code, *_):  # TVM 0.27 passes the code; older/other callers add the target
        data = compile_cuda(str(code), sm, fmt, fast_math=fast_math)
        return data + b"\0" if fmt == "ptx" else data  # first byte "/": TVM records it as PTX

    old = tvm_ffi.get_global_func(CALLBACK, allow_missing=True)
    tvm_ffi.register_global_func(CALLBACK, callback, override=True)
    try:
        yield
    finally:
        if old is not None:
            tvm_ffi.register_global_func(CALLBACK, old, override=True)
        else:
            tvm_ffi.registry.remove_global_func(CALLBACK)


def embedded_device_code(library: str | os.PathLike) -> list[tuple[str, bytes]]:
    """``[(format, code)]`` of the CUDA modules in an exported library (``.so`` or ``.o``, any arch),
    read from its ELF file without loading it: ``("cuda", source)`` when the device compiles it at
    load time, else ``("ptx" | "cubin" | "fatbin", binary)``."""
    blob = _elf_symbol(Path(library).read_bytes(), BLOB_SYMBOL)
    nbytes = struct.unpack_from("<Q", blob, 0)[0]
    _, _, modules = _parse_blob(blob[: 8 + nbytes])
    out = []
    for kind, payload in modules:
        if kind == "cuda" and payload is not None:
            fmt, _, code = _split_cuda(payload)
            out.append((fmt.decode(), code))
    return out


def _elf_symbol(elf: bytes, name: str) -> bytes:
    """The bytes of a defined symbol of a little-endian ELF64 file (from .symtab or .dynsym); for a
    ``.so`` up to the end of its section (the caller knows the real length)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    shoff = struct.unpack_from("<Q", elf, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", elf, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", elf, shoff + i * shentsize) for i in range(shnum)]
    # (name, type, flags, addr, offset, size, link, info, addralign, entsize)
    for sec in sections:
        if sec[1] not in (2, 11):  # SHT_SYMTAB, SHT_DYNSYM
            continue
        strtab = sections[sec[6]]
        for off in range(sec[4], sec[4] + sec[5], 24):
            st_name, _, _, shndx, value, size = struct.unpack_from("<IBBHQQ", elf, off)
            start = strtab[4] + st_name
            if elf[start : elf.index(b"\0", start)].decode() != name or shndx in (0, 0xFFF1, 0xFFF2):
                continue
            target = sections[shndx]
            base = target[4] + (value - target[3] if target[3] else value)
            return elf[base : base + size] if size else elf[base : target[4] + target[5]]
    raise ValueError(f"no symbol {name} in the library (not an exported TVM library?)")
