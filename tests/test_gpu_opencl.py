"""The OpenCL lowering, run: TVM's OpenCL C for ``opencl/mali`` executed on the CPU under PoCL.

`pocl_driver` replays TVM's host code (kernel launches with TVM's grid/block dims, workspaces,
argument binding) with pyopencl. What is checked:

* every kernel variant of ``targets.gpu.kernel_set("opencl/mali")`` (dense and conv1d NCW / NWC;
  int8, int4, fp16 and fp32 weights; epilogues none / bias / relu / gelu / sigmoid / tanh /
  residual; activations dynamic / static / int8) against `targets.kernels.reference`, with the
  CPU kernel tests' rules (`targets.kernels.testing`): int32 epilogues and unit-scale cases
  bit-exact, float epilogues within rtol 2e-5 (fp32 / fp16 weights 1e-4); in every float case the
  quantized activations the kernel wrote are also compared bit-exactly;
* quantized zoo models end to end (``main`` in the VM's order): the MLP against the same integer
  math in numpy (rtol 1e-5, as tests/test_passes_quantize_zoo.py) and against fp32 onnxruntime
  within that file's bounds, the TCN (conv1d) likewise;
* that the checker fails on a corrupted weight and on a launch that leaves outputs unwritten.

Skipped without pyopencl or a PoCL platform (``pip install pyopencl``; ``apt-get install
pocl-opencl-icd``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pocl_driver
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

REASON = pocl_driver.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"PoCL unavailable: {REASON}")

from tvm_tqs.targets import gpu  # noqa: E402  (after the skip marker: nothing below needs OpenCL to import)
from tvm_tqs.targets.kernels import ActQuant, Conv1dSpec, Epilogue, KernelSet, reference  # noqa: E402
from tvm_tqs.targets.kernels.config import DEFAULT_EPILOGUE  # noqa: E402
from tvm_tqs.targets.kernels.packing import conv_matrix  # noqa: E402
from tvm_tqs.targets.kernels.testing import Case, assert_case  # noqa: E402

TARGET = "opencl/mali"
KS = gpu.kernel_set(TARGET)
ISA = KS.isa
ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# the epilogues of a float kernel (the int32 one is a case of its own)
EPILOGUES = [
    Epilogue(),
    Epilogue(bias=True),
    Epilogue(bias=True, activation="relu"),
    Epilogue(bias=True, activation="gelu"),
    Epilogue(activation="sigmoid"),
    Epilogue(bias=True, activation="tanh"),
    Epilogue(bias=True, residual=True, activation="relu"),
]


# -- cases --------------------------------------------------------------------------------------


def _int_weights(op: str, n: int, k: int, unit: bool, rng, group_size: int):
    """(q int8 [N, K], scale): int8 in [-127, 127] per-channel scales, int4 in [-8, 7] group scales."""
    if op == "int8":
        q = rng.integers(-127, 128, (n, k)).astype(np.int8)
        s = np.ones(n, np.float32) if unit else rng.uniform(0.002, 0.02, n).astype(np.float32)
        return q, s
    groups = -(-k // group_size)
    q = rng.integers(-8, 8, (n, k)).astype(np.int8)
    s = np.ones((n, groups), np.float32) if unit else rng.uniform(0.02, 0.2, (n, groups)).astype(np.float32)
    return q, s


def _activations(act: str, shape, unit: bool, rng):
    """(x, x_scale or None) for the activation mode; ``unit``: integer values, scales 1 (exact)."""
    if act == "int8":
        x = rng.integers(-128, 128, shape).astype(np.int8)
        m = int(np.prod(shape[:-1]))
        return x, np.ones(m, np.float32) if unit else rng.uniform(0.01, 0.1, m).astype(np.float32)
    if unit:
        return rng.integers(-128, 128, shape).astype(np.float32), (
            np.ones(1, np.float32) if act == "static" else None
        )
    x = (rng.standard_normal(shape) * 2).astype(np.float32)
    # static: a calibrated scale a bit below absmax / 127, so some values clip
    return x, (np.array([np.abs(x).max() / 127 * 0.8], np.float32) if act == "static" else None)


def _int_reference(isa, op, rows, q, s, b, epi, act, xs, res_rows, group_size):
    if op == "int8":
        return reference.dense_int8(isa, rows, q, s, b, epi, ActQuant(act), xs, res_rows)
    return reference.dense_int4(isa, rows, q, s, group_size, b, epi, ActQuant(act), xs, res_rows)


def dense_case(
    op: str,
    m: int,
    k: int,
    n: int,
    epi: Epilogue = DEFAULT_EPILOGUE,
    act: str = "dynamic",
    *,
    unit: bool = False,
    seed: int = 0,
    group_size: int = 32,
    lead: tuple[int, ...] | None = None,
    ks: KernelSet = KS,
) -> Case:
    """A dense case for ``op`` in {int8, int4, fp16, fp32}; ``unit``: integer data, unit scales (exact)."""
    rng = np.random.default_rng(seed)
    xshape = (*lead, k) if lead else (m, k)
    b = rng.standard_normal(n).astype(np.float32) if epi.bias else None
    res = rng.standard_normal((m, n)).astype(np.float32) if epi.residual else None
    if op in ("fp32", "fp16"):
        w = rng.standard_normal((n, k)).astype(np.float32)
        x = rng.standard_normal(xshape).astype(np.float32)
        build, pack = (ks.dense_fp32, ks.pack_fp32) if op == "fp32" else (ks.dense_fp16, ks.pack_fp16)
        kern = build(m, k, n, epi, lead=lead)
        w_ref = w if op == "fp32" else w.astype(np.float16).astype(np.float32)  # what the kernel reads
        want = reference.dense_fp32(w_ref, x.reshape(m, k), b, epi.activation, res)
        named, packed, exact, rtol = {"x": x}, pack(w), False, 1e-4
    else:
        q, s = _int_weights(op, n, k, unit, rng, group_size)
        x, xs = _activations(act, xshape, unit, rng)
        if op == "int8":
            kern, packed = ks.dense_int8(m, k, n, epi, ActQuant(act), lead=lead), ks.pack_int8(q, s)
        else:
            kern = ks.dense_int4(m, k, n, epi, ActQuant(act), group_size, lead=lead)
            packed = ks.pack_int4(q, s, group_size)
        want = _int_reference(ks.isa, op, x.reshape(m, k), q, s, b, epi, act, xs, res, group_size)
        named, exact, rtol = {"x": x, "x_scale": xs}, unit or epi.out_dtype == "int32", 2e-5
    out_shape = kern.output.shape
    named["residual"] = None if res is None else res.reshape(out_shape)
    args = [named[spec.name] for spec in kern.inputs] + kern.const_args(packed, b)
    return Case(kern, args, np.ascontiguousarray(want.reshape(out_shape)), exact=exact, rtol=rtol)


def _to_rows(spec: Conv1dSpec, y: np.ndarray) -> np.ndarray:
    """An output-layout tensor [B, N, W] / [B, W, N] -> GEMM rows [B * W, N]."""
    y = y.transpose(0, 2, 1) if spec.layout == "NCW" else y
    return np.ascontiguousarray(y.reshape(spec.batch * spec.out_width, spec.out_channels))


def conv1d_case(
    op: str,
    spec: Conv1dSpec,
    epi: Epilogue = DEFAULT_EPILOGUE,
    act: str = "dynamic",
    *,
    unit: bool = False,
    seed: int = 0,
    group_size: int = 32,
    ks: KernelSet = KS,
) -> Case:
    """A conv1d case; weights in PyTorch order [Cout, Cin, KW], packed with the conv packers."""
    rng = np.random.default_rng(seed)
    n, cin, kw = spec.out_channels, spec.in_channels, spec.kernel_size
    b = rng.standard_normal(n).astype(np.float32) if epi.bias else None
    res = rng.standard_normal(spec.output_shape).astype(np.float32) if epi.residual else None
    res_rows = None if res is None else _to_rows(spec, res)
    if op in ("fp32", "fp16"):
        w = rng.standard_normal((n, cin, kw)).astype(np.float32)
        x = rng.standard_normal(spec.input_shape).astype(np.float32)
        build, pack = (
            (ks.conv1d_fp32, ks.pack_conv1d_fp32) if op == "fp32" else (ks.conv1d_fp16, ks.pack_conv1d_fp16)
        )
        kern = build(spec, epi)
        w_ref = w if op == "fp32" else w.astype(np.float16).astype(np.float32)
        rows = reference.dense_fp32(
            conv_matrix(w_ref), reference.im2col(spec, x), b, epi.activation, res_rows
        )
        named, packed, exact, rtol = {"x": x}, pack(w), False, 1e-4
    else:
        q, s = _int_weights(op, n, spec.reduction, unit, rng, group_size)
        q3 = np.ascontiguousarray(q.reshape(n, kw, cin).transpose(0, 2, 1))  # conv_matrix(q3) == q
        x, xs = _activations(act, spec.input_shape, unit, rng)
        if op == "int8":
            kern, packed = ks.conv1d_int8(spec, epi, ActQuant(act)), ks.pack_conv1d_int8(q3, s)
        else:
            kern = ks.conv1d_int4(spec, epi, ActQuant(act), group_size)
            packed = ks.pack_conv1d_int4(q3, s, group_size)
        rows = _int_reference(
            ks.isa, op, reference.im2col(spec, x), q, s, b, epi, act, xs, res_rows, group_size
        )
        named, exact, rtol = {"x": x, "x_scale": xs}, unit, 2e-5
    named["residual"] = res
    args = [named[spec_.name] for spec_ in kern.inputs] + kern.const_args(packed, b)
    return Case(kern, args, reference.to_layout(spec, rows), exact=exact, rtol=rtol)


# -- running ------------------------------------------------------------------------------------


def _quantized_rows(case: Case, spec: Conv1dSpec | None) -> tuple[np.ndarray, int] | None:
    """The int8 activations a float-input integer kernel must produce (rows x K), or None."""
    kern = case.kernel
    integer = "_w8_" in kern.name or "_w4_" in kern.name
    if not integer or kern.inputs[0].dtype != "float32":
        return None
    x = case.args[0]
    xs = case.args[1] if len(kern.inputs) > 1 and kern.inputs[1].name == "x_scale" else None
    rows = reference.im2col(spec, x) if spec else x.reshape(-1, x.shape[-1])
    act = ActQuant("static" if xs is not None else "dynamic")
    q, _ = reference.quantize_activations(rows, act, xs)
    return q, rows.shape[0]


def run_cases(
    cases: list[Case], specs: list[Conv1dSpec | None] | None = None, *, opencl_target=None, prelude: str = ""
) -> None:
    """Lower all cases together (one OpenCL program), run each on PoCL and check it.

    For kernels that quantize fp32 activations, the int8 workspace they quantize into is compared
    bit-exactly with `reference.quantize_activations` too (zero padding included): the integer
    part is exact even where the fp32 epilogue is compared with a tolerance.
    ``opencl_target``: lower for this OpenCL target instead of the kernels' own (CUDA kernels).
    """
    specs = specs or [None] * len(cases)
    funcs = {c.kernel.name: c.kernel.func for c in cases}
    if opencl_target is not None:
        funcs = {name: f.with_attr("target", opencl_target) for name, f in funcs.items()}
    low = pocl_driver.lower(funcs, opencl_target)
    runner = pocl_driver.Runner(low, keep_workspaces=True, prelude=prelude)
    for case, spec in zip(cases, specs, strict=True):
        (got,) = runner(case.kernel.name, *case.args)
        assert_case(case, got)
        want = _quantized_rows(case, spec)
        if want is None:
            continue
        q, m = want
        # the workspace some kernel addresses as int8 (StorageRewrite may have put x_q into a float
        # workspace that an earlier kernel used, so neither its name nor its dtype tells)
        func = runner.lowered.funcs[case.kernel.name]
        int8 = {
            a.index
            for la in func.launches
            for a, t in zip(la.args, runner.lowered.kernel_params[la.kernel], strict=True)
            if a.kind == "workspace" and t == "*int8"
        }
        assert len(int8) == 1, f"{case.kernel.name}: int8 workspaces {int8} of {func.workspaces}"
        k = q.shape[1]
        (w,) = [c for c in case.kernel.consts if c.name == "w"]
        kp = w.shape[1] * 4  # K padded as the packed weights [N, Kp / 4, ...] (int4: to the group size)
        xq = runner.workspaces[int8.pop()][1].view(np.int8)[: m * kp].reshape(m, kp)
        assert np.array_equal(xq[:, :k], q), f"{case.kernel.name}: quantized activations differ"
        assert not xq[:, k:].any(), f"{case.kernel.name}: K padding of the quantized activations is not zero"


def _int_variants(op: str, make) -> list[Case]:
    """Every epilogue with dynamic activations, static and int8 activations with two, the exact ones."""
    cases = [make(op, epi, "dynamic", False, i) for i, epi in enumerate(EPILOGUES)]
    cases += [make(op, EPILOGUES[i], "static", False, 10 + i) for i in (0, 6)]
    cases += [make(op, Epilogue(activation="relu"), "static", True, 20)]  # unit scales: bit-exact
    return cases


# -- dense --------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["int8", "int4", "fp16", "fp32"])
def test_dense_every_variant(op):
    m, k, n = 5, 70, 37  # K not a multiple of 4 nor of the int4 group, N odd

    def make(op, epi, act, unit, seed):
        return dense_case(op, m, k, n, epi, act, unit=unit, seed=seed)

    if op in ("fp32", "fp16"):
        cases = [make(op, epi, None, False, i) for i, epi in enumerate(EPILOGUES)]
        cases.append(dense_case(op, 6, k, n, Epilogue(bias=True), seed=9, lead=(1, 6)))
    else:
        cases = _int_variants(op, make)
        cases += [
            make(op, Epilogue(bias=True, activation="gelu"), "int8", False, 30),  # int8 in, fp32 out
            make(op, Epilogue(activation="relu"), "int8", True, 31),
            dense_case(op, 6, k, n, Epilogue(bias=True, activation="relu"), seed=32, lead=(1, 6)),
        ]
        if op == "int8":
            cases.append(make(op, Epilogue(out_dtype="int32"), "int8", False, 33))
    run_cases(cases)


def test_dense_int4_other_group_size():
    run_cases(
        [
            dense_case("int4", 3, 200, 40, Epilogue(), "static", unit=True, seed=1, group_size=64),
            dense_case("int4", 2, 300, 33, Epilogue(bias=True, activation="gelu"), seed=2, group_size=128),
        ]
    )


SHAPES = st.tuples(st.integers(1, 24), st.integers(1, 300), st.integers(1, 130))
EPIS = st.sampled_from(EPILOGUES)
ACTS = st.sampled_from(["dynamic", "static", "int8"])


def _random_dense_cases(shape, seed, epi, act):
    m, k, n = shape
    return [
        dense_case("int8", m, k, n, Epilogue(out_dtype="int32"), "int8", seed=seed),
        dense_case("int8", m, k, n, Epilogue(activation="relu"), "static", unit=True, seed=seed),
        dense_case("int8", m, k, n, epi, act, seed=seed),
        dense_case("int4", m, k, n, Epilogue(), "static", unit=True, seed=seed),
        dense_case("int4", m, k, n, epi, act, seed=seed),
        dense_case("fp16", m, k, n, epi, seed=seed),
        dense_case("fp32", m, k, n, epi, seed=seed),
    ]


@given(shape=SHAPES, seed=st.integers(0, 2**16), epi=EPIS, act=ACTS)
# K = 5, M = 1: StorageRewrite puts the int8 x_q into the float workspace of the absmax partials
@example(shape=(1, 5, 1), seed=0, epi=Epilogue(), act="dynamic")
@settings(max_examples=4, **SETTINGS)
def test_dense_random_shapes(shape, seed, epi, act):
    run_cases(_random_dense_cases(shape, seed, epi, act))


@pytest.mark.slow
@given(shape=SHAPES, seed=st.integers(0, 2**16), epi=EPIS, act=ACTS)
@settings(max_examples=60, **SETTINGS)
def test_dense_random_shapes_sweep(shape, seed, epi, act):
    run_cases(_random_dense_cases(shape, seed, epi, act))


# -- conv1d -------------------------------------------------------------------------------------

SPECS = {
    "NCW": Conv1dSpec(2, 6, 21, 9, 3, dilation=2, padding=(4, 0)),  # causal TCN layer, PyTorch layout
    "NWC": Conv1dSpec(1, 5, 19, 7, 2, stride=2, padding=(1, 1), layout="NWC"),
}


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
@pytest.mark.parametrize("op", ["int8", "int4", "fp16", "fp32"])
def test_conv1d_every_variant(op, layout):
    spec = SPECS[layout]

    def make(op, epi, act, unit, seed):
        return conv1d_case(op, spec, epi, act, unit=unit, seed=seed)

    if op in ("fp32", "fp16"):
        cases = [make(op, epi, None, False, i) for i, epi in enumerate(EPILOGUES)]
    else:
        cases = _int_variants(op, make)
    run_cases(cases, [spec] * len(cases))


CONVS = st.builds(
    lambda b, c, w, o, kw, s, d, causal, layout: Conv1dSpec(
        b, c, w + (kw - 1) * d, o, kw, s, d, ((kw - 1) * d, 0) if causal else (d, d), layout
    ),
    st.integers(1, 3),
    st.integers(1, 40),
    st.integers(1, 40),
    st.integers(1, 40),
    st.integers(1, 4),
    st.integers(1, 2),
    st.integers(1, 4),
    st.booleans(),
    st.sampled_from(["NCW", "NWC"]),
)


def _random_conv_cases(spec, seed, epi, act):
    act = "dynamic" if act == "int8" else act  # conv kernels take fp32 activations
    cases = [
        conv1d_case("int8", spec, Epilogue(activation="relu"), "static", unit=True, seed=seed),
        conv1d_case("int8", spec, epi, act, seed=seed),
        conv1d_case("int4", spec, Epilogue(), "static", unit=True, seed=seed),
        conv1d_case("int4", spec, epi, act, seed=seed),
        conv1d_case("fp16", spec, epi, seed=seed),
        conv1d_case("fp32", spec, epi, seed=seed),
    ]
    return cases, [spec] * len(cases)


@given(spec=CONVS, seed=st.integers(0, 2**16), epi=EPIS, act=ACTS)
@settings(max_examples=3, **SETTINGS)
def test_conv1d_random(spec, seed, epi, act):
    run_cases(*_random_conv_cases(spec, seed, epi, act))


@pytest.mark.slow
@given(spec=CONVS, seed=st.integers(0, 2**16), epi=EPIS, act=ACTS)
@settings(max_examples=40, **SETTINGS)
def test_conv1d_random_sweep(spec, seed, epi, act):
    run_cases(*_random_conv_cases(spec, seed, epi, act))


# -- the CUDA kernels' numerics ------------------------------------------------------------------


def test_cuda_dp4a_kernels_numerics_on_pocl():
    """The ``cuda-dp4a`` kernels (schedule and tensorized ``__dp4a`` TIR unchanged) lowered for OpenCL,
    with an OpenCL C ``__dp4a`` prepended: checks their integer math (the int4 nibble-spreading trick
    included) on PoCL. The CUDA C code generation itself is not exercised."""
    import tvm

    cuda = gpu.kernel_set("cuda/sm_90")
    assert cuda.isa.intrin_int8 and cuda.isa.intrin_int4
    m, k, n = 5, 70, 37
    cases = [
        dense_case("int8", m, k, n, Epilogue(out_dtype="int32"), "int8", seed=1, ks=cuda),
        dense_case("int8", m, k, n, Epilogue(activation="relu"), "static", unit=True, seed=2, ks=cuda),
        dense_case("int8", m, k, n, Epilogue(bias=True, activation="gelu"), seed=3, ks=cuda),
        dense_case("int4", m, k, n, Epilogue(), "static", unit=True, seed=4, ks=cuda),
        dense_case("int4", m, k, n, Epilogue(bias=True, residual=True, activation="tanh"), seed=5, ks=cuda),
        dense_case("fp16", m, k, n, Epilogue(bias=True), seed=6, ks=cuda),
    ]
    specs = [None] * len(cases)
    for layout, spec in SPECS.items():
        for op, unit in (("int8", True), ("int8", False), ("int4", True), ("int4", False)):
            epi = (
                Epilogue(bias=True, activation="relu")
                if layout == "NCW"
                else Epilogue(bias=True, residual=True)
            )
            cases.append(
                conv1d_case(op, spec, epi, "static" if unit else "dynamic", unit=unit, seed=7, ks=cuda)
            )
            specs.append(spec)
    target = tvm.target.Target(KS.target)
    low = pocl_driver.lower(cases[0].kernel.func.with_attr("target", target))
    assert "__dp4a(" in low.source  # the tensorized intrinsic survives into the OpenCL code
    run_cases(cases, specs, opencl_target=target, prelude=pocl_driver.DP4A_OPENCL)


# -- the driver replays TVM, and the checks can fail ------------------------------------------------


def test_driver_reads_tvms_launch_sequence():
    """Source identical to tvm.compile's; launches resolved to parameters and (shared) workspaces."""
    import tvm

    case = dense_case("int8", 3, 20, 5, Epilogue(bias=True, activation="relu"))
    low = pocl_driver.lower(case.kernel.func)
    exe = tvm.compile(
        tvm.IRModule({case.kernel.name: case.kernel.func}), target=case.kernel.func.attrs["target"]
    )
    assert low.source == exe.mod.imports[0].inspect_source()

    (func,) = low.funcs.values()
    assert [p.name for p in func.params] == [s.name for s in case.kernel.params]
    sections = [line.split()[-1] for line in low.source.splitlines() if line.startswith("// Function: ")]
    assert [la.kernel for la in func.launches] == sections  # one launch per kernel, in source order
    kinds = {a.kind for la in func.launches for a in la.args}
    assert kinds == {"param", "workspace"}
    # the output kernel covers every output element exactly once
    last = func.launches[-1]
    assert np.prod(last.global_size) == 3 * 5
    assert any(a.kind == "param" and a.index == len(func.params) - 1 for a in last.args)


def test_checker_fails_on_a_corrupted_weight():
    case = dense_case("int8", 4, 64, 24, Epilogue(out_dtype="int32"), "int8", seed=3)
    w = case.args[1].copy()
    w.flat[5] = w.flat[5] + 1 if w.flat[5] < 127 else 0
    bad = dataclasses.replace(case, args=[case.args[0], w, *case.args[2:]])
    with pytest.raises(AssertionError, match="not bit-exact"):
        run_cases([bad])


def test_checker_fails_on_unwritten_outputs():
    """A launch with one block too few leaves poisoned (NaN) outputs: the comparison catches it."""
    case = dense_case("fp32", 4, 16, 130, Epilogue(bias=True))
    low = pocl_driver.lower(case.kernel.func)
    (name, func), *_ = low.funcs.items()
    last = func.launches[-1]
    axis = max(i for i, g in enumerate(last.grid) if g > 1)
    grid = tuple(g - 1 if i == axis else g for i, g in enumerate(last.grid))
    short = dataclasses.replace(func, launches=(*func.launches[:-1], dataclasses.replace(last, grid=grid)))
    low = dataclasses.replace(low, funcs={name: short})
    (got,) = pocl_driver.Runner(low)(name, *case.args)
    assert np.isnan(got).any()
    with pytest.raises(AssertionError):
        assert_case(case, got)


def test_unscheduled_function_is_refused():
    """A PrimFunc without thread bindings is refused, not run on the host (TVM's build would do that)."""
    import tvm
    from tvm import te

    a = te.placeholder((8,), name="a")
    b = te.compute((8,), lambda i: a[i] * 2, name="b")
    func = te.create_prim_func([a, b]).with_attr("global_symbol", "double")
    target = tvm.target.Target(KS.target)
    with pytest.raises(pocl_driver.Unsupported, match="run on the host"):
        pocl_driver.lower(func, target)
    kern = KS.dense_fp32(2, 8, 8)  # next to a scheduled kernel: its host code is not only launches
    with pytest.raises(pocl_driver.Unsupported, match="For statement.*run on the host"):
        pocl_driver.lower({"double": func, kern.name: kern.func}, target)


# -- models end to end ----------------------------------------------------------------------------

BATCH = 2
BOUNDS = {"fp16": 3e-3, "int8": 0.08, "int4": 0.75}  # tests/test_passes_quantize_zoo.py, vs fp32


def _quantized_on_pocl(path: Path, precision: str):
    from tvm_tqs.frontend.load import load
    from tvm_tqs.graph import fuse, fused_ops
    from tvm_tqs.passes.quantize import quantize
    from tvm_tqs.targets.build import schedule
    from tvm_tqs.targets.registry import get_target

    n = len(fused_ops(fuse(str(path), {"batch": BATCH})))
    res = quantize(load(str(path), {"batch": BATCH}), {i: precision for i in range(n)}, TARGET)
    weighted = [s for s in res.sites if s.weight]
    assert weighted and all(s.applied == precision and s.kernel for s in weighted)
    runner = pocl_driver.RelaxRunner(schedule(res.mod, TARGET), get_target(TARGET).target())
    return res, runner


def _window(path: Path, seed: int = 0) -> np.ndarray:
    from tvm_tqs.rollout import RolloutSpec

    spec = RolloutSpec.from_onnx(onnx.load(str(path)))
    return np.random.default_rng(seed).standard_normal((BATCH, *spec.window_shape)).astype(np.float32)


def _onnxruntime(path: Path, x: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _rel(got, want) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def test_mlp_int8_on_pocl_is_the_quantized_math():
    """vic_elec_mlp all-int8 in the VM's call order on PoCL: the same numbers as the numpy model of
    the kernels' integer math (every Gemm replaced), and within the int8 bound of fp32."""
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    from tvm_tqs.examples import example_model
    from tvm_tqs.quantizers import rtn

    class QuantGemm(OpRun):
        op_domain = ""

        def _run(self, a, b, c=None, alpha=None, beta=None, transA=None, transB=None):  # noqa: N803
            assert transB == 1 and not transA
            qw = rtn(b, 8, 0)
            y = reference.dense_int8(
                ISA, a, qw.q, qw.scale[:, 0], c, Epilogue(bias=c is not None), ActQuant()
            )
            return (y.astype(np.float32),)

    path = example_model()
    res, runner = _quantized_on_pocl(path, "int8")
    x = _window(path, seed=1) * 2
    got = runner(x)
    assert [c for c in runner.calls if c.startswith("tqs_")] == [
        res.sites[i].kernel for i in sorted(res.kernels)
    ]
    proto = onnx.load(str(path))
    want = ReferenceEvaluator(proto, new_ops=[type("Gemm", (QuantGemm,), {})]).run(None, {"window": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert 0 < _rel(got, _onnxruntime(path, x)) < BOUNDS["int8"]


@pytest.mark.parametrize("precision", ["int4", "fp16"])
def test_mlp_other_precisions_on_pocl(precision):
    from tvm_tqs.examples import example_model

    path = example_model()
    _, runner = _quantized_on_pocl(path, precision)
    x = _window(path)
    err = _rel(runner(x), _onnxruntime(path, x))
    assert 0 < err < BOUNDS[precision], err


@pytest.mark.parametrize(
    "precision",
    ["int8", pytest.param("int4", marks=pytest.mark.slow), pytest.param("fp16", marks=pytest.mark.slow)],
)
def test_tcn_on_pocl(precision):
    """etth1_tcn (13 conv1d sites, causal dilations, residual epilogues) quantized, against fp32."""
    path = ROOT / "benchmarks" / "zoo" / "models" / "etth1_tcn.onnx"
    res, runner = _quantized_on_pocl(path, precision)
    assert sum("conv1d" in k for k in res.kernels.values()) >= 10
    x = _window(path)
    err = _rel(runner(x), _onnxruntime(path, x))
    assert 0 < err < BOUNDS[precision], err
