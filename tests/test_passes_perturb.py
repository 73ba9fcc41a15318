"""PerturbSites: scale = 0 is bit-identical, one row and one site at a time, relative noise size, layouts."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_builders import mlp_forecaster
from tqs_builders import channel_independent, linear_system, split_concat

from tvm_tqs.graph import call_sites, fuse
from tvm_tqs.passes.perturb import (
    FieldLayout,
    PerturbPlan,
    PerturbSites,
    batch_layouts,
    perturb_plan_of,
    site_noise,
)
from tvm_tqs.runtime import VMRunner, build

B = 4


def _perturbed(model, mode, batch=B, shape=None):
    window = shape or None
    mod = fuse(model, {"batch": batch} if window is None else window)
    probe = fuse(model, {"batch": 1})
    layouts = batch_layouts(mod, batch, probe, 1)
    pm = PerturbSites(layouts, mode)(mod)
    return mod, pm, perturb_plan_of(pm), layouts


def _inputs(plan, rng):
    scale = np.zeros((plan.batch, plan.columns), np.float32)
    if plan.mode == "output":
        noise = rng.standard_normal((plan.batch, plan.noise_width)).astype(np.float32)
    else:
        noise = rng.standard_normal(plan.dweight_size).astype(np.float32) * 1e-2
    return scale, noise


@pytest.mark.parametrize("mode", ["output", "weight"])
@pytest.mark.parametrize(
    "make", [mlp_forecaster, channel_independent, split_concat], ids=["mlp", "chan_indep", "split"]
)
def test_scale_zero_is_bit_identical(make, mode):
    model = make()
    mod, pm, plan, _ = _perturbed(model, mode)
    lookback, channels = (int(d) for d in mod["main"].params[0].ty.shape.values[1:])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, lookback, channels)).astype(np.float32)
    ref = VMRunner(build(mod))(x)[0]
    scale, noise = _inputs(plan, rng)
    out = VMRunner(build(pm))(x, scale, noise)[0]
    assert out.dtype == ref.dtype and out.shape == ref.shape
    np.testing.assert_array_equal(out.view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("mode", ["output", "weight"])
def test_one_site_one_row(mode):
    model = channel_independent()
    mod, pm, plan, _ = _perturbed(model, mode)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, 12, 3)).astype(np.float32)
    run = VMRunner(build(pm))
    scale, noise = _inputs(plan, rng)
    ref = run(x, scale, noise)[0]
    for k in plan.perturbable:
        scale[:] = 0
        scale[2, k] = 1e-2 if mode == "output" else 1.0
        out = run(x, scale, noise)[0]
        changed = [b for b in range(B) if not np.array_equal(out[b], ref[b])]
        assert changed == [2], f"site {k} changed rows {changed}"


def test_output_noise_is_relative_to_the_row_rms():
    # A single MatMul site produces the forecast, so the perturbed output is checkable in closed form.
    a = np.array([[0.9, 0.2], [-0.1, 1.1]], np.float32)
    mod, pm, plan, _ = _perturbed(linear_system(a), "output")
    assert plan.perturbable == (0,) and plan.row_sizes == {0: 2}
    rng = np.random.default_rng(2)
    x = rng.standard_normal((B, 1, 2)).astype(np.float32) * 3
    scale, noise = _inputs(plan, rng)
    scale[:, 0] = [0.0, 1e-3, 0.0, 0.5]
    out = VMRunner(build(pm))(x, scale, noise)[0]
    y = x @ a.T
    rms = np.sqrt((y**2).mean(axis=(1, 2)))
    expected = y + (scale[:, 0] * rms)[:, None, None] * noise[:, None, :2]
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)


def test_layouts_find_merged_and_moved_batch_axes():
    mod = fuse(channel_independent(channels=3), {"batch": B})
    probe = fuse(channel_independent(channels=3), {"batch": 1})
    layouts = batch_layouts(mod, B, probe, 1)
    shapes = [lay.fields[0].shape for lay in layouts]
    by_shape = {lay.fields[0].shape: lay.fields[0] for lay in layouts}
    # The head runs on [B*C, H] rows: the batch is the major factor of axis 0 (3 rows per batch row).
    assert (B * 3, 4) in shapes
    assert by_shape[(B * 3, 4)] == FieldLayout((B * 3, 4), 1, 3 * 4, merged=True)
    assert by_shape[(B, 4, 3)] == FieldLayout((B, 4, 3), 1, 12, merged=False)  # the forecast
    assert all(lay.skipped is None for lay in layouts)


def test_tuple_site_perturbs_every_result():
    mod, pm, plan, layouts = _perturbed(split_concat(), "output")
    split = next(lay for lay in layouts if len(lay.fields) == 2)
    assert split.site in plan.perturbable
    rng = np.random.default_rng(3)
    x = rng.standard_normal((B, 8, 4)).astype(np.float32)
    scale, noise = _inputs(plan, rng)
    run = VMRunner(build(pm))
    ref = run(x, scale, noise)[0]
    scale[1, split.site] = 1e-2
    out = run(x, scale, noise)[0]
    # Both halves of the split feed the output, and both moved.
    assert not np.array_equal(out[1, :, :2], ref[1, :, :2]) and not np.array_equal(
        out[1, :, 2:], ref[1, :, 2:]
    )


def test_weight_mode_skips_sites_without_weights_and_plans_slots():
    mod, pm, plan, _ = _perturbed(mlp_forecaster(), "weight")
    # Transposes read no constants; the two MatMul+Add sites read a weight and a bias each.
    assert plan.perturbable == (1, 2)
    assert set(plan.skipped) == {0, 3} and all("no float weight" in r for r in plan.skipped.values())
    slots = plan.weights[1] + plan.weights[2]
    assert [s.shape for s in slots] == [(16, 8), (8,), (8, 4), (4,)]
    assert [s.offset for s in slots] == [0, 128, 136, 168] and plan.dweight_size == 172
    assert all(s.rms > 0 for s in slots)


def test_plan_json_round_trip_and_module_attr():
    _, pm, plan, _ = _perturbed(mlp_forecaster(), "weight")
    assert PerturbPlan.from_json(plan.to_json()) == plan
    assert [p.name for p in pm["main"].params] == ["window", "tqs_scale", "tqs_dweight"]
    # The perturbation kernels come after the sites and leave the original call sites in place.
    assert len(call_sites(pm)) > len(call_sites(fuse(mlp_forecaster(), {"batch": B})))


def test_noise_generator_is_seeded_per_site():
    a = site_noise(0, 1, 5, 10)
    np.testing.assert_array_equal(a, site_noise(0, 1, 5, 10))
    assert a.dtype == np.float32
    assert not np.array_equal(a, site_noise(0, 1, 6, 10))
    assert not np.array_equal(a, site_noise(0, 2, 5, 10))
    assert not np.array_equal(a, site_noise(0, 1, 5, 10, mode="weight"))
    # A prefix of a longer draw: a site's noise does not depend on the row width of the batch.
    np.testing.assert_array_equal(site_noise(0, 1, 5, 20)[:10], a)


def test_batch_layouts_need_two_batch_sizes():
    mod = fuse(mlp_forecaster(), {"batch": 2})
    with pytest.raises(ValueError, match="two different batch sizes"):
        batch_layouts(mod, 2, mod, 2)
