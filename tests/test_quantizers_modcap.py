"""ModCap over fused sites: capacities, adjacency and differentials on a zoo model's fused graph; the joint
reconstruction of a linear-relu-linear pair against the pair's output; the downstream refit of a pair joined
by any other graph (a tanh, a GRU's gates), on inputs re-read through the graph."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from tvm_tqs.graph import weight_digest
from tvm_tqs.quantizers import bitsplit, modcap_quantizer
from tvm_tqs.quantizers.modcap import (
    DAMPING,
    GroupData,
    Layer,
    ModCap,
    damped_gram,
    find_link,
    group_objective,
    joint_bitsplit,
    refit_downstream,
)
from tvm_tqs.quantizers.modcap_pairs import (
    adjacent_groups,
    choose_pairs,
    data_dependent_capacity,
    data_free_capacity,
    differentials,
    self_reaching,
)

MLP = Path(__file__).resolve().parents[1] / "tvm_tqs" / "examples" / "vic_elec_mlp.onnx"


def _toy(seed: int = 0, m: int = 512, k: int = 16, h: int = 24, n: int = 8):
    """x -> relu(x A^T + c) -> . B^T with Layer views (channel axis 0: the matrices are [out, in])."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k))
    a = rng.standard_normal((h, k)) / np.sqrt(k)
    b = rng.standard_normal((n, h)) / np.sqrt(h)
    c = 0.1 * rng.standard_normal(h)
    xb = np.maximum(x @ a.T + c, 0.0)
    return Layer(a.astype(np.float32), 0, x), Layer(b.astype(np.float32), 0, xb), c


def _tanh_toy(seed: int = 0, m: int = 512):
    """x -> tanh(x A^T + c) -> . B^T: no affine / relu link; and the downstream rows for a given A."""
    up, down, c = _toy(seed, m)
    downstream = lambda a: np.tanh(up.rows @ np.asarray(a, np.float64).T + c)  # noqa: E731
    return up, Layer(down.weight, 0, downstream(up.weight)), downstream


# -- capacity, adjacency, differentials ---------------------------------------------------------------
def test_adjacency_skips_unweighted_sites_and_stops_at_weighted_ones():
    # 0 -> 1 (no weight) -> 2 -> 3 -> 4; groups: a={0}, b={2}, c={4}; a is adjacent to b only.
    edges = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5)]
    assert adjacent_groups(edges, {"a": (0,), "b": (2,), "c": (4,)}) == [("a", "b"), ("b", "c")]


def test_self_reaching_groups_are_the_recurrent_ones():
    # an unrolled recurrence: x0 -> W(1) -> R(2) -> R(3) -> head(4); W also feeds R(3) through site 5.
    edges = [(0, 1), (1, 2), (2, 3), (3, 4), (1, 5), (5, 3)]
    groups = {"W": (1,), "R": (2, 3), "head": (4,)}
    assert self_reaching(edges, groups) == {"R"}
    assert self_reaching([(0, 1)], {"a": (0,), "b": (1,)}) == set()


def test_differentials_and_top_k_are_disjoint_and_ranked():
    cap = data_free_capacity({"a": 100, "b": 10, "c": 90}, 4)
    assert cap == {"a": 400.0, "b": 40.0, "c": 360.0}
    ranked = differentials(cap, [("a", "b"), ("b", "c")])
    assert [(a, b) for _, a, b in ranked] == [("a", "b"), ("b", "c")]
    assert ranked[0][0] == 360.0
    assert choose_pairs(ranked, 2) == [("a", "b")]  # b is taken: (b, c) cannot get its own reconstruction
    assert choose_pairs(ranked, 2, eligible=[("b", "c")]) == [("b", "c")]
    assert data_dependent_capacity({"a": 0.25, "b": 0.5}) == {"a": 2.0, "b": 1.0}


@pytest.fixture(scope="module")
def mlp_modcap():
    from tvm_tqs.planning import PlanningProblem

    problem = PlanningProblem.from_model(str(MLP), "x86", batch=4)
    return problem, modcap_quantizer(problem, k=1)


def test_capacity_and_differentials_on_the_zoo_mlp(mlp_modcap):
    problem, mc = mlp_modcap
    # vic_elec_mlp: three dense layers in a chain, relu between them (read from the captured activations).
    assert [(g.name, g.weight.size) for g in problem.groups] == [("w0", 24576), ("w2", 16384), ("w4", 6144)]
    assert mc.pairs == [("w0", "w2"), ("w2", "w4")]
    assert {p: link.kind for p, link in mc.links.items()} == {("w0", "w2"): "relu", ("w2", "w4"): "relu"}
    plan = mc.plan(4, problem.group_size)
    assert plan["capacity"] == {"w0": 24576 * 4.0, "w2": 16384 * 4.0, "w4": 6144 * 4.0}
    assert [(d, a, b) for d, a, b in plan["differentials"]] == [
        (40960.0, "w2", "w4"),
        (32768.0, "w0", "w2"),
    ]
    assert plan["chosen"] == [("w2", "w4")]


def test_modcap_quantizer_joint_pair_and_per_site_rest(mlp_modcap):
    problem, mc = mlp_modcap
    weights = {g.name: np.asarray(g.weight, np.float32) for g in problem.groups}
    qs = {n: mc(w, 4, 1, problem.group_size) for n, w in weights.items()}
    result = mc.joint(("w2", "w4"), 4, problem.group_size)
    assert result.joint <= result.per_site
    assert qs["w2"] is result.up and qs["w4"] is result.down
    # w0 is outside the chosen pair: per-site Bit-Split on its own inputs (what BitSplit computes).
    assert qs["w0"] is mc._per_site(mc.by_name["w0"], 4, problem.group_size)
    for n, q in qs.items():
        assert q.q.min() >= -7 and q.q.max() <= 7 and q.shape == weights[n].shape


# -- joint reconstruction on a toy linear-relu-linear pair -----------------------------------------------
def test_link_is_read_from_activations():
    up, down, c = _toy()
    link = find_link(up.rows @ up.matrix.T, down.rows)
    assert link.kind == "relu" and np.allclose(link.offset, c)
    assert find_link(up.rows @ up.matrix.T, np.tanh(down.rows)) is None  # no affine / relu map: not eligible


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_joint_never_increases_and_beats_per_site(bits):
    up, down, _ = _toy()
    link = find_link(up.rows @ up.matrix.T, down.rows)
    r = joint_bitsplit(up, down, link, bits, None)
    values = [r.per_site] + [v for _, _, v, ok in r.history if ok]
    assert all(b <= a for a, b in itertools.pairwise(values))  # accepted steps only lower the objective
    assert r.joint == pytest.approx(group_objective(up, down, link, *_mats(r), DAMPING))
    # With 512 rows for 16 / 24 inputs the damping is negligible: the plain output error drops too, by a
    # clear margin (per-site reconstruction ignores the error the upstream passes on).
    start = joint_bitsplit(up, down, link, bits, None, rounds=0)
    plain_start = group_objective(up, down, link, *_mats(start))
    plain_joint = group_objective(up, down, link, *_mats(r))
    assert plain_joint < 0.9 * plain_start


def test_joint_reaches_the_known_optimum_on_a_representable_pair():
    # Weights on the int3 grid (one scale per channel): the optimum is the fp32 pair itself, objective 0.
    rng = np.random.default_rng(1)
    up, down, _ = _toy(1)
    a = rng.integers(-3, 4, up.weight.shape) * 0.1
    b = rng.integers(-3, 4, down.weight.shape) * 0.2
    a[:, 0], b[:, 0] = 0.3, 0.6  # every channel reaches its largest code: the rtn scale is exact
    x = up.rows
    xb = np.maximum(x @ a.T, 0.0)
    up, down = Layer(a.astype(np.float32), 0, x), Layer(b.astype(np.float32), 0, xb)
    link = find_link(x @ a.T, xb)
    r = joint_bitsplit(up, down, link, 3, None)
    y = xb @ b.T
    assert r.joint <= 1e-10 * float(np.mean(np.sum(y * y, axis=1)))
    np.testing.assert_allclose(r.up.dequantize_matrix(), a, atol=1e-6)
    np.testing.assert_allclose(r.down.dequantize_matrix(), b, atol=1e-6)


def test_joint_is_deterministic():
    up, down, _ = _toy(2)
    link = find_link(up.rows @ up.matrix.T, down.rows)
    r1, r2 = (joint_bitsplit(up, down, link, 3, 8) for _ in range(2))
    assert r1.history == r2.history
    assert np.array_equal(r1.up.q, r2.up.q) and np.array_equal(r1.down.scale, r2.down.scale)


def _mats(r):
    return r.up.dequantize_matrix().astype(np.float64), r.down.dequantize_matrix().astype(np.float64)


@pytest.mark.parametrize("name", ["rtn", "mse", "bitsplit"])
def test_int3_is_the_symmetric_grid(name):
    # W3 runs use int3 per group on [-3, 3] (the -4 code unused, as int4 leaves -8 unused).
    import tvm_tqs.quantizers as quantizers
    from tvm_tqs.quantizers import split_planes, stitch_planes

    w = np.random.default_rng(3).standard_normal((40, 12)).astype(np.float32)
    q = getattr(quantizers, name)(w, 3, 1, 16)
    assert q.q.min() == -3 and q.q.max() == 3 and q.scale.shape == (12, 3)
    assert np.array_equal(stitch_planes(split_planes(q.q, 3)), q.q)


def test_compile_with_modcap_needs_and_uses_calibration_windows():
    import tvm_tqs
    from tvm_tqs.examples import example_model

    rng = np.random.default_rng(0)
    # smooth windows (a random walk per channel), the shape the example's contract takes
    windows = np.cumsum(rng.standard_normal((48, 96, 2)), axis=1).astype(np.float32) * 0.1
    with pytest.raises(tvm_tqs.TQSError, match="modcap.*needs calibration"):
        tvm_tqs.compile(example_model(), target="x86", uniform="int4", quantizer="modcap")
    model = tvm_tqs.compile(
        example_model(), target="x86", uniform="int4", quantizer="modcap", calibration=windows
    )
    fp32 = tvm_tqs.compile(example_model(), target="x86", uniform="fp32")
    assert model.quantize_report["quantizer"] == "modcap"
    assert model.quantize_report["quantizer_activations"] == "calibration (48 windows)"
    window = windows[:1]
    ref = fp32.run(window)[0]
    assert np.linalg.norm(model.run(window)[0] - ref) / np.linalg.norm(ref) < 0.2


# -- pairs joined by any graph: the downstream refitted on re-read inputs ---------------------------------
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_refit_downstream_never_increases_and_beats_per_site(bits):
    up, down, downstream = _tanh_toy()
    assert find_link(up.rows @ up.matrix.T, down.rows) is None
    a_q = bitsplit(up.weight, bits, 0, None, gram=damped_gram(up.rows)).dequantize()
    rows_q = downstream(a_q)
    start = bitsplit(down.weight, bits, 0, None, gram=damped_gram(down.rows))
    r = refit_downstream(down, rows_q, bits, None, start)
    assert r.up is None and r.joint <= r.per_site
    y = down.rows @ down.matrix.T

    def plain(q):
        return float(np.mean(np.sum((y - rows_q @ q.dequantize_matrix().T) ** 2, axis=1)))

    # Per-site reconstruction ignores the error the quantized upstream passes on; the refit absorbs part.
    assert [ok for *_, ok in r.history] == [True]
    assert plain(r.down) < 0.9 * plain(start)


def test_refit_downstream_rejects_misaligned_rows():
    up, down, downstream = _tanh_toy()
    with pytest.raises(ValueError, match="do not align"):
        refit_downstream(down, downstream(up.weight)[1:], 4, None, bitsplit(down.weight, 4, 0, None))


def test_modcap_refits_graph_linked_pairs_through_recapture():
    up, down, downstream = _tanh_toy()
    groups = [
        GroupData(name, layer.weight, 0, weight_digest(layer.weight), (site,), layer.rows)
        for name, layer, site in (("a", up, 0), ("b", down, 1))
    ]
    calls = []

    def recapture(name, weight, below):
        calls.append((name, below))
        return downstream(weight)

    assert ModCap(groups, [(0, 1)], k=1).graph_pairs == []  # without recapture: not eligible
    mc = ModCap(groups, [(0, 1)], k=1, recapture=recapture)
    assert mc.links == {} and mc.graph_pairs == [("a", "b")]
    assert mc.plan(3, None)["chosen"] == [("a", "b")]
    qa, qb = mc(up.weight, 3, 0), mc(down.weight, 3, 0)
    assert calls == [("a", "b")]  # one re-read per pair and bit-width
    assert qa is mc._per_site(mc.by_name["a"], 3, None)
    result = mc.joint(("a", "b"), 3, None)
    assert qb is result.down and result.joint < result.per_site


def test_modcap_on_a_gru_reads_the_downstream_inputs_through_its_gates():
    from tvm_tqs.planning import PlanningProblem

    gru = Path(__file__).resolve().parent / "corpus" / "gru_fixed1_op13.onnx"
    problem = PlanningProblem.from_model(str(gru), "x86", batch=1)
    mc = modcap_quantizer(problem, k=2)
    assert mc.graph_pairs, "a GRU's groups are joined by gates: every pair needs the graph"
    # The recurrent weight R reads h_{t-1}, which it produced itself: never a refitted downstream.
    assert mc.recurrent and all(b not in mc.recurrent for _, b in mc.graph_pairs)
    assert any(b in mc.recurrent for _, b in mc.pairs)
    chosen = mc.plan(3, problem.group_size)["chosen"]
    assert chosen and all(p in mc.graph_pairs for p in chosen)
    a, b = chosen[0]
    g_a, g_b = mc.by_name[a], mc.by_name[b]
    same = mc.recapture(a, g_a.weight, b)
    assert np.allclose(same, g_b.rows, rtol=1e-5, atol=1e-6)  # unchanged weight: the captured rows
    q = mc._per_site(g_a, 3, problem.group_size).dequantize()
    moved = mc.recapture(a, q, b)
    assert moved.shape == g_b.rows.shape and not np.allclose(moved, g_b.rows)
    result = mc.joint((a, b), 3, problem.group_size)
    assert result.joint <= result.per_site
