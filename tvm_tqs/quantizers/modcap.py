"""ModCap over fused sites (Ma et al., CVPR 2023, "Solving Oscillation Problem in Post-Training Quantization
Through a Theoretical Perspective"): joint reconstruction of the adjacent weight groups whose capacities differ
most, instead of reconstructing every group against its own output.

The paper's argument: in sequential layer-wise reconstruction the loss oscillates where a module of small
capacity follows (or precedes) one of large capacity, because the smaller one cannot absorb the error the
larger one passes on; reconstructing such adjacent modules as ONE unit (against the unit's output) removes
the oscillation. Its recipe, and what each step is here:

1. **Module capacity.** Data-free: parameter count x bit-width (`data_free_capacity`; all our anchors are
   stride-1 matmuls / convs, so the paper's stride factor is 1). Data-dependent: from the reconstruction
   error, ``-log2`` of the per-group relative output reconstruction error of per-site Bit-Split
   (`data_dependent_capacity`: the bits of output SNR a group keeps; a module that reconstructs well has
   capacity to spare).
2. **Adjacency.** Modules are weight groups (the planner's units); group A precedes group B when a fused
   site of A reaches a fused site of B along `tvm_tqs.graph.site_edges` through sites that read no group
   weight (reshapes, activations, norms in between) (`adjacent_groups`). A group one of whose sites
   reaches another of its own sites is recurrent (an unrolled RNN's R: it reads the state it wrote;
   `self_reaching`) and is never a pair's downstream: the inputs captured with its fp32 weight are not the
   inputs it sees once its weight changes (refitting GRU Rs so raised etth1_gru's W3 rollout error).
3. **Top-k differentials.** |C_A - C_B| per adjacent pair, largest first; the top `k` pairs that can be
   reconstructed jointly (below) and share no group are chosen (`choose_pairs`).
4. **Joint reconstruction** of each chosen pair against the pair's OUTPUT, the downstream anchor's output
   ``Y = X_B W_B^T`` on the captured fp32 inputs, given the captured inputs ``X_A`` of the upstream anchor:

       J(A_q, B_q) = ||Y - f(X_A A_q^T) B_q^T||^2,   f(P) = P + c  or  relu(P + c)

   `find_link` reads f from the captured activations (B's inputs are checked to be an affine or
   ReLU-affine function of A's anchor output, per channel, to 1e-3 of their range). Pairs with any other
   graph between them (gates, norms, attention, GELU) get only step a., on the inputs X~ read through the
   compiled graph with A's quantized weight in place (`refit_downstream`; `ModCap.recapture`, one more
   capture per chosen pair): without a closed-form f there is no target to re-solve A against. The paper optimises the unit by gradient descent on AdaRound variables;
   we have no gradients and use Bit-Split's closed-form updates instead, alternating (`joint_bitsplit`):

   a. **downstream**: B on the inputs X~ = f(X_A A_q^T) the QUANTIZED upstream produces: with the target
      W_B* = argmin ||Y - X~ W^T||^2 / M + lam_B ||W - W_B||^2 (ridge towards the fp32 weight, lam_B the
      damping of B's own Gram matrix) and G = X~^T X~ / M + lam_B I, that objective at B_q equals
      ``tr((W_B* - B_q) G (W_B* - B_q)^T)`` + const, so Bit-Split on (W_B*, G) minimises B's part of the
      damped group objective exactly as per-site Bit-Split minimises its own damped output error;
   b. **upstream**: A against a target that accounts for B_q: the activations Z* = argmin_Z ||Y - Z B_q^T||^2
      + mu ||Z - Z_fp||^2 (ridge towards the fp32 activations, since B usually has fewer outputs than
      inputs); through f's active set (ReLU: entries with fp32 pre-activation > 0; affine: all), the
      pre-activation target P* = Z* - c there and the fp32 pre-activation elsewhere (any value <= -c gives
      the same output; the fp32 one keeps the entry inactive); then Bit-Split on the ridge target
      W_A* = argmin ||P* - X_A W^T||^2 / M + lam_A ||W - W_A||^2 with A's damped Gram matrix. This step
      weighs errors of Z uniformly instead of by B_q^T B_q, so it is a surrogate;
   c. every candidate is kept only if it lowers the damped J on all captured rows (so J never exceeds the
      per-site solution it starts from) and does not raise the plain J on held-out rows (every 4th row is
      left out of the targets: with one row per data-free context, targets fitted on all rows overfit
      them); rounds stop when neither step is accepted. The damped J adds lam_B ||B_q - W_B||^2 +
      lam_A s_B ||A_q - W_A||^2 (`group_objective`), the joint analogue of per-site Bit-Split's damping.

Measured (benchmarks/quantizers.py --weights-only, 64 capture windows): on etth1_dlinear (pair w0 -> w1,
affine link) calibrated ModCap lowers the pair's output error on real TEST windows 1.5-3x and the rollout
error by 9-23%, but with data-free contexts the compensation fitted on synthetic activations does not
transfer to real data and raises both severalfold (the held-out rows are synthetic too, so the guard in c.
cannot see it): use ModCap with `calibration` windows. With one capture row per window (vic_elec_mlp,
M = 64 < K = 128) the held-out guard rejects every step; with 512 calibration windows the joint pair's test
error drops 14-20%. On etth1_gru (chosen: layer 1's W_ih -> layer 2's W_ih through the first GRU's
gates, accepted; layer 2's W_hh -> the head, rejected by the guard) the downstream refit lowers the W3
rollout error from 0.062 (per-site, 64 calibration windows) to 0.048. The full-zoo table is
benchmarks/results/quantizers_weights.md.

Groups outside the chosen pairs get per-site Bit-Split with their own Gram matrices (what `BitSplit` does
with the same activations), so ``bitsplit`` and ``modcap`` differ only in the joint pairs. The pair's partner
is quantized at the same bits and group size as the weight asked for (uniform plans; a mixed plan would
need the partner's precision, which the quantizer interface does not carry).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .base import QuantizedWeight, as_matrix, from_matrix
from .bitsplit import bitsplit
from .modcap_pairs import (
    adjacent_groups,
    choose_pairs,
    data_dependent_capacity,
    data_free_capacity,
    differentials,
    self_reaching,
)

# Ridge added to every Gram matrix / least-squares system, as a fraction of its mean diagonal (as
# `tvm_tqs.planning.activations.GRAM_DAMPING`: few rows make X^T X rank-deficient).
DAMPING = 0.01
# How closely B's inputs must follow f(A's anchor output) for the pair to be reconstructed jointly.
LINK_TOLERANCE = 1e-3


# -- the link between two anchors ----------------------------------------------------------------------
@dataclass(frozen=True)
class Link:
    """B's anchor input as a function of A's anchor output P = X_A W_A^T: ``P + offset`` ("affine") or
    ``relu(P + offset)`` ("relu"), per output channel of A (the bias and activation fused into A's site)."""

    kind: str
    offset: np.ndarray

    def pre(self, p: np.ndarray) -> np.ndarray:
        return p + self.offset

    def __call__(self, p: np.ndarray) -> np.ndarray:
        z = p + self.offset
        return np.maximum(z, 0.0) if self.kind == "relu" else z


def find_link(p_up: np.ndarray, x_down: np.ndarray, tol: float = LINK_TOLERANCE) -> Link | None:
    """The affine or ReLU-affine per-channel map from the upstream anchor output `p_up` [M, N] to the
    downstream anchor input `x_down` [M, N] (rows aligned), if one holds to `tol` of x_down's range."""
    if p_up.shape != x_down.shape or p_up.size == 0:
        return None
    scale = max(float(np.max(np.abs(x_down))), 1e-12)
    diff = x_down - p_up
    offset = np.median(diff, axis=0)
    link = Link("affine", offset)
    if np.max(np.abs(link(p_up) - x_down)) <= tol * scale:
        return link
    active = x_down > tol * scale
    # Per channel, the offset read on the active entries (where relu is the identity).
    counts = active.sum(axis=0)
    offset = np.where(counts > 0, np.sum(np.where(active, diff, 0.0), axis=0) / np.maximum(counts, 1), 0.0)
    link = Link("relu", offset)
    if np.max(np.abs(link(p_up) - x_down)) <= tol * scale:
        return link
    return None


# -- joint reconstruction of one pair ------------------------------------------------------------------
def damped_gram(x: np.ndarray, damping: float = DAMPING) -> np.ndarray:
    """X^T X / rows plus `damping` x its mean diagonal on the diagonal (as `input_grams`)."""
    h = x.T @ x / max(len(x), 1)
    return h + damping * max(float(np.mean(np.diag(h))), 1e-12) * np.eye(len(h))


def _lam(x: np.ndarray, damping: float) -> float:
    """The ridge `damped_gram` adds: `damping` x the mean diagonal of X^T X / rows."""
    return damping * max(float(np.mean(np.sum(x * x, axis=0))) / max(len(x), 1), 1e-12)


def _held_out(rows: int, holdout: int) -> np.ndarray:
    """Mask of the rows that only judge steps: every `holdout`-th (none for 0)."""
    held = np.zeros(rows, bool)
    if holdout:
        held[holdout - 1 :: holdout] = True
    return held


def _ridge_towards(x: np.ndarray, y: np.ndarray, w0: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """``W* = argmin_W ||y - x W^T||^2 / rows + lam ||W - w0||^2`` ([N, K]) and its Gram ``x^T x / rows +
    lam I``: ``tr((W* - W) G (W* - W)^T)`` is then that objective up to a constant, which is what Bit-Split
    minimises given (W*, G). Pulled towards the fp32 weight `w0`, not towards 0, so that directions the
    rows never visit keep the fp32 weight (as the damping of per-site Bit-Split does)."""
    g = x.T @ x / max(len(x), 1) + lam * np.eye(x.shape[1])
    return np.linalg.solve(g, x.T @ y / max(len(x), 1) + lam * w0.T).T, g


@dataclass(frozen=True)
class Layer:
    """One anchor of a pair: its weight as the quantizer sees it and its captured input rows [M, K]."""

    weight: np.ndarray
    channel_axis: int
    rows: np.ndarray

    @property
    def matrix(self) -> np.ndarray:
        return as_matrix(np.asarray(self.weight, np.float64), self.channel_axis)

    def as_weight(self, m: np.ndarray) -> np.ndarray:
        """A [N, K] matrix back in the weight's layout (float32, as quantizers take it)."""
        return from_matrix(m.astype(np.float32), tuple(self.weight.shape), self.channel_axis)


@dataclass
class JointResult:
    """The pair's quantized weights, its group objective per-site vs joint, and the accepted steps."""

    up: QuantizedWeight | None  # None: the upstream keeps its per-site solution (`refit_downstream`)
    down: QuantizedWeight
    per_site: float
    joint: float
    history: list = field(default_factory=list)  # (round, step, objective, accepted)


def group_objective(
    up: Layer, down: Layer, link: Link, a_q: np.ndarray, b_q: np.ndarray, damping: float = 0.0
) -> float:
    """The pair's objective: ``||Y - f(X_A A_q^T) B_q^T||^2 / rows`` (Y the fp32 output of the downstream
    anchor on its captured fp32 inputs), plus with `damping` > 0 the ridge terms that keep weights near fp32
    where the rows say nothing: ``lam_B ||B_q - W_B||^2 + lam_A s_B ||A_q - W_A||^2`` (lam as `damped_gram`
    adds for each anchor's inputs; s_B the mean squared column norm of W_B, the gain from A's output to
    Y). ``damping=DAMPING`` is what `joint_bitsplit` minimises and never increases."""
    w_a, w_b = up.matrix, down.matrix
    y = down.rows @ w_b.T
    e = y - link(up.rows @ a_q.T) @ b_q.T
    value = float(np.sum(e * e) / max(len(e), 1))
    if damping > 0:
        s_b = float(np.mean(np.sum(w_b * w_b, axis=0)))
        value += _lam(down.rows, damping) * float(np.sum((b_q - w_b) ** 2))
        value += _lam(up.rows, damping) * s_b * float(np.sum((a_q - w_a) ** 2))
    return value


def joint_bitsplit(
    up: Layer,
    down: Layer,
    link: Link,
    bits: int,
    group_size: int | None,
    *,
    rounds: int = 3,
    sweeps: int = 4,
    damping: float = DAMPING,
    start: tuple[QuantizedWeight, QuantizedWeight] | None = None,
    holdout: int = 4,
) -> JointResult:
    """Joint reconstruction of an adjacent pair by alternating Bit-Split (module docstring, step 4).

    Parameters
    ----------
    up, down : Layer
        The upstream and downstream anchors; ``link(up.rows @ up.matrix.T)`` must be (close to) ``down.rows``.
    link : Link
        The op between them (`find_link`).
    bits, group_size
        As every quantizer takes them; both weights get the same.
    rounds : int
        At most this many (downstream, upstream) alternations; stops early when neither step is accepted.
    sweeps : int
        Bit-Split's sweeps per stage.
    damping : float
        Ridge of the Gram matrices and least-squares targets (fraction of the mean diagonal).
    start : pair of QuantizedWeight, optional
        The per-site solution to start from (default: per-site Bit-Split on each anchor's own inputs).
    holdout : int
        Every `holdout`-th row is held out of the targets and only judges steps (0: none).

    Returns
    -------
    JointResult
        ``joint <= per_site`` always: a step is kept only if it lowers the group objective.
    """
    if start is None:
        start = tuple(
            bitsplit(
                layer.weight, bits, layer.channel_axis, group_size, gram=damped_gram(layer.rows, damping)
            )
            for layer in (up, down)
        )
    # Targets are fitted on most rows; every `holdout`-th row only judges a step. With few capture rows (one
    # per data-free context) the joint targets can fit those rows at the expense of the data they stand for;
    # a step must lower the objective on all rows AND not raise the plain output error on the held-out ones.
    held = _held_out(len(up.rows), holdout)
    fit_up, fit_down = (Layer(x.weight, x.channel_axis, x.rows[~held]) for x in (up, down))
    held_up, held_down = (Layer(x.weight, x.channel_axis, x.rows[held]) for x in (up, down))
    w_a, w_b = up.matrix, down.matrix
    y = fit_down.rows @ w_b.T
    qa, qb = start
    a_q, b_q = qa.dequantize_matrix().astype(np.float64), qb.dequantize_matrix().astype(np.float64)
    best = per_site = group_objective(up, down, link, a_q, b_q, damping)
    best_held = group_objective(held_up, held_down, link, a_q, b_q) if held.any() else 0.0
    result = JointResult(qa, qb, per_site, per_site)
    lam_a, lam_b = _lam(fit_up.rows, damping), _lam(fit_down.rows, damping)
    p_fp = fit_up.rows @ w_a.T
    z_fp = link(p_fp)
    active = link.pre(p_fp) > 0 if link.kind == "relu" else np.ones(p_fp.shape, bool)

    def solve(layer: Layer, target: np.ndarray, gram: np.ndarray) -> tuple[QuantizedWeight, np.ndarray]:
        q = bitsplit(layer.as_weight(target), bits, layer.channel_axis, group_size, gram=gram, sweeps=sweeps)
        return q, q.dequantize_matrix().astype(np.float64)

    def judge(round_: int, step: str, a_m: np.ndarray, b_m: np.ndarray) -> bool:
        nonlocal best, best_held
        value = group_objective(up, down, link, a_m, b_m, damping)
        value_held = group_objective(held_up, held_down, link, a_m, b_m) if held.any() else 0.0
        take = value < best and value_held <= best_held
        result.history.append((round_, step, value, bool(take)))
        if take:
            best, best_held = value, value_held
        return take

    for r in range(rounds):
        accepted = False
        # a. downstream on the inputs the quantized upstream produces: exact for B's part of the objective.
        w_star, gram = _ridge_towards(link(fit_up.rows @ a_q.T), y, w_b, lam_b)
        cand, cand_m = solve(down, w_star, gram)
        if judge(r, "down", a_q, cand_m):
            qb, b_q, accepted = cand, cand_m, True
        # b. upstream against the activations B_q maps best onto Y (ridge towards the fp32 activations),
        # through the link's active set; a surrogate (Z's errors weighed uniformly), hence the acceptance test.
        g = b_q.T @ b_q
        mu = damping * max(float(np.mean(np.diag(g))), 1e-12)
        z_star = np.linalg.solve(g + mu * np.eye(len(g)), (y @ b_q + mu * z_fp).T).T
        p_star = np.where(active, z_star - link.offset, p_fp)
        w_star, gram = _ridge_towards(fit_up.rows, p_star, w_a, lam_a)
        cand, cand_m = solve(up, w_star, gram)
        if judge(r, "up", cand_m, b_q):
            qa, a_q, accepted = cand, cand_m, True
        if not accepted:
            break
    result.up, result.down, result.joint = qa, qb, best
    return result


def refit_downstream(
    down: Layer,
    rows_q: np.ndarray,
    bits: int,
    group_size: int | None,
    start: QuantizedWeight,
    *,
    sweeps: int = 4,
    damping: float = DAMPING,
    holdout: int = 4,
) -> JointResult:
    """The downstream half of the joint reconstruction for a pair whose link is any graph (gates, norms,
    attention): B on the inputs `rows_q` its anchor sees when the upstream group is quantized (read through
    the graph), against the fp32 output ``Y = X_B W_B^T``: ``J(B_q) = ||Y - X~ B_q^T||^2 / rows +
    lam_B ||B_q - W_B||^2``. Bit-Split on its ridge target (step a. of `joint_bitsplit`, exact for this
    objective); kept only if it lowers J on all rows and the plain error on the held-out rows. The upstream
    keeps its per-site solution: without a closed-form link there is no target to re-solve it against.
    `JointResult.up` is None."""
    if rows_q.shape != down.rows.shape:
        raise ValueError(f"quantized-upstream rows {rows_q.shape} do not align with {down.rows.shape}")
    held = _held_out(len(rows_q), holdout)
    w_b = down.matrix
    y = down.rows @ w_b.T
    lam = _lam(down.rows, damping)

    def objective(b_q: np.ndarray, rows: np.ndarray, damped: bool) -> float:
        e = y[rows] - rows_q[rows] @ b_q.T
        value = float(np.sum(e * e) / max(len(e), 1))
        return value + (lam * float(np.sum((b_q - w_b) ** 2)) if damped else 0.0)

    every = np.ones(len(rows_q), bool)
    b0 = start.dequantize_matrix().astype(np.float64)
    per_site, held0 = objective(b0, every, True), objective(b0, held, False) if held.any() else 0.0
    result = JointResult(None, start, per_site, per_site)
    w_star, gram = _ridge_towards(rows_q[~held], y[~held], w_b, _lam(rows_q[~held], damping))
    cand = bitsplit(down.as_weight(w_star), bits, down.channel_axis, group_size, gram=gram, sweeps=sweeps)
    b1 = cand.dequantize_matrix().astype(np.float64)
    value, value_held = objective(b1, every, True), objective(b1, held, False) if held.any() else 0.0
    take = value < per_site and value_held <= held0
    result.history.append((0, "down", value, bool(take)))
    if take:
        result.down, result.joint = cand, value
    return result


# -- the quantizer object --------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupData:
    """A weight group as ModCap needs it: its weight (quantizer view), the digest the quantizer is called
    with, its fused sites and its anchors' captured input rows (None where they cannot be read as rows)."""

    name: str
    weight: np.ndarray = field(repr=False)
    channel_axis: int
    digest: str
    sites: tuple[int, ...]
    rows: np.ndarray | None = field(repr=False)

    @property
    def layer(self) -> Layer:
        return Layer(self.weight, self.channel_axis, self.rows)


@dataclass
class ModCap:
    """ModCap grouping + joint Bit-Split as a quantizer ``(w, bits, channel_axis, group_size)``.

    Parameters
    ----------
    groups : sequence of GroupData
        Every weight group with its captured input rows.
    edges : sequence of (int, int)
        `tvm_tqs.graph.site_edges` of the fused graph.
    k : int
        Pairs reconstructed jointly (the top-k capacity differentials among eligible pairs).
    capacity : {"data-free", "data-dependent"}
        Which capacity ranks the pairs.
    rounds, sweeps, damping
        `joint_bitsplit`'s.
    activations : str
        Where the rows came from (reports say it).
    recapture : callable, optional
        ``recapture(up, weight, down)``: the downstream group's anchor rows (aligned with its `rows`) when
        group `up` has `weight` (quantizer view) instead of its own; makes every adjacent pair eligible,
        pairs without an affine / ReLU link getting `refit_downstream`.
    """

    groups: Sequence[GroupData]
    edges: Sequence[tuple[int, int]]
    k: int = 2
    capacity: str = "data-free"
    rounds: int = 3
    sweeps: int = 4
    damping: float = DAMPING
    activations: str = "none"
    recapture: Callable[[str, np.ndarray, str], np.ndarray | None] | None = field(default=None, repr=False)
    _plans: dict = field(default_factory=dict, repr=False)
    _done: dict = field(default_factory=dict, repr=False)

    __name__ = "modcap"

    def __post_init__(self):
        if self.capacity not in ("data-free", "data-dependent"):
            raise ValueError(f"capacity must be 'data-free' or 'data-dependent', got {self.capacity!r}")
        if self.k < 0:
            raise ValueError(f"k must be >= 0, got {self.k}")
        self.by_name = {g.name: g for g in self.groups}
        self.by_digest = {g.digest: g for g in self.groups}
        sites = {g.name: g.sites for g in self.groups}
        self.pairs = adjacent_groups(self.edges, sites)
        # A recurrent group is never a pair's downstream: its inputs move with its own weight.
        self.recurrent = self_reaching(self.edges, sites)
        self.links: dict[tuple[str, str], Link] = {}
        self.graph_pairs: list[tuple[str, str]] = []  # any other graph: only the downstream is refitted
        for a, b in self.pairs:
            up, down = self.by_name[a], self.by_name[b]
            if up.rows is None or down.rows is None or b in self.recurrent:
                continue
            link = find_link(up.rows @ up.layer.matrix.T, down.rows)
            if link is not None:
                self.links[(a, b)] = link
            elif self.recapture is not None:
                self.graph_pairs.append((a, b))

    def _gram(self, g: GroupData) -> np.ndarray | None:
        return None if g.rows is None else damped_gram(g.rows, self.damping)

    def _per_site(self, g: GroupData, bits: int, group_size: int | None) -> QuantizedWeight:
        key = ("site", g.name, bits, group_size)
        if key not in self._done:
            self._done[key] = bitsplit(
                g.weight, bits, g.channel_axis, group_size, gram=self._gram(g), sweeps=self.sweeps
            )
        return self._done[key]

    def reconstruction_error(self, g: GroupData, bits: int, group_size: int | None) -> float | None:
        """Per-site relative output reconstruction error sqrt(tr(E H E^T) / tr(W H W^T)) on the rows."""
        if g.rows is None:
            return None
        w = g.layer.matrix
        e = self._per_site(g, bits, group_size).dequantize_matrix() - w
        h = self._gram(g)
        return float(np.sqrt(np.trace(e @ h @ e.T) / max(np.trace(w @ h @ w.T), 1e-30)))

    def plan(self, bits: int, group_size: int | None) -> dict:
        """Capacities, ranked differentials and the chosen pairs at (bits, group_size)."""
        key = (bits, group_size)
        if key not in self._plans:
            if self.capacity == "data-free":
                cap = data_free_capacity({g.name: int(g.weight.size) for g in self.groups}, bits)
            else:
                errors = {g.name: self.reconstruction_error(g, bits, group_size) for g in self.groups}
                cap = data_dependent_capacity({n: e for n, e in errors.items() if e is not None})
            ranked = differentials(cap, [p for p in self.pairs if p[0] in cap and p[1] in cap])
            eligible = sorted([*self.links, *self.graph_pairs])
            self._plans[key] = {
                "capacity": cap,
                "differentials": ranked,
                "eligible": eligible,
                "chosen": choose_pairs(ranked, self.k, eligible),
            }
        return self._plans[key]

    def joint(self, pair: tuple[str, str], bits: int, group_size: int | None) -> JointResult:
        key = ("joint", pair, bits, group_size)
        if key not in self._done:
            up, down = self.by_name[pair[0]], self.by_name[pair[1]]
            if pair not in self.links:
                start = self._per_site(up, bits, group_size)
                rows_q = self.recapture(up.name, start.dequantize(), down.name)
                self._done[key] = refit_downstream(
                    down.layer,
                    rows_q,
                    bits,
                    group_size,
                    self._per_site(down, bits, group_size),
                    sweeps=self.sweeps,
                    damping=self.damping,
                )
                return self._done[key]
            self._done[key] = joint_bitsplit(
                up.layer,
                down.layer,
                self.links[pair],
                bits,
                group_size,
                rounds=self.rounds,
                sweeps=self.sweeps,
                damping=self.damping,
                start=(self._per_site(up, bits, group_size), self._per_site(down, bits, group_size)),
            )
        return self._done[key]

    def __call__(
        self, w: np.ndarray, bits: int, channel_axis: int, group_size: int | None = None
    ) -> QuantizedWeight:
        from ..graph import weight_digest

        w = np.asarray(w, dtype=np.float32)
        g = self.by_digest.get(weight_digest(w))
        if g is None or g.channel_axis != channel_axis:  # not a weight of this model: weight error only
            return bitsplit(w, bits, channel_axis, group_size, sweeps=self.sweeps)
        for pair in self.plan(bits, group_size)["chosen"]:
            if g.name in pair:
                result = self.joint(pair, bits, group_size)
                if g.name == pair[1]:
                    return result.down
                return result.up if result.up is not None else self._per_site(g, bits, group_size)
        return self._per_site(g, bits, group_size)


def modcap_quantizer(
    problem, calibration: np.ndarray | None = None, *, k: int = 2, capacity: str = "data-free", **kw
) -> ModCap:
    """`ModCap` for a `PlanningProblem`: each group's anchor inputs captured through the compiled graph on
    `calibration` windows when given, else on the data-free contexts `bitsplit_quantizer` uses (so groups
    outside the chosen pairs get exactly the same Bit-Split)."""
    from ..graph import site_edges, weight_digest
    from ..planning.activations import activation_capture, anchor_rows

    rollout = problem.rollout
    if rollout is None:
        rows, source = {}, "none: the model has no rollout contract (weight error only)"
    else:
        capture = activation_capture(rollout, calibration)
        rows, source = anchor_rows(problem, capture), capture.source
    groups = []
    for g in problem.groups:
        site_rows = [rows.get(s) for s in g.sites]
        stacked = None if any(r is None for r in site_rows) else np.concatenate(site_rows)
        weight = np.asarray(g.weight, np.float32)
        groups.append(
            GroupData(g.name, weight, g.channel_axis, weight_digest(weight), tuple(g.sites), stacked)
        )
    sites = {g.name: g.sites for g in problem.groups}

    def recapture(up: str, weight: np.ndarray, down: str) -> np.ndarray | None:
        # The downstream anchors' inputs on the same windows, in the same row order as `GroupData.rows`.
        again = anchor_rows(problem, capture, sites=sites[down], weights={up: weight})
        parts = [again[s] for s in sites[down]]
        return None if any(r is None for r in parts) else np.concatenate(parts)

    return ModCap(
        groups,
        site_edges(problem.fused),
        k=k,
        capacity=capacity,
        activations=source,
        recapture=None if rollout is None else recapture,
        **kw,
    )
