"""Kernel layer, numpy side: packing layouts, quantization conventions, the integer reference replays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvm_tqs.targets.kernels import (
    ISAS,
    X86_AVX2,
    X86_VNNI,
    ActQuant,
    Conv1dSpec,
    Epilogue,
    get_kernel_set,
    kernel_set_names,
    packing,
)
from tvm_tqs.targets.kernels import reference as ref


def _unpack_int4(isa, w: np.ndarray, n: int, k: int) -> np.ndarray:
    """Inverse of pack_int4 written independently: nibbles -> tiles -> [N, K]."""
    lo = (w & 15).astype(np.int16) - 8
    hi = (w >> 4).astype(np.int16) - 8
    tiles = np.concatenate([lo, hi], axis=-1)  # [Nb, Kb, nt*kt], element order i*kt + kk
    nb, kb, _ = tiles.shape
    full = tiles.reshape(nb, kb, isa.nt, isa.kt).transpose(0, 2, 1, 3).reshape(nb * isa.nt, kb * isa.kt)
    return full[:n, :k].astype(np.int8)


def test_kernel_set_names():
    assert set(kernel_set_names()) == {
        "x86-avx512-vnni",
        "x86-avx2",
        "aarch64-neon",
        "aarch64-dotprod",
        "aarch64-i8mm",
        "cuda-dp4a",
        "opencl-int",
    }
    with pytest.raises(ValueError, match="unknown kernel set"):
        get_kernel_set("riscv")


@pytest.mark.parametrize("name", sorted(ISAS))
@given(n=st.integers(1, 70), k=st.integers(1, 90), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=15, deadline=None)
def test_pack_int8_tiles_round_trip(name, n, k, seed):
    isa = ISAS[name]
    rng = np.random.default_rng(seed)
    q = rng.integers(-127, 128, (n, k)).astype(np.int8)
    packed = packing.pack_int8(isa, q, np.ones(n, np.float32))
    w = packed["w"]
    np_, kp = packing.padded_n(isa, n), packing.padded_k(isa, k)
    assert w.shape == (np_ // isa.nt, kp // isa.kt, *packing.tile_shape(isa))
    full = w.reshape(np_ // isa.nt, kp // isa.kt, isa.nt, isa.kt).transpose(0, 2, 1, 3).reshape(np_, kp)
    assert np.array_equal(full[:n, :k], q)
    assert not full[n:].any() and not full[:, k:].any()  # zero padding
    if isa.act_zero_point:
        assert np.array_equal(packed["w_corr"], 128 * q.astype(np.int64).sum(1))


@pytest.mark.parametrize("name", sorted(ISAS))
@given(n=st.integers(1, 40), k=st.integers(1, 130), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=15, deadline=None)
def test_pack_int4_nibbles_round_trip(name, n, k, seed):
    isa = ISAS[name]
    rng = np.random.default_rng(seed)
    q = rng.integers(-8, 8, (n, k)).astype(np.int8)
    groups = -(-k // 32)
    scale = rng.uniform(0.1, 2, (n, groups)).astype(np.float32)
    packed = packing.pack_int4(isa, q, scale, 32)
    assert packed["w"].dtype == np.uint8
    assert packed["w"].shape[-1] == isa.nt * isa.kt // 2  # two values per byte
    assert np.array_equal(_unpack_int4(isa, packed["w"], n, k), q)
    assert packed["w_scale"].shape == (groups, packing.padded_n(isa, n))
    assert np.array_equal(packed["w_scale"][:, :n], scale.T)


def test_pack_rejects_out_of_range_weights():
    q = np.full((4, 8), -128, np.int8)
    with pytest.raises(ValueError, match=r"\[-127, 127\]"):
        packing.pack_int8(X86_AVX2, q, np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        packing.pack_int4(X86_AVX2, np.full((4, 8), 9, np.int8), np.ones((4, 1), np.float32))
    with pytest.raises(ValueError, match="group size"):
        packing.pack_int4(X86_AVX2, np.zeros((4, 8), np.int8), np.ones((4, 1), np.float32), group_size=24)


def test_activation_quantization_rounds_half_to_even_and_clips():
    x = np.array([[0.5, 1.5, 2.5, -0.5, -1.5, 200.0, -200.0, 0.49]], np.float32)
    q, s = ref.quantize_activations(x, ActQuant("static"), np.array([1.0], np.float32))
    assert q.tolist() == [[0, 2, 2, 0, -2, 127, -128, 0]]
    q, s = ref.quantize_activations(np.zeros((2, 3), np.float32), ActQuant("dynamic"))
    assert s.tolist() == [1.0, 1.0] and not q.any()
    x = np.array([[1.0, -254.0, 127.0]], np.float32)
    q, s = ref.quantize_activations(x, ActQuant("dynamic"))
    assert s[0] == np.float32(2.0) and q.tolist() == [[0, -127, 64]]


@pytest.mark.parametrize("name", sorted(ISAS))
def test_int_dot_replay_accepts_the_full_int8_range(name):
    """Extreme operands: -128 activations against +-127 weights never saturate any ISA's path."""
    isa = ISAS[name]
    qx = np.array([[-128] * 32, [127] * 32, [-128, 127] * 16], np.int8)
    qw = np.array([[-127] * 32, [127] * 32, [127, -127] * 16], np.int8)
    assert np.array_equal(ref.int_dot(isa, qx, qw), qx.astype(np.int64) @ qw.astype(np.int64).T)


def test_int_dot_replay_flags_the_saturating_weight():
    qx = np.full((1, 4), -128, np.int8)
    qw = np.full((1, 4), -128, np.int8)
    with pytest.raises(AssertionError):
        ref.int_dot(X86_AVX2, qx, qw)


def test_quantize_weights_contracts():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 70)).astype(np.float32)
    q, s = ref.quantize_weights_int8(w)
    assert q.min() >= -127 and np.abs(q.astype(np.float32) * s[:, None] - w).max() <= s.max() / 2 + 1e-6
    q4, s4 = ref.quantize_weights_int4(w, 32)
    assert s4.shape == (5, 3) and q4.shape == w.shape and q4.min() >= -7 and q4.max() <= 7


def test_config_validation():
    with pytest.raises(ValueError):
        Epilogue(activation="swish")
    with pytest.raises(ValueError):
        Epilogue(out_dtype="int32", bias=True)
    with pytest.raises(ValueError):
        ActQuant("per-channel")
    with pytest.raises(ValueError):
        Conv1dSpec(1, 2, 3, 4, 9)  # kernel wider than the padded input
    spec = Conv1dSpec(2, 3, 10, 4, 3, dilation=2, padding=(4, 0))
    assert spec.out_width == 10 and spec.reduction == 9 and spec.output_shape == (2, 4, 10)
    vnni = get_kernel_set("x86-avx512-vnni")
    assert vnni.isa is X86_VNNI and vnni.with_target({"kind": "llvm", "mcpu": "sapphirerapids"}).target[
        "mcpu"
    ] == ("sapphirerapids")


def test_im2col_matches_a_direct_convolution():
    rng = np.random.default_rng(1)
    spec = Conv1dSpec(2, 3, 11, 4, 3, stride=2, dilation=2, padding=(3, 1))
    x = rng.standard_normal(spec.input_shape).astype(np.float32)
    w = rng.standard_normal((4, 3, 3)).astype(np.float32)
    got = ref.conv1d_fp32(spec, x, w)
    xp = np.pad(x, ((0, 0), (0, 0), (3, 1)))
    want = np.zeros(spec.output_shape, np.float32)
    for t in range(spec.out_width):
        for kw in range(3):
            want[:, :, t] += np.einsum("bc,oc->bo", xp[:, :, t * 2 + kw * 2], w[:, :, kw])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
