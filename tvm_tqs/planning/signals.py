"""Sensitivity signals other tools plan with, as error tables the same knapsack solves: the baselines TQS
is measured against (benchmarks/budget_sweep.py), and a calibration-free fallback for models without a
rollout.

`sqnr_table` is AIMET AMP's signal: each site quantized alone (weights by the chosen quantizer, int8
activations with the kernels' per-row absmax scale), its output's noise-to-signal ratio
||X_q W_q^T - X W^T||^2 / ||X W^T||^2 on the given windows' first model call; a group's error is the sum over
the sites that read its weight. No rollout, no interaction between sites.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..error_model import dequantized
from ..precision import PRECISIONS
from ..quantizers import rtn
from .activations import anchor_rows
from .problem import ErrorTable


def _int8_rows(x: np.ndarray) -> np.ndarray:
    """Per-row absmax int8 quantize-dequantize (the kernels' dynamic activation quantization)."""
    scale = np.abs(x).max(axis=1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    return np.clip(np.rint(x / scale), -127, 127) * scale


def _as_nk(view: np.ndarray, op: str) -> np.ndarray:
    """The quantizer's view of a weight as ``[N, K]`` in the rows' reduction order."""
    return view.T if op == "dense" else view.reshape(view.shape[0], -1)


def sqnr_table(problem, contexts: np.ndarray, quantizer: Callable = rtn) -> ErrorTable:
    """{group: {precision: sum over its sites of the output noise-to-signal ratio}} (see the module docstring);
    a site whose input cannot be read as GEMM rows makes its group's quantized options infinite (kept fp32)."""
    rows = anchor_rows(problem, contexts)
    out: ErrorTable = {}
    for g in problem.groups:
        op = problem.analysis.matches[g.sites[0]].op
        w = _as_nk(np.asarray(g.weight, np.float64), op)
        out[g.name] = {}
        for p in g.options:
            if p == "fp32":
                out[g.name][p] = 0.0
                continue
            if any(rows[s] is None for s in g.sites):
                out[g.name][p] = float("inf")
                continue
            wq = _as_nk(dequantized(g.weight, g.channel_axis, p, quantizer, problem.group_size), op)
            nsr = 0.0
            for s in g.sites:
                x = rows[s]
                y = x @ w.T
                xq = _int8_rows(x) if PRECISIONS[p].act_bits == 8 else x
                signal = float(np.sum(y**2))
                nsr += float(np.sum((xq @ wq.T.astype(np.float64) - y) ** 2)) / signal if signal > 0 else 0.0
            out[g.name][p] = nsr
    return out
