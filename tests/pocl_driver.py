"""Run TVM's OpenCL kernels on the CPU under PoCL, with the launch sequence TVM's host code performs.

TVM 0.27's wheel has no OpenCL runtime, but it generates OpenCL C. This driver replays what the
runtime would do with it:

* `lower` runs TVM's own TIR pipeline (``tvm.tirx.get_default_tir_pipeline``, as ``tvm.tirx.build``
  does) and snapshots the module just before ``MakePackedAPI``: there the host half of every
  PrimFunc is still plain TIR: its parameters, its workspace allocations (``AllocBuffer``) and
  one ``call_ffi_kernel(name, *args, *extents, launch_params=[...])`` per device kernel, in order.
  Kernel arguments are resolved through the buffer views (``DeclBuffer``) to a PrimFunc parameter
  or a workspace, never by name (StorageRewrite gives one workspace several names). The device
  half goes through the device finalization passes and ``target.build.opencl`` for the source.
* `Runner` builds that source with pyopencl on PoCL and launches each kernel with
  ``global = grid * block`` and ``local = block`` over ``work_dim`` dimensions, as TVM's
  ``OpenCLWrappedFunc`` does; workspaces and outputs start poisoned (all bytes 0xFF: NaN, -1) so a
  read of something no kernel wrote shows.
* `RelaxRunner` runs a Relax module: TVM's default Relax pipeline for the target (what
  ``tvm.compile`` applies before VM code generation), then ``main``'s VM-level bindings in order:
  storage and tensor allocations (storage reuse included), PrimFunc calls, reshapes, tuples.

Two deviations from TVM's runtime, both without effect on the numbers:

* TVM builds each ``// Function:`` section of the source as its own program; the driver builds the
  whole source once (each section is the same preamble, forward declarations and one kernel
  definition, so every kernel's code is identical).
* PoCL's CPU device has no ``cl_khr_fp16``: on such a device, the ``#error`` preamble TVM emits for
  half types is dropped and every ``convert_float(p[i])`` load of a ``__global half*`` becomes
  ``vload_half(i, p)`` (both exact half -> float conversions). Any other use of ``half`` is refused.

CUDA-scheduled kernels can run too when lowered with an OpenCL target: their tensorized
``__dp4a`` calls then need ``Runner(..., prelude=DP4A_OPENCL)``, an OpenCL C ``__dp4a``.

>>> low = lower(kernel.func)                       # target from the PrimFunc's "target" attribute
>>> (out,) = Runner(low)(kernel.name, x, *consts)  # parameters not given are the outputs
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm
from tvm import relax

__all__ = [
    "DP4A_OPENCL",
    "HostFunc",
    "KernelArg",
    "Launch",
    "Lowered",
    "RelaxRunner",
    "Runner",
    "TensorDesc",
    "Unsupported",
    "lower",
    "pocl_device",
    "unavailable_reason",
]

POCL_PLATFORM = "Portable Computing Language"
POISON = 0xFF  # NaN for floats, -1 for signed integers


class Unsupported(NotImplementedError):
    """The module does something this driver does not replay (rather than guess)."""


# -- what TVM's host code does, read from its TIR ------------------------------------------------


@dataclass(frozen=True)
class TensorDesc:
    """A PrimFunc parameter or a workspace: name (for messages only), static shape, dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        t = tvm.runtime.DataType(self.dtype)
        return math.prod(self.shape) * t.lanes * ((t.bits + 7) // 8)


@dataclass(frozen=True)
class KernelArg:
    """One argument of a kernel launch: PrimFunc parameter ``index``, workspace ``index``, or a scalar."""

    kind: str  # "param" | "workspace" | "scalar"
    index: int = -1
    value: int | float | None = None
    dtype: str = ""


@dataclass(frozen=True)
class Launch:
    """One ``clEnqueueNDRangeKernel``: grid = blocks per dimension, block = threads per block."""

    kernel: str
    args: tuple[KernelArg, ...]
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    work_dim: int

    @property
    def global_size(self) -> tuple[int, ...]:
        return tuple(g * b for g, b in zip(self.grid, self.block, strict=True))[: self.work_dim]

    @property
    def local_size(self) -> tuple[int, ...]:
        return self.block[: self.work_dim]


@dataclass(frozen=True)
class HostFunc:
    """The host side of one PrimFunc: its parameters, workspaces and kernel launches in order."""

    name: str
    params: tuple[TensorDesc, ...]
    workspaces: tuple[TensorDesc, ...]
    launches: tuple[Launch, ...]


@dataclass(frozen=True)
class Lowered:
    """OpenCL C exactly as TVM generated it, and the host functions that launch its kernels."""

    source: str
    funcs: dict[str, HostFunc] = field(hash=False)
    # per kernel parameter: "*<element dtype>" for a pointer (e.g. "*int8"), else the scalar dtype
    kernel_params: dict[str, tuple[str, ...]] = field(hash=False)


_THREAD_TAGS = {
    "blockIdx.x": ("grid", 0),
    "blockIdx.y": ("grid", 1),
    "blockIdx.z": ("grid", 2),
    "threadIdx.x": ("block", 0),
    "threadIdx.y": ("block", 1),
    "threadIdx.z": ("block", 2),
}


def _is_device_kernel(func) -> bool:
    """A kernel SplitHostDevice made (launched by the host; calling convention kDeviceKernelLaunch)."""
    attrs = func.attrs
    return attrs is not None and ("tirx.is_global_func" in attrs or int(attrs.get("calling_conv", 0)) == 2)


def _int(expr, what: str) -> int:
    if isinstance(expr, tvm.tirx.IntImm):
        return int(expr.value)
    if isinstance(expr, int):
        return expr
    raise Unsupported(f"{what} is not a constant ({expr}): dynamic shapes are not supported")


def _buffer_var(expr):
    """The buffer Var of a ``tirx.buffer_data(buf)`` call (a buffer's data pointer), else None."""
    op = getattr(expr, "op", None)
    if isinstance(op, tvm.ir.Op) and op.name == "tirx.buffer_data":
        return expr.args[0]
    return None


class _HostReader:
    """Walks one host PrimFunc (before MakePackedAPI): allocations, buffer views, kernel launches."""

    def __init__(self, name: str, func: tvm.tirx.PrimFunc):
        self.name = name
        self.roots: list[tuple[Any, tuple[str, int]]] = []  # (buffer Var, ("param"|"workspace", i))
        self.params = []
        for i, p in enumerate(func.params):
            ty = p.ty
            if not isinstance(ty, tvm.tirx.buffer.BufferType):
                raise Unsupported(f"{name}: scalar parameter {p} (only tensor parameters are supported)")
            self.params.append(
                TensorDesc(
                    str(p.name), tuple(_int(d, f"{name}: shape of {p.name}") for d in ty.shape), str(ty.dtype)
                )
            )
            self.roots.append((p, ("param", i)))
        self.workspaces: list[TensorDesc] = []
        self.launches: list[Launch] = []
        self._visit(func.body)

    def _root(self, var) -> tuple[str, int]:
        for v, root in self.roots:
            if v.same_as(var):
                return root
        raise Unsupported(f"{self.name}: buffer {var} is neither a parameter nor a workspace")

    def _visit(self, stmt) -> None:
        if isinstance(stmt, tvm.tirx.SeqStmt):
            for s in stmt.seq:
                self._visit(s)
        elif isinstance(stmt, tvm.tirx.AttrStmt):
            self._visit(stmt.body)
        elif isinstance(stmt, tvm.tirx.AllocBuffer):
            buf = stmt.buffer
            scope = buf.scope()
            if scope != "global":
                raise Unsupported(f"{self.name}: host allocation {buf.name} in scope {scope!r}")
            shape = tuple(_int(d, f"{self.name}: shape of {buf.name}") for d in buf.shape)
            self.roots.append((buf, ("workspace", len(self.workspaces))))
            self.workspaces.append(TensorDesc(str(buf.name), shape, str(buf.dtype)))
        elif isinstance(stmt, tvm.tirx.DeclBuffer):
            # a view (reshape / flattening / storage reuse) of a parameter or a workspace
            src = _buffer_var(stmt.data)
            if src is None:
                raise Unsupported(f"{self.name}: buffer {stmt.buffer.name} declared on {stmt.data}")
            self.roots.append((stmt.buffer, self._root(src)))
        elif isinstance(stmt, tvm.tirx.Evaluate):
            self._evaluate(stmt.value)
        else:
            raise Unsupported(
                f"{self.name}: the host code has a {type(stmt).__name__} statement; only allocations and "
                f"kernel launches are replayed (code outside thread bindings would run on the host): "
                f"{str(stmt)[:200]}"
            )

    def _evaluate(self, call) -> None:
        if isinstance(call, tvm.tirx.IntImm):
            return  # a no-op
        op = getattr(call, "op", None)
        if not (isinstance(op, tvm.ir.Op) and op.name == "tirx.call_ffi_kernel"):
            raise Unsupported(f"{self.name}: host call {str(call)[:200]} (only kernel launches are replayed)")
        tags = [str(t) for t in call.attrs.launch_params]
        kernel = str(call.args[0].value)
        rest = list(call.args[1:])
        n_args = len(rest) - len(tags)
        args, extents = rest[:n_args], rest[n_args:]
        dims = {"grid": [1, 1, 1], "block": [1, 1, 1]}
        work_dim = 1
        for tag, ext in zip(tags, extents, strict=True):
            if tag not in _THREAD_TAGS:
                raise Unsupported(f"{self.name}: launch parameter {tag!r} of {kernel}")
            kind, axis = _THREAD_TAGS[tag]
            dims[kind][axis] = _int(ext, f"{kernel}: extent of {tag}")
            work_dim = max(work_dim, axis + 1)
        self.launches.append(
            Launch(
                kernel,
                tuple(self._arg(kernel, a) for a in args),
                tuple(dims["grid"]),
                tuple(dims["block"]),
                work_dim,
            )
        )

    def _arg(self, kernel: str, expr) -> KernelArg:
        var = _buffer_var(expr)
        if var is not None:
            kind, index = self._root(var)
            return KernelArg(kind, index)
        if isinstance(expr, tvm.tirx.IntImm):
            return KernelArg("scalar", value=int(expr.value), dtype=str(expr.dtype))
        if isinstance(expr, tvm.tirx.FloatImm):
            return KernelArg("scalar", value=float(expr.value), dtype=str(expr.dtype))
        raise Unsupported(f"{self.name}: argument {expr} of {kernel} (not a buffer or a constant)")


@tvm.instrument.pass_instrument
class _Snapshot:
    """Keeps the module as it enters MakePackedAPI (host code still plain TIR)."""

    def __init__(self):
        self.before_packed_api = None

    def run_before_pass(self, mod, info):
        if info.name.endswith("MakePackedAPI"):
            self.before_packed_api = mod


def _as_module(funcs) -> tvm.IRModule:
    if isinstance(funcs, tvm.tirx.PrimFunc):
        name = funcs.attrs["global_symbol"] if funcs.attrs and "global_symbol" in funcs.attrs else "main"
        return tvm.IRModule({str(name): funcs})
    if isinstance(funcs, Mapping):
        return tvm.IRModule(dict(funcs))
    return tvm.IRModule({gv: f for gv, f in funcs.functions.items() if isinstance(f, tvm.tirx.PrimFunc)})


def _target_of(mod: tvm.IRModule, target) -> tvm.target.Target:
    if target is None:
        for f in mod.functions.values():
            if f.attrs is not None and "target" in f.attrs:
                target = f.attrs["target"]
                break
    if target is None:
        raise ValueError("no target given and no PrimFunc has a 'target' attribute")
    target = tvm.target.Target(target)
    if target.kind.name != "opencl":
        raise ValueError(f"the PoCL driver runs OpenCL code; target kind is {target.kind.name!r}")
    return target if target.host is not None else target.with_host(tvm.target.Target({"kind": "llvm"}))


def lower(funcs, target=None) -> Lowered:
    """TVM's TIR lowering of ``funcs`` (a PrimFunc, an IRModule, or a name -> PrimFunc mapping).

    Parameters
    ----------
    funcs : tvm.tirx.PrimFunc, tvm.IRModule or Mapping
        GPU-scheduled PrimFuncs (an IRModule's Relax functions are ignored).
    target : tvm.target.Target or dict, optional
        An OpenCL target; by default the first PrimFunc's ``target`` attribute.

    Returns
    -------
    Lowered
        The OpenCL source and, per PrimFunc, its parameters, workspaces and launches.
    """
    mod = _as_module(funcs)
    target = _target_of(mod, target)
    # what tvm.tirx.build does before code generation: bind the target, run its default pipeline
    mod = tvm.tirx.transform.BindTarget(target)(mod)
    pipeline, _, finalize_device = tvm.tirx.get_default_tir_pipeline(target)
    snap = _Snapshot()
    current = tvm.transform.PassContext.current()
    with tvm.transform.PassContext(
        opt_level=current.opt_level, config=dict(current.config), instruments=[snap]
    ):
        low = pipeline(mod)
    if snap.before_packed_api is None:
        raise RuntimeError("TVM's TIR pipeline ran no MakePackedAPI pass: cannot read the host code")
    tir_build = importlib.import_module("tvm.tirx.build")  # the module; tvm.tirx.build is its function
    _, device_mods = tir_build.split_host_device_mods(low)
    if not device_mods:  # TVM would compile the loops for the host and run them there, silently
        raise Unsupported(
            "no device kernel: the PrimFunc(s) have no GPU thread binding and would run on the host"
        )
    if len(device_mods) != 1:
        raise Unsupported(f"expected one device module, got {len(device_mods)}")
    ((dev_target, dev_mod),) = device_mods.items()
    dev_mod = finalize_device()(dev_mod)
    source = tir_build.codegen_build(dev_mod, dev_target).inspect_source()
    kernel_params = {
        gv.name_hint: tuple(_param_kind(p) for p in f.params) for gv, f in dev_mod.functions.items()
    }
    host = {}
    for gv, f in snap.before_packed_api.functions.items():
        if isinstance(f, tvm.tirx.PrimFunc) and not _is_device_kernel(f):
            host[gv.name_hint] = _host_func(gv.name_hint, f, low, kernel_params)
    return Lowered(source, host, kernel_params)


def _param_kind(p) -> str:
    """``*<element dtype>`` for a pointer parameter of a device kernel, else its scalar dtype.

    The element type is what the kernel reads through the pointer: with storage reuse, one workspace
    serves as float32 for one kernel and int8 for the next.
    """
    if isinstance(p.ty, tvm.ir.PointerType):
        elem = p.ty.element_type
        return "*" + (str(elem.dtype) if isinstance(elem, tvm.ir.PrimType) else "void")
    if isinstance(p.ty, tvm.ir.PrimType):
        return str(p.ty.dtype)
    raise Unsupported(f"device kernel parameter {p} of type {p.ty}")


def _host_func(name: str, func, low: tvm.IRModule, kernel_params) -> HostFunc:
    r = _HostReader(name, func)
    # the finished host function must launch the same kernels in the same order
    final = re.findall(r'call_ffi_kernel\("([^"]+)"', low[name].script())
    if final != [x.kernel for x in r.launches]:
        raise RuntimeError(f"{name}: launches before MakePackedAPI {r.launches} differ from after: {final}")
    for la in r.launches:
        want = kernel_params.get(la.kernel)
        if want is None or len(want) != len(la.args):
            raise RuntimeError(f"{name}: {la.kernel} takes {want}, launched with {len(la.args)} arguments")
    return HostFunc(name, tuple(r.params), tuple(r.workspaces), tuple(r.launches))


# -- PoCL -----------------------------------------------------------------------------------------


def unavailable_reason() -> str | None:
    """Why PoCL cannot run here (pyopencl missing, no PoCL CPU device), or None when it can."""
    try:
        import pyopencl as cl
    except ImportError:
        return "pyopencl is not installed"
    try:
        platforms = cl.get_platforms()
    except cl.Error as e:  # no ICD loader / no platform at all
        return f"no OpenCL platform: {e}"
    for p in platforms:
        if p.name == POCL_PLATFORM and p.get_devices():
            return None
    return f"no PoCL platform (found: {[p.name for p in platforms]}); install pocl-opencl-icd"


_DEVICE: dict[str, Any] = {}


def pocl_device():
    """(context, queue) on PoCL's CPU device, created once per process."""
    if not _DEVICE:
        import pyopencl as cl

        reason = unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        (platform,) = [p for p in cl.get_platforms() if p.name == POCL_PLATFORM]
        device = platform.get_devices()[0]
        ctx = cl.Context([device])
        _DEVICE.update(ctx=ctx, queue=cl.CommandQueue(ctx), device=device)
    return _DEVICE["ctx"], _DEVICE["queue"]


_FP16_PREAMBLE = re.compile(r"#ifdef cl_khr_fp16\n.*?#endif\n", re.S)


def _half_params(source: str) -> set[str]:
    return set(re.findall(r"__global half\* restrict (\w+)", source))


def emulate_fp16(source: str) -> str:
    """Make TVM's fp16-weight kernels build on a device without ``cl_khr_fp16`` (see module doc).

    Only the pattern the kernels use is rewritten: a half load converted to float at once.
    Raises Unsupported if any other use of ``half`` remains.
    """
    out = _FP16_PREAMBLE.sub("", source)
    for name in _half_params(out):
        out = _rewrite_half_loads(out, name)
    # what may still mention half: the parameter declarations (pointers to half are legal)
    rest = re.sub(r"__global half\* restrict \w+", "", out)
    if re.search(r"\bhalf\d*\b", rest):
        raise Unsupported("the OpenCL source uses half beyond converted loads; PoCL here has no cl_khr_fp16")
    return out


def _rewrite_half_loads(source: str, name: str) -> str:
    """``convert_float(name[<index>])`` -> ``vload_half(<index>, name)`` (balanced brackets)."""
    head = f"convert_float({name}["
    out, pos = [], 0
    while (start := source.find(head, pos)) >= 0:
        i, depth = start + len(head), 1
        while depth:
            depth += {"[": 1, "]": -1}.get(source[i], 0)
            i += 1
        if source[i] != ")":
            raise Unsupported(f"unexpected half load: {source[start : i + 20]}")
        index = source[start + len(head) : i - 1]
        out += [source[pos:start], f"vload_half({index}, {name})"]
        pos = i + 1
    return "".join(out) + source[pos:]


# CUDA's __dp4a (4 signed byte products summed into c) in OpenCL C, for CUDA-scheduled kernels lowered
# with an OpenCL target: TVM prints int8x4 as char4 there, and the int4 intrinsic passes one operand as
# a packed int, hence the overloads (clang's `overloadable`, which PoCL accepts). Bytes are taken
# little-endian (x = bits 0-7), as CUDA does.
DP4A_OPENCL = """\
int __attribute__((overloadable)) __dp4a(char4 a, char4 b, int c) {
  int4 p = convert_int4(a) * convert_int4(b);
  return c + p.x + p.y + p.z + p.w;
}
int __attribute__((overloadable)) __dp4a(char4 a, int b, int c) { return __dp4a(a, as_char4(b), c); }
int __attribute__((overloadable)) __dp4a(int a, int b, int c) { return __dp4a(as_char4(a), as_char4(b), c); }

"""


def _np_dtype(dtype: str) -> np.dtype:
    return np.dtype(np.bool_) if dtype == "bool" else np.dtype(dtype)


@dataclass
class _DeviceTensor:
    """A tensor on the device: an OpenCL buffer (the whole storage), a byte offset, shape and dtype."""

    buffer: Any
    offset: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return TensorDesc("", self.shape, self.dtype).nbytes


class Runner:
    """Runs the PrimFuncs of a `Lowered` on PoCL (the source built once)."""

    def __init__(self, lowered: Lowered, *, keep_workspaces: bool = False, prelude: str = ""):
        """``prelude``: OpenCL C put before the source (e.g. `DP4A_OPENCL` for CUDA-scheduled kernels);
        ``keep_workspaces``: download the workspaces after each call into ``self.workspaces``."""
        import pyopencl as cl

        self.cl = cl
        self.keep_workspaces = keep_workspaces
        self.workspaces: list[tuple[TensorDesc, np.ndarray]] = []  # of the last launch, if kept
        self.lowered = lowered
        self.ctx, self.queue = pocl_device()
        device = self.ctx.devices[0]
        source = lowered.source
        if "cl_khr_fp16" not in device.extensions and _half_params(source):
            source = emulate_fp16(source)
        self.source = prelude + source
        # TVM's runtime passes no build options (opencl_module.cc: clBuildProgram(..., nullptr, ...))
        self.program = cl.Program(self.ctx, self.source).build()
        self.kernels = {name: cl.Kernel(self.program, name) for name in lowered.kernel_params}
        self.align = max(1, device.mem_base_addr_align // 8)  # sub-buffer origin alignment in bytes
        self.trace: list[Launch] = []

    # device memory helpers
    def alloc(self, nbytes: int):
        buf = self.cl.Buffer(self.ctx, self.cl.mem_flags.READ_WRITE, max(1, nbytes))
        self.cl.enqueue_fill_buffer(self.queue, buf, np.uint8(POISON), 0, max(1, nbytes))
        return buf

    def upload(self, array: np.ndarray) -> _DeviceTensor:
        array = np.ascontiguousarray(array)
        buf = self.alloc(array.nbytes)
        if array.nbytes:
            self.cl.enqueue_copy(self.queue, buf, array)
        return _DeviceTensor(buf, 0, tuple(array.shape), str(array.dtype))

    def download(self, t: _DeviceTensor) -> np.ndarray:
        out = np.empty(t.shape, _np_dtype(t.dtype))
        if out.nbytes:
            self.cl.enqueue_copy(self.queue, out, t.buffer, src_offset=t.offset)
        return out

    def _mem(self, t: _DeviceTensor):
        if t.offset == 0:
            return t.buffer
        if t.offset % self.align:
            raise Unsupported(
                f"tensor at byte offset {t.offset}: not a multiple of the device's {self.align}"
            )
        return t.buffer.get_sub_region(t.offset, t.nbytes)

    def launch(self, name: str, tensors: Sequence[_DeviceTensor]) -> None:
        """Run PrimFunc ``name`` on device tensors (its parameters, in order)."""
        func = self.lowered.funcs[name]
        if len(tensors) != len(func.params):
            raise TypeError(f"{name} takes {len(func.params)} tensors, got {len(tensors)}")
        for t, p in zip(tensors, func.params, strict=True):
            if t.nbytes != p.nbytes or _np_dtype(t.dtype) != _np_dtype(p.dtype):
                raise TypeError(
                    f"{name}: parameter {p.name} is {p.dtype}{list(p.shape)}, got {t.dtype}{list(t.shape)}"
                )
        params = [self._mem(t) for t in tensors]
        workspaces = [self.alloc(w.nbytes) for w in func.workspaces]
        for la in func.launches:
            kernel = self.kernels[la.kernel]
            dtypes = self.lowered.kernel_params[la.kernel]
            for i, (arg, dtype) in enumerate(zip(la.args, dtypes, strict=True)):
                if (arg.kind == "scalar") == dtype.startswith("*"):
                    raise TypeError(f"{la.kernel}: argument {i} ({arg.kind}) passed for a {dtype} parameter")
                if arg.kind == "param":
                    kernel.set_arg(i, params[arg.index])
                elif arg.kind == "workspace":
                    kernel.set_arg(i, workspaces[arg.index])
                else:
                    kernel.set_arg(i, _np_dtype(dtype).type(arg.value))
            self.cl.enqueue_nd_range_kernel(self.queue, kernel, la.global_size, la.local_size)
            self.trace.append(la)
        self.queue.finish()
        if self.keep_workspaces:  # their final contents (intermediates such as quantized activations)
            self.workspaces = [
                (w, self.download(_DeviceTensor(buf, 0, (w.nbytes,), "uint8")))
                for w, buf in zip(func.workspaces, workspaces, strict=True)
            ]

    def __call__(self, name: str, *inputs: np.ndarray) -> list[np.ndarray]:
        """Run PrimFunc ``name`` on the given leading parameters; returns the remaining ones (outputs).

        The outputs start poisoned (0xFF bytes), so an element no kernel writes shows as NaN / -1.
        """
        func = self.lowered.funcs[name]
        if len(inputs) > len(func.params):
            raise TypeError(f"{name} takes {len(func.params)} parameters, got {len(inputs)} inputs")
        tensors = []
        for a, p in zip(inputs, func.params, strict=False):
            a = np.asarray(a)
            if tuple(a.shape) != p.shape or a.dtype != _np_dtype(p.dtype):
                raise TypeError(
                    f"{name}: parameter {p.name} is {p.dtype}{list(p.shape)}, got {a.dtype}{list(a.shape)}"
                )
            tensors.append(self.upload(a))
        outputs = [
            _DeviceTensor(self.alloc(p.nbytes), 0, p.shape, p.dtype) for p in func.params[len(inputs) :]
        ]
        self.launch(name, tensors + outputs)
        return [self.download(t) for t in outputs]


# -- Relax ----------------------------------------------------------------------------------------


def vm_module(mod: tvm.IRModule, target) -> tvm.IRModule:
    """``mod`` after TVM's default Relax pipeline for ``target`` (what ``tvm.compile`` runs before
    VM code generation): ``main`` allocates storage and tensors and calls PrimFuncs in VM order."""
    target = tvm.target.Target(target)
    with target:
        return relax.get_default_pipeline(target)(mod)


class RelaxRunner:
    """Runs a (GPU-scheduled) Relax module's ``main`` on PoCL, binding by binding, in VM order.

    Parameters
    ----------
    mod : tvm.IRModule
        A Relax module whose PrimFuncs all have GPU thread bindings (e.g. after
        ``tvm_tqs.targets.build.schedule(mod, "opencl/mali")``).
    target : tvm.target.Target or dict
        The OpenCL target (with its host), e.g. ``get_target("opencl/mali").target()``.
    """

    def __init__(self, mod: tvm.IRModule, target):
        self.target = _target_of(mod, target)
        self.vm_mod = vm_module(mod, self.target)
        self.runner = Runner(lower(self.vm_mod, self.target))
        self.calls: list[str] = []  # PrimFuncs called by the last run, in order

    def __call__(self, *inputs: np.ndarray):
        main = self.vm_mod["main"]
        if len(inputs) != len(main.params):
            raise TypeError(f"main takes {len(main.params)} inputs, got {len(inputs)}")
        env: list[tuple[Any, Any]] = []
        for p, x in zip(main.params, inputs, strict=True):
            env.append((p, self.runner.upload(np.asarray(x))))
        self.calls = []
        for block in main.body.blocks:
            for binding in block.bindings:
                if type(binding).__name__ != "VarBinding":
                    raise Unsupported(f"binding {type(binding).__name__}: {str(binding)[:200]}")
                env.append((binding.var, self._eval(binding.value, env)))
        return self._output(self._value(main.body.body, env))

    def _output(self, value):
        if isinstance(value, _DeviceTensor):
            return self.runner.download(value)
        if isinstance(value, tuple):
            return tuple(self._output(v) for v in value)
        raise Unsupported(f"main returns {type(value).__name__}")

    def _value(self, expr, env):
        kind = type(expr).__name__
        if kind in ("Var", "DataflowVar"):
            for v, val in reversed(env):
                if v.same_as(expr):
                    return val
            raise KeyError(f"unbound variable {expr}")
        if kind == "GenericConst" and isinstance(expr.value, tvm.runtime.Tensor):
            return self.runner.upload(expr.value.numpy())
        if kind == "Tuple":
            return tuple(self._value(f, env) for f in expr.fields)
        if kind == "TupleGetItem":
            return self._value(expr.tuple_value, env)[expr.index]
        if kind == "ShapeExpr":
            return tuple(_int(v, "shape") for v in expr.values)
        if kind in ("IntImm", "StringImm", "GenericConst"):
            return expr.value
        raise Unsupported(f"Relax expression {kind}: {str(expr)[:200]}")

    def _eval(self, expr, env):
        if type(expr).__name__ != "Call":
            return self._value(expr, env)
        op = expr.op
        if isinstance(op, tvm.ir.GlobalVar):
            return self._call_prim_func(op.name_hint, expr.args, env)
        if isinstance(op, relax.ExternFunc):
            return self._builtin(str(op.global_symbol), expr.args, env)
        name = op.name if isinstance(op, tvm.ir.Op) else str(op)
        args = expr.args
        if name == "relax.null_value":
            return None
        if name == "relax.vm.alloc_storage":
            (nbytes,) = self._value(args[0], env)
            scope = str(args[3].value)
            if scope != "global":
                raise Unsupported(f"storage scope {scope!r} (textures are not replayed)")
            return self.runner.alloc(nbytes)
        if name == "relax.vm.alloc_tensor":
            storage = self._value(args[0], env)
            offset = _int(args[1], "alloc_tensor offset")
            shape = self._value(args[2], env)
            return _DeviceTensor(storage, offset, shape, str(args[3].value))
        if name == "relax.vm.kill_object":
            return None  # the VM drops a register; Python's references do the same job
        raise Unsupported(f"Relax op {name}: {str(expr)[:200]}")

    def _builtin(self, name: str, args, env):
        if name == "vm.builtin.check_tensor_info":
            t = self._value(args[0], env)
            ndim, dtype = _int(args[1], "ndim"), args[2].value
            if len(t.shape) != ndim or (str(dtype) and _np_dtype(t.dtype) != _np_dtype(str(dtype))):
                raise TypeError(f"input is {t.dtype}{list(t.shape)}: {args[3].value}")
            return None
        if name == "vm.builtin.match_shape":
            t = self._value(args[0], env)
            ndim = _int(args[2], "ndim")
            pairs = [(_int(args[3 + 2 * i], "kind"), _int(args[4 + 2 * i], "dim")) for i in range(ndim)]
            for d, (kind, value) in zip(t.shape, pairs, strict=True):
                if kind != 0:  # 0: assert equal to a constant; the others bind symbolic shapes
                    raise Unsupported("symbolic shapes (match_shape with variables)")
                if d != value:
                    raise TypeError(f"input shape {t.shape}: {args[-1].value}")
            return None
        if name == "vm.builtin.reshape":
            t = self._value(args[0], env)
            shape = self._value(args[1], env)
            if math.prod(shape) != math.prod(t.shape):
                raise ValueError(f"reshape {t.shape} -> {shape}")
            return _DeviceTensor(t.buffer, t.offset, tuple(shape), t.dtype)
        raise Unsupported(f"VM builtin {name}")

    def _call_prim_func(self, name: str, args, env) -> None:
        tensors = []
        for a in args:
            v = self._value(a, env)
            if not isinstance(v, _DeviceTensor):
                raise Unsupported(f"{name}: argument {str(a)[:100]} is not a tensor")
            tensors.append(v)
        self.calls.append(name)
        self.runner.launch(name, tensors)
        return None
