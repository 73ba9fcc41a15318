"""CUDA lowering of the quantized kernels, checked without a GPU: nvcc, the built code, the artifact.

* Every kernel variant (dense, conv1d NCW / NWC; int8, int4, fp16, fp32; the epilogues and ActQuant
  modes of the CPU kernel tests) compiles with nvcc for sm_87 (Jetson Orin) and sm_90 (Hopper): all
  variants of one arch in ONE module, one nvcc run to PTX and one ptxas run to SASS; each int8 /
  int4 PrimFunc has a ``dp4a`` in its PTX. ``-m slow`` sweeps the full product of the options.
* Nothing runs on the host: the scheduled module has a thread binding in every PrimFunc
  (`gpu.unbound_functions`) and, independently, the BUILT executable launches a device kernel for
  every PrimFunc and has no loop in its host code (`gpu_code.host_fallbacks`); an unscheduled and a
  half-scheduled PrimFunc are caught.
* Artifacts: export embeds nvcc's PTX / cubin / fatbin for the target's arch (x86 host for sm_90, an
  aarch64 ``.so`` for the Jetson), read back from the ELF file (this host has no CUDA runtime to load
  it). ``@pytest.mark.gpu``: the embedded PTX loads and computes the reference on a real GPU.

Tests that need nvcc skip without it; the host-fallback checks need TVM only.
"""

from __future__ import annotations

import itertools
import re
import shutil
import struct
import warnings
from collections import Counter

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import relax
from tvm.script import tirx as T

from tvm_tqs.passes.quantize import quantize
from tvm_tqs.targets import build as tbuild
from tvm_tqs.targets import gpu, gpu_code, nvcc
from tvm_tqs.targets.kernels import ACTIVATIONS, ActQuant, Conv1dSpec, Epilogue
from tvm_tqs.targets.registry import get_target

NEEDS_NVCC = pytest.mark.skipif(not nvcc.available(), reason="nvcc not found")
ARCHS = {"cuda/jetson-orin": "sm_87", "cuda/sm_90": "sm_90"}
KINDS = {"w8": "int8", "w4": "int4", "f16w": "fp16", "f32": "fp32"}  # kernelset._name's op tags


def _kind(name: str) -> str:
    return KINDS[re.match(r"tqs_(?:dense|conv1d)_(w8|w4|f16w|f32)_", name).group(1)]


# -- the kernel variants -------------------------------------------------------------------------

DENSE = [(1, 64, 32), (5, 70, 40), (3, 48, 130)]  # K not a multiple of 4; N over one 128-thread block
CONVS = [
    Conv1dSpec(2, 32, 96, 32, 3, dilation=4, padding=(8, 0)),  # causal TCN layer, NCW as PyTorch exports
    Conv1dSpec(1, 5, 19, 7, 2, stride=2, padding=(1, 1), layout="NWC"),
]


def fast_variants(ks) -> list:
    """What the CPU kernel tests build (test_targets_kernels_*, test_targets_build_kernels), each
    option at least once: ~40 kernels."""
    out = []
    for i, (m, k, n) in enumerate(DENSE):
        act = ACTIVATIONS[1 + i % 4]
        out += [
            ks.dense_int8(m, k, n, Epilogue(out_dtype="int32"), ActQuant("int8")),
            ks.dense_int8(m, k, n, Epilogue(activation="relu"), ActQuant("static")),
            ks.dense_int8(m, k, n, Epilogue(bias=True, activation=act)),
            ks.dense_int8(m, k, n, Epilogue(bias=True), ActQuant("int8")),
            ks.dense_int4(m, k, n, Epilogue(), ActQuant("static")),
            ks.dense_int4(m, k, n, Epilogue(bias=True, activation=act)),
            ks.dense_fp32(m, k, n, Epilogue(bias=True, activation=act)),
            ks.dense_fp16(m, k, n, Epilogue(bias=True)),
        ]
    res = Epilogue(bias=True, residual=True, activation="relu")
    out += [  # the quantize pass's forms: residual epilogues on N-d inputs, other int4 groups
        ks.dense_int8(1, 64, 256, res, ActQuant("static"), lead=(1, 1)),
        ks.dense_int4(1, 64, 256, res, ActQuant("static"), lead=(1, 1)),
        ks.dense_int8(96, 7, 24, Epilogue(residual=True, activation="tanh"), lead=(96, 1)),
        ks.dense_fp16(96, 7, 24, Epilogue(bias=True, residual=True), lead=(96, 1)),
        ks.dense_int4(4, 256, 48, Epilogue(bias=True), group_size=64),
        ks.dense_int4(4, 256, 48, Epilogue(bias=True), ActQuant("int8"), group_size=128),
    ]
    for spec in CONVS:
        out += [
            ks.conv1d_int8(spec, Epilogue(activation="relu"), ActQuant("static")),
            ks.conv1d_int8(spec, Epilogue(bias=True, activation="gelu")),
            ks.conv1d_int4(spec, Epilogue(), ActQuant("static")),
            ks.conv1d_int4(spec, Epilogue(bias=True, activation="sigmoid")),
            ks.conv1d_fp32(spec, Epilogue(bias=True, activation="tanh")),
            ks.conv1d_fp16(spec, Epilogue(bias=True)),
        ]
    return out


def all_variants(ks) -> list:
    """The product of the options: every ActQuant mode x bias x residual x activation for int8 and
    int4 on two shapes, the base forms on five shapes, int4 group sizes, N-d inputs, conv specs."""
    out = []
    epilogues = [
        Epilogue(bias=b, residual=r, activation=a)
        for b, r, a in itertools.product((False, True), (False, True), ACTIVATIONS)
    ]
    for m, k, n in [(1, 64, 32), (5, 70, 40)]:
        for epi, mode in itertools.product(epilogues, ("dynamic", "static", "int8")):
            out += [ks.dense_int8(m, k, n, epi, ActQuant(mode)), ks.dense_int4(m, k, n, epi, ActQuant(mode))]
        for epi in epilogues:
            out += [ks.dense_fp32(m, k, n, epi), ks.dense_fp16(m, k, n, epi)]
    for m, k, n in [(1, 7, 3), (64, 33, 17), (3, 48, 130), (256, 128, 300), (1, 256, 256)]:
        out += [
            ks.dense_int8(m, k, n, Epilogue(out_dtype="int32"), ActQuant("int8")),
            ks.dense_int8(m, k, n, Epilogue(bias=True, activation="relu")),
            ks.dense_int4(m, k, n, Epilogue(bias=True, activation="gelu")),
            ks.dense_fp32(m, k, n, Epilogue(bias=True)),
            ks.dense_fp16(m, k, n, Epilogue(bias=True)),
        ]
    for g, mode in itertools.product((32, 64, 128), ("dynamic", "static", "int8")):
        out.append(ks.dense_int4(4, 256, 48, Epilogue(bias=True), ActQuant(mode), group_size=g))
    for lead, m in [((1, 1), 1), ((1, 1, 1), 1), ((7, 1), 7), ((1, 7), 7)]:
        epi = Epilogue(bias=True, residual=True, activation="tanh")
        out += [
            ks.dense_int8(m, 40, 24, epi, ActQuant("static"), lead=lead),
            ks.dense_int4(m, 40, 24, epi, lead=lead),
            ks.dense_fp16(m, 40, 24, epi, lead=lead),
            ks.dense_fp32(m, 40, 24, epi, lead=lead),
        ]
    specs = [
        *CONVS,
        Conv1dSpec(4, 96, 256, 64, 3, dilation=2, padding=(4, 0), layout="NWC"),
        Conv1dSpec(2, 12, 30, 20, 3, 1, 2, (4, 0), "NCW"),
        Conv1dSpec(1, 3, 11, 4, 3, stride=2, dilation=2, padding=(3, 1)),
        Conv1dSpec(1, 7, 24, 5, 1, layout="NWC"),
    ]
    for spec in specs:
        for act, mode in itertools.product(ACTIVATIONS, ("dynamic", "static")):
            epi = Epilogue(bias=True, activation=act)
            out += [ks.conv1d_int8(spec, epi, ActQuant(mode)), ks.conv1d_int4(spec, epi, ActQuant(mode))]
        out += [ks.conv1d_fp32(spec, Epilogue(bias=True, activation="relu")), ks.conv1d_fp16(spec)]
    return out


def _compile_variants(target: str, variants) -> tuple[list, dict[str, Counter], str]:
    """(kernels, instructions per PrimFunc, PTX): one module, one nvcc run, one ptxas run."""
    ks = gpu.kernel_set(target)
    kernels = list({k.name: k for k in variants(ks)}.values())
    exe = tvm.compile(tvm.IRModule({k.name: k.func for k in kernels}), target=get_target(target).target())
    assert gpu_code.host_fallbacks(exe) == {}
    ptx = nvcc.compile_cuda(gpu_code.cuda_source(exe), ARCHS[target]).decode()
    cubin = nvcc.assemble(ptx, ARCHS[target])  # ptxas: the PTX is valid SASS for this arch too
    assert nvcc.code_arch("cubin", cubin) == [ARCHS[target]]
    per_func: dict[str, Counter] = {}
    for entry, ops in nvcc.ptx_entries(ptx).items():  # <PrimFunc>_kernel[_i] -> <PrimFunc>
        per_func.setdefault(entry.rsplit("_kernel", 1)[0], Counter()).update(ops)
    return kernels, per_func, ptx


def _check_variants(target, variants):
    kernels, per_func, ptx = _compile_variants(target, variants)
    assert nvcc.ptx_target(ptx) == ARCHS[target]
    assert set(per_func) == {k.name for k in kernels}, "a kernel without device code"
    kinds = Counter(_kind(k.name) for k in kernels)
    assert set(kinds) == {"int8", "int4", "fp16", "fp32"} and min(kinds.values()) >= 4
    for k in kernels:
        ops = per_func[k.name]
        if _kind(k.name) in ("int8", "int4"):
            assert ops["dp4a.s32.s32"] > 0, f"{k.name}: no dp4a ({sorted(ops)})"


@NEEDS_NVCC
@pytest.mark.parametrize("target", sorted(ARCHS))
def test_kernel_variants_compile_with_dp4a(target):
    _check_variants(target, fast_variants)


@NEEDS_NVCC
@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(ARCHS))
def test_kernel_variants_compile_with_dp4a_sweep(target):
    _check_variants(target, all_variants)


# -- nothing runs on the host ---------------------------------------------------------------------

RNG = np.random.default_rng(0)


def _model() -> tvm.IRModule:
    """conv1d -> relu -> matmul -> (x - mean) -> matmul -> gelu -> matmul -> softmax: weighted sites
    for the kernels, and ops (reductions, elementwise, reshapes) left to dlight."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape=(1, 4, 34), dtype="float32"))

    def const(*shape):
        return relax.const((RNG.standard_normal(shape) * 0.3).astype(np.float32))

    with bb.function("main", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.nn.relu(relax.op.nn.conv1d(x, const(8, 4, 3))))  # [1, 8, 32]
            h = bb.emit(relax.op.matmul(h, const(32, 64)))  # [1, 8, 64]
            h = bb.emit(relax.op.subtract(h, relax.op.mean(h, axis=[-1], keepdims=True)))
            h = bb.emit(relax.op.nn.gelu(relax.op.add(relax.op.matmul(h, const(64, 48)), const(48))))
            h = bb.emit(relax.op.matmul(h, const(48, 16)))
            y = bb.emit_output(bb.emit(relax.op.nn.softmax(h, axis=-1)))
        bb.emit_func_output(y)
    return bb.get()


PLAN = {1: "int8", 3: "int4", 5: "int8", 6: "fp16"}  # 0, 2: the conv's NWC transposes; 4: mean / subtract


@pytest.fixture(scope="module")
def quantized():
    """The model quantized for each CUDA target (the quantize pass inserts its bound kernels)."""
    return {t: quantize(_model(), PLAN, t) for t in ARCHS}


def _primfuncs(mod: tvm.IRModule) -> set[str]:
    return {gv.name_hint for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}


def test_quantized_model_runs_entirely_on_the_gpu(quantized):
    res = quantized["cuda/sm_90"]
    assert {s.applied for s in res.sites if s.applied} >= {"int8", "int4", "fp16"}
    mod = tbuild.schedule(res.mod, "cuda/sm_90")
    assert gpu.unbound_functions(mod) == []
    exe = tvm.compile(mod, target=get_target("cuda/sm_90").target())
    # the built code, independently: a device kernel for every PrimFunc, no loop on the host
    assert gpu_code.host_fallbacks(exe) == {}
    kernels = gpu_code.device_kernels(exe)
    assert {k.rsplit("_kernel", 1)[0] for k in kernels} == _primfuncs(mod)
    assert gpu_code.host_fallbacks(tbuild.build(res.mod, "cuda/sm_90")) == {}


def _half_bound(n: int):
    """``c = a * 3 + 1`` over ``n`` values, the multiply bound to GPU threads, the add left unbound."""

    @T.prim_func(s_tir=True)
    def func(a: T.Buffer((n,), "float32"), c: T.Buffer((n,), "float32")):
        b = T.alloc_buffer((n,), "float32")
        for tx in T.thread_binding(n, thread="threadIdx.x"):
            with T.sblock("b"):
                vi = T.axis.remap("S", [tx])
                b[vi] = a[vi] * T.float32(3)
        for i in range(n):  # this stage was left unbound: the host would run it
            with T.sblock("c"):
                vi = T.axis.remap("S", [i])
                c[vi] = b[vi] + T.float32(1)

    return func.with_attr("global_symbol", "half_bound")


def test_unscheduled_primfunc_is_caught(quantized):
    # The softmax and the mean / subtract as they were before the schedule, but marked scheduled (as
    # a CPU schedule would leave them): relax's CUDA pipeline runs dlight only on PrimFuncs without
    # ``tirx.is_scheduled``, so these compile for the host and the build succeeds, silently.
    res = quantized["cuda/sm_90"]
    mod = tbuild.schedule(res.mod, "cuda/sm_90")
    missed = sorted(n for n in _primfuncs(res.mod) if n == "softmax" or n.startswith("fused_mean"))
    for name in missed:
        mod[name] = res.mod[name].with_attr("tirx.is_scheduled", True)
    assert len(missed) == 2 and gpu.unbound_functions(mod) == missed
    exe = tvm.compile(mod, target=get_target("cuda/sm_90").target())
    fallbacks = gpu_code.host_fallbacks(exe)
    assert list(fallbacks) == missed
    assert all("no cuda kernel" in why for why in fallbacks.values())


@pytest.mark.parametrize(("n", "reason"), [(256, "a loop"), (8, "floating-point math")])
def test_half_bound_primfunc_is_caught_in_the_built_code(n, reason):
    # One stage bound, one not: the PrimFunc has a kernel, so only its host code gives it away, a loop
    # or (8 values: LLVM unrolls the loop) float math; gpu.unbound_functions sees it block by block.
    mod = tvm.IRModule({"half_bound": _half_bound(n)})
    assert gpu.unbound_functions(mod) == ["half_bound"]
    exe = tvm.compile(mod, target=get_target("cuda/sm_90").target())
    assert gpu_code.device_kernels(exe) == ["half_bound_kernel"]
    fallbacks = gpu_code.host_fallbacks(exe)
    assert list(fallbacks) == ["half_bound"] and fallbacks["half_bound"].startswith(reason)


# -- the artifact ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(quantized):
    return {t: tbuild.build(res.mod, t) for t, res in quantized.items()}


def _export(exe, path, target, **options):
    spec = get_target(target)
    kwargs = {}
    if spec.cross_compiler:
        if not shutil.which(spec.cross_compiler):
            pytest.skip(f"{spec.cross_compiler} not installed")
        from tvm.support import cc

        kwargs["fcompile"] = cc.cross_compiler(spec.cross_compiler)
    exe.export_library(str(path), **kwargs, **options)
    return path


def _elf_machine(path) -> int:
    return struct.unpack_from("<H", path.read_bytes(), 18)[0]


@NEEDS_NVCC
@pytest.mark.parametrize(
    ("target", "fmt"),
    [
        ("cuda/sm_90", "ptx"),
        ("cuda/jetson-orin", "ptx"),
        ("cuda/jetson-orin", "cubin"),
        ("cuda/sm_90", "fatbin"),
    ],
)
def test_export_embeds_device_code_for_the_arch(built, target, fmt, tmp_path):
    exe = built[target]
    so = _export(exe, tmp_path / "model.so", target, **nvcc.export_options(target, fmt))
    assert _elf_machine(so) == (183 if target == "cuda/jetson-orin" else 62)  # EM_AARCH64, EM_X86_64
    ((got_fmt, code),) = nvcc.embedded_device_code(so)
    sm = ARCHS[target]
    assert got_fmt == fmt
    assert nvcc.code_arch(fmt, code) == ([sm, sm.replace("sm_", "compute_")] if fmt == "fatbin" else [sm])
    if fmt == "ptx":
        assert code.endswith(b"\0")  # cuModuleLoadData reads PTX as a C string
        entries = nvcc.ptx_entries(code)
        assert set(entries) == set(gpu_code.device_kernels(exe))
        assert sum(ops["dp4a.s32.s32"] for ops in entries.values()) > 0
    # without the options the same export ships the CUDA C, for the device to compile at load time
    plain = _export(exe, tmp_path / "plain.so", target)
    assert [f for f, _ in nvcc.embedded_device_code(plain)] == ["cuda"]


def test_embed_blob_keeps_everything_but_the_cuda_code(built):
    mod = built["cuda/sm_90"].mod
    blob = bytes(tvm_ffi.get_global_func("runtime.ModulePackImportsToTensor")(mod).numpy().tobytes())
    row_ptr, children, modules = nvcc._parse_blob(blob)
    assert nvcc._build_blob(row_ptr, children, modules) == blob
    assert [k for k, _ in modules] == ["relax.VMExecutable", "_lib", "cuda"]
    new = nvcc.embed_blob(blob, lambda src: b"//fake ptx " + str(len(src)).encode(), "ptx")
    _, _, after = nvcc._parse_blob(new)
    assert after[:2] == modules[:2]  # the VM bytecode and the host library are untouched
    fmt, table, code = nvcc._split_cuda(after[2][1])
    old_fmt, old_table, source = nvcc._split_cuda(modules[2][1])
    assert (old_fmt, fmt, table) == (b"cuda", b"ptx", old_table)  # same kernels, same launch params
    assert source.decode() == gpu_code.cuda_source(built["cuda/sm_90"])
    assert code == b"//fake ptx " + str(len(source)).encode() + b"\0"


@NEEDS_NVCC
@pytest.mark.parametrize("target", sorted(ARCHS))
def test_artifact_export_embeds_ptx(built, quantized, target, tmp_path):
    spec = get_target(target)
    if spec.cross_compiler and not shutil.which(spec.cross_compiler):
        pytest.skip(f"{spec.cross_compiler} not installed")
    out = tbuild.export(built[target], tmp_path / "artifact", target, quantized[target])
    ((fmt, code),) = nvcc.embedded_device_code(out / tbuild.LIBRARY)
    assert (fmt, nvcc.code_arch(fmt, code)) == ("ptx", [ARCHS[target]])


def test_without_nvcc_artifacts_keep_the_source(monkeypatch, built, tmp_path):
    monkeypatch.setattr(nvcc, "available", lambda: False)
    nvcc._warn_source_once.cache_clear()
    with pytest.warns(UserWarning, match="nvcc not found"):
        assert nvcc.export_options("cuda/sm_90") == {}
    assert nvcc.export_options("x86") == {} and nvcc.export_options("opencl/mali") == {}
    monkeypatch.setenv(nvcc.ENV_FORMAT, "source")
    monkeypatch.setattr(nvcc, "available", lambda: True)
    assert nvcc.export_options("cuda/sm_90") == {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with nvcc.embed("cuda/sm_90"):  # a no-op as well
            pass


@NEEDS_NVCC
def test_embed_swaps_the_build_time_callback_and_restores_it(built):
    source = gpu_code.cuda_source(built["cuda/jetson-orin"])
    previous = tvm_ffi.get_global_func(nvcc.CALLBACK, allow_missing=True)
    tvm_ffi.register_global_func(nvcc.CALLBACK, lambda code, *_: b"sentinel", override=True)
    try:
        with nvcc.embed("cuda/jetson-orin"):
            ptx = bytes(tvm_ffi.get_global_func(nvcc.CALLBACK)(source))
        assert ptx[:1] == b"/" and nvcc.ptx_target(ptx) == "sm_87"  # "/": TVM files it as PTX
        assert bytes(tvm_ffi.get_global_func(nvcc.CALLBACK)(source)) == b"sentinel"
    finally:
        if previous is not None:
            tvm_ffi.register_global_func(nvcc.CALLBACK, previous, override=True)


@pytest.mark.skipif(tvm.runtime.enabled("cuda"), reason="this host has TVM's CUDA runtime")
def test_without_the_cuda_runtime_a_cuda_library_does_not_load(built, tmp_path):
    # What the device needs: TVM's CUDA runtime (libtvm_runtime_cuda.so, which needs the driver).
    # Here the export is written and inspectable (embedded_device_code), but not loadable.
    so = _export(built["cuda/sm_90"], tmp_path / "model.so", "cuda/sm_90")
    with pytest.raises(Exception, match="load_from_bytes.cuda"):
        tvm.runtime.load_module(str(so))


def _gpu_arch() -> str | None:
    if not tvm.runtime.enabled("cuda") or not tvm.cuda(0).exist:
        return None
    return "sm_" + tvm.cuda(0).compute_version.replace(".", "")


@NEEDS_NVCC
@pytest.mark.gpu
@pytest.mark.skipif(_gpu_arch() is None, reason="no CUDA GPU")
def test_embedded_ptx_loads_and_matches_the_reference(tmp_path):
    from tvm_tqs.targets.kernels import KernelSet
    from tvm_tqs.targets.kernels.isa import CUDA_DP4A
    from tvm_tqs.targets.kernels.testing import assert_case, conv1d_case, dense_case

    sm = _gpu_arch()
    target = {"kind": "cuda", "arch": sm, "host": {"kind": "llvm"}}
    ks = KernelSet(CUDA_DP4A).with_target(target)
    cases = [
        dense_case(ks, "int8", 5, 70, 40, "int32"),
        dense_case(ks, "int8", 5, 70, 40, "unit", activation="relu"),
        dense_case(ks, "int8", 3, 48, 130, "float", activation="gelu"),
        dense_case(ks, "int4", 5, 70, 40, "unit"),
        dense_case(ks, "int4", 3, 48, 130, "float", activation="sigmoid"),
        dense_case(ks, "fp32", 3, 48, 130, "float"),
        conv1d_case(ks, "int8", CONVS[0], "unit", activation="relu"),
        conv1d_case(ks, "int4", CONVS[1], "float"),
    ]
    lib = tvm.compile(
        tvm.IRModule({c.kernel.name: c.kernel.func for c in cases}), target=tvm.target.Target(target)
    )
    so = tmp_path / "kernels.so"
    lib.export_library(str(so), **nvcc.export_options(target, "ptx"))
    assert [f for f, _ in nvcc.embedded_device_code(so)] == ["ptx"]
    loaded, dev = tvm.runtime.load_module(str(so)), tvm.cuda(0)
    for case in cases:
        args = [tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in case.args]
        out = tvm.runtime.tensor(np.zeros(case.kernel.output.shape, case.kernel.output.dtype), dev)
        loaded[case.kernel.name](*args, out)
        assert_case(case, out.numpy())
