"""Export the pretrained Fracast-0 forecaster that ships inside the `fracast` wheel to ONNX.

Fracast-0 (85,001 parameters, Apache-2.0) is a zero-shot time-series foundation model whose FP32
checkpoint is packaged in the PyPI wheel itself (`fracast/weights/model.safetensors`); nothing is
downloaded at run time. We did not train it. This script

1. loads that checkpoint with the package's own loader (`fracast.inference.load_fracast`, fp32),
2. wraps it as one pure forward `window [B, 2048] (raw scale) -> quantiles [B, 48, 9] (raw scale,
   quantiles 0.1..0.9)`, folding in the package's per-window min/max scaling and both periodogram
   period detectors (which the package runs on `torch.fft.rfft`; here the rfft is emitted as the
   standard ONNX `DFT` op, opset 17),
3. exports it with the legacy TorchScript exporter (dynamo=False, opset 17, dynamic batch) to
   `fracast0.onnx`, folds the exporter's constant integer `Pad` arithmetic, writes the rollout contract
   `fracast0.rollout.json` (also in the ONNX metadata `tvm_tqs.rollout`), and
4. checks it (onnxruntime vs the wrapper, the wrapper vs the package's own `FracastModel.forecast`,
   tvm_tqs import + llvm build vs onnxruntime when TVM is importable, ETTh1 'OT' test-split MSE vs
   seasonal naive) and writes the model card `fracast0.md` with those numbers.

Needs `pip install fracast==0.1.0 safetensors` (its `huggingface_hub` dependency is only imported
for hub loading, which is not used here: `pip install --no-deps fracast==0.1.0` is enough), torch,
onnx, onnxruntime, numpy, pandas. ETTh1 is read from `$TVM_TQS_DATA` (default
`<repo>/../shared/data`), never copied into the repo.

    python tests/corpus/pretrained/build.py            # export + checks + card (~7 min on 2 cores)
    python tests/corpus/pretrained/build.py --window-stride 48   # same, 60 test windows (~2 min)
    python tests/corpus/pretrained/build.py --no-eval  # export + contract only (no ETTh1 needed)
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import importlib.metadata
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
NAME = "fracast0"
PACKAGE, VERSION = "fracast", "0.1.0"
WEIGHT_FILE = "fracast/weights/model.safetensors"
OPSET = 17
MAX_BYTES = 20 * 1024 * 1024
MEDIAN = 4  # quantiles 0.1 .. 0.9: index 4 is 0.5

# ETTh1 split (hourly, the usual 12/4/4 months): test rows [11520, 14400).
TEST_START, TEST_END, TRAIN_END = 11520, 14400, 8640
SEASON = 24


# --------------------------------------------------------------------------------------------------
# the forward wrapper


class _RMSNorm(nn.Module):
    """`nn.RMSNorm` (eps=None -> finfo(float32).eps) written with ops the legacy exporter knows."""

    def __init__(self, src: nn.RMSNorm):
        super().__init__()
        if src.eps is not None or tuple(src.normalized_shape) != (src.weight.shape[0],):
            raise ValueError(f"unexpected RMSNorm config: eps={src.eps}, shape={src.normalized_shape}")
        self.weight = src.weight
        self.eps = float(torch.finfo(torch.float32).eps)

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


class _SwiGLU(nn.Module):
    """The package's `SwiGLU` with `chunk(2, -1)` as two static slices.

    The legacy exporter writes `chunk` as Shape/Gather/Div/Slice arithmetic on the runtime shape, which
    TVM 0.27's Relax importer cannot resolve to static shapes; the slices are the same computation.
    """

    def __init__(self, src: nn.Module):
        super().__init__()
        self.up, self.down = src.up, src.down
        self.hidden = src.down.in_features

    def forward(self, x):
        u = self.up(x)
        return self.down(F.silu(u[..., : self.hidden]) * u[..., self.hidden :])


def _swap_modules(module: nn.Module) -> collections.Counter:
    """Replace every `nn.RMSNorm` and package `SwiGLU` below `module` by its exportable twin."""
    from fracast._core.self_similar_block import SwiGLU

    n = collections.Counter()
    for name, child in list(module.named_children()):
        if isinstance(child, nn.RMSNorm):
            setattr(module, name, _RMSNorm(child))
            n["RMSNorm"] += 1
        elif isinstance(child, SwiGLU):
            setattr(module, name, _SwiGLU(child))
            n["SwiGLU"] += 1
        else:
            n += _swap_modules(child)
    return n


class _RealDFT(torch.autograd.Function):
    """One-sided DFT of a real signal `[B, N] -> [B, N//2 + 1, 2]` (re, im); ONNX `DFT` when exported."""

    @staticmethod
    def forward(ctx, x):
        return torch.view_as_real(torch.fft.rfft(x, dim=-1))

    @staticmethod
    def symbolic(g, x):
        x3 = g.op("Unsqueeze", x, g.op("Constant", value_t=torch.tensor([-1], dtype=torch.int64)))
        return g.op("DFT", x3, axis_i=1, onesided_i=1, inverse_i=0)


class FracastForecaster(nn.Module):
    """Fracast-0 as `window [B, W] -> quantiles [B, H, Q]`, raw scale, fully observed windows.

    Mirrors `FracastModel._predict_rows` + `FracastCore.forward` + `GatherQuantileHead.forward_horizon`
    for a window without missing values (mask and coverage all ones; the package's NaN handling is then
    the identity). The two period detectors of the package (encoder phase features and head seasonal
    fill) see the same normalised context, so the periods are computed once.
    """

    def __init__(self, core: nn.Module, head: nn.Module, quantiles):
        super().__init__()
        from fracast._core.periodic.official_encoding import _recency_encoding

        self.core, self.head = core, head
        self.W, self.H, self.Q = int(core.W), int(head.horizon), len(quantiles)
        if core.periodic is None or core.scale is None or not core.share_stages or not core.use_recency:
            raise ValueError("this wrapper follows the Fracast-0 release config only")
        if (
            head.future_conv is None
            or head.seasonal_fill_mode != "phase_mean"
            or head.output_mode != "direct"
        ):
            raise ValueError("this wrapper follows the Fracast-0 release config only")
        per = core.periodic
        if (
            per.n_harm != 1
            or per.L != 1
            or head.period_kw
            != {
                "top_k": per.top_k,
                "min_period": per.min_period,
                "alpha": per.alpha,
            }
        ):
            raise ValueError("encoder and head period detectors differ from the release config")
        self.K, self.min_period, self.alpha = per.K, per.min_period, per.alpha
        self.n_fft = 1 << int(math.ceil(math.log2(max(2, self.W))))
        if self.n_fft != self.W:
            raise ValueError("W must be a power of two (no zero padding before the DFT)")
        self.phase_bins = int(head.phase_bins)
        # Constants of the package's forward (recency features of context and horizon positions).
        pos = torch.arange(self.W).unsqueeze(0)
        ctx_rec = _recency_encoding(pos, self.W)[0]  # [W, 5]
        # coverage channel (all ones) + recency channels: the constant tail of the input features
        self.register_buffer(
            "ctx_tail", torch.cat([torch.ones(self.W, 1), ctx_rec], dim=-1), persistent=False
        )
        fut = torch.arange(self.W, self.W + self.H).unsqueeze(0)
        self.register_buffer("fut_rec", _recency_encoding(fut, self.W)[0], persistent=False)  # [H, 5]
        self.register_buffer("ctx_pos", torch.arange(self.W, dtype=torch.float32), persistent=False)
        self.register_buffer(
            "fut_pos", torch.arange(self.W, self.W + self.H, dtype=torch.float32), persistent=False
        )
        self.register_buffer("neg_inf", torch.tensor(float("-inf")), persistent=False)
        self.register_buffer("zero", torch.tensor(0.0), persistent=False)
        self.register_buffer("zeros_h", torch.zeros(1, self.H, 1), persistent=False)
        self.register_buffer("bins", torch.arange(self.phase_bins, dtype=torch.int64), persistent=False)
        # significant_periods: bins after the DC skip are 1..n_fft/2 (n_bins of them); a peak needs
        # both neighbours, so only the interior bins [1, n_bins - 1) can be peaks, and the eligible
        # range is [k_lo, k_hi] (see fracast/_core/periodic/official_periodogram.py).
        n_bins = self.n_fft // 2
        max_period = max(2, self.W // 2)
        k_lo = max(0, (self.n_fft // max_period) - 1)
        k_hi = min(n_bins - 1, max(0, (self.n_fft // max(2, self.min_period)) - 1))
        valid = torch.zeros(n_bins, dtype=torch.bool)
        if k_hi > k_lo:
            valid[k_lo : k_hi + 1] = True
        self.register_buffer("interior_valid", valid[1:-1].clone(), persistent=False)
        n_eff = max(2, n_bins)
        self.sig_threshold = math.log(n_eff / max(min(self.alpha, 1.0), 1e-12)) / n_eff

    # -- parameter-free period detector (official_periodogram.significant_periods, no NaNs) --------
    def periods(self, v):
        x_c = v - v.mean(dim=1, keepdim=True)
        X = _RealDFT.apply(x_c)  # [B, n_fft/2 + 1, 2]
        power = X.pow(2).sum(dim=-1)[:, 1:]  # |X|^2, DC skipped: [B, n_bins]
        total = power.sum(dim=1, keepdim=True).clamp(min=1e-12)
        i_norm = power / total
        mid = i_norm[:, 1:-1]
        peak = (mid > i_norm[:, :-2]) & (mid > i_norm[:, 2:]) & self.interior_valid
        peak = peak & (mid >= self.sig_threshold)
        scored = torch.where(peak, mid, self.neg_inf)
        scores, k_top = scored.topk(k=self.K, dim=1)
        freq_bins = k_top + 2  # interior offset + DC skip
        periods = torch.round(self.n_fft / freq_bins.float())
        return torch.where(scores > self.neg_inf, periods, self.zero)  # [B, K] float

    def phase_features(self, periods):
        """official_encoding._phase_encoding with one harmonic, broadcast over the batch."""
        valid = (periods > 0).float().unsqueeze(1)  # [B, 1, K]
        p_safe = periods.clamp(min=1).unsqueeze(1)  # [B, 1, K]
        phase = 2.0 * math.pi * self.ctx_pos.view(1, -1, 1) / p_safe
        pair = torch.stack([torch.sin(phase) * valid, torch.cos(phase) * valid], dim=-1)
        return pair.reshape(-1, self.W, 2 * self.K)  # [B, W, 2K]

    def seasonal_fill(self, v, periods):
        """seasonal_fill.folded_seasonal_fill (phase_mean mode), all observed."""
        n = self.phase_bins
        primary = periods[:, :1].clamp(min=1)  # [B, 1]
        pos = self.ctx_pos.view(1, -1)
        idx = torch.clamp(((pos % primary) / primary * n).long(), max=n - 1)  # [B, W]
        one_hot = (idx.unsqueeze(-1) == self.bins).to(v.dtype)  # [B, W, n]
        counts = one_hot.sum(dim=1)  # [B, n]
        totals = torch.bmm(one_hot.transpose(1, 2), v.unsqueeze(-1)).squeeze(-1)
        global_mean = v.sum(dim=1, keepdim=True) / float(self.W)
        phase_mean = torch.where(counts > 0, totals / counts.clamp(min=1.0), global_mean)
        fut = torch.clamp((self.fut_pos.view(1, -1) % primary) / primary * n, max=n - 1).long()
        return torch.gather(phase_mean, 1, fut)  # [B, H]

    def forward(self, window):
        # FracastModel._predict_rows: per-window min/max scaling to [0, 1].
        loc = window.amin(dim=1, keepdim=True)
        span = (window.amax(dim=1, keepdim=True) - loc).clamp(min=1e-5)
        v = (window - loc) / span  # [B, W]
        # [B, 1, 1] zeros: constants get their batch axis by broadcasting (x + 0 == x), so the graph
        # needs no Shape/Expand ops for the dynamic batch. Windows are finite by contract.
        zb = (v[:, :1] * 0.0).unsqueeze(-1)
        periods = self.periods(v)
        core, head = self.core, self.head
        # FracastCore.forward: value, coverage (= 1) and recency channels -> in_proj; phase features.
        feats = torch.cat([v.unsqueeze(-1), self.ctx_tail.unsqueeze(0) + zb], dim=-1)
        x = core.in_proj(feats) + core.periodic.proj(self.phase_features(periods))
        for dil in core.dilations():
            x = core.block(core.scale(x, dil), dil)
        h = core.norm(x)  # [B, W, D]
        # GatherQuantileHead.forward_horizon.
        summary = torch.cat([h.mean(dim=1), h[:, -1]], dim=-1)  # [B, 2D]
        pe = self.fut_rec.unsqueeze(0) + zb  # [B, H, 5]
        summ = summary.unsqueeze(1) + self.zeros_h  # [B, H, 2D]
        x = head.summary_proj(torch.cat([pe, summ], dim=-1))
        x = x + head.queries.unsqueeze(0)
        for ffn, norm in zip(head.decoder_ffns, head.decoder_norms, strict=True):
            x = norm(x + ffn(x))
        for blk in head.fc_blocks:
            x = blk(x)
        x = x + head.future_conv(h, self.seasonal_fill(v, periods), pe)
        q = head.out_proj(x)  # [B, H, Q], normalised scale
        return q * span.unsqueeze(-1) + loc.unsqueeze(-1)


def load_package():
    try:
        have = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        sys.exit(f"{PACKAGE} is not installed: pip install --no-deps {PACKAGE}=={VERSION} safetensors")
    if have != VERSION:
        sys.exit(f"{PACKAGE} {have} is installed; this script is pinned to {VERSION}")
    import fracast.inference as fi

    wdir = fi._PACKAGE_WEIGHTS_DIR
    core, head = fi.load_fracast(wdir, weights="fp32")
    cfg = json.loads((wdir / "config.json").read_text())
    return core, head, cfg, wdir


def build_wrapper():
    core, head, cfg, wdir = load_package()
    n_params = sum(p.numel() for p in core.parameters()) + sum(p.numel() for p in head.parameters())
    n_swapped = _swap_modules(core) + _swap_modules(head)
    model = FracastForecaster(core, head, cfg["model"]["quantiles"]).eval()
    return model, cfg, wdir, n_params, n_swapped


# --------------------------------------------------------------------------------------------------
# contract, export, checks


def rollout(cfg) -> dict:
    m = cfg["model"]
    return {
        "version": 2,
        "window_input": "window",
        "window_layout": "BL",
        "forecast_output": "quantiles",
        "forecast_layout": "BH",
        "forecast_select": {"axis": 2, "index": MEDIAN},
        "lookback": int(m["W"]),
        "horizon": int(m["horizon"]),
        "channels": 1,
        "target_channels": [0],
        "stride": int(m["horizon"]),
        "exogenous": "hold",
        "channel_mean": None,
        "channel_std": None,
        "aux_inputs": [],
    }


def fold_integer_constants(proto) -> int:
    """Fold all-constant subgraphs that compute integers into `Constant` nodes.

    The legacy exporter turns each `F.pad(x, (left, 0))` of the package into `Pad` whose `pads` input is
    computed by ConstantOfShape/Concat/Reshape/Slice/Transpose/Cast from constants, and its constant
    folding leaves that subgraph in place; TVM 0.27's Relax ONNX importer then rejects the `Pad`
    ("Dynamic pads are not supported yet"). Only integer results are folded, so no float math changes.
    """
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = proto.graph
    known = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    nodes, folded = [], 0
    for node in graph.node:
        inputs = [i for i in node.input if i]
        if (
            len(node.output) == 1
            and all(i in known for i in inputs)
            and not any(a.type == onnx.AttributeProto.GRAPH for a in node.attribute)
        ):
            try:
                (value,) = ReferenceEvaluator(node).run(None, {i: known[i] for i in inputs})
            except Exception:  # an op the reference runtime cannot run alone: keep it
                nodes.append(node)
                continue
            value = np.asarray(value)
            known[node.output[0]] = value
            if node.op_type != "Constant" and np.issubdtype(value.dtype, np.integer):
                node = helper.make_node(
                    "Constant", [], [node.output[0]], name=node.name, value=numpy_helper.from_array(value)
                )
                folded += 1
        nodes.append(node)
    # drop nodes whose outputs nobody reads any more (the folded subgraphs' leftovers)
    while True:
        used = {i for n in nodes for i in n.input} | {o.name for o in graph.output}
        keep = [n for n in nodes if any(o in used for o in n.output)]
        if len(keep) == len(nodes):
            break
        nodes = keep
    del graph.node[:]
    graph.node.extend(nodes)
    return folded


def export(model, path: Path, contract: dict) -> bytes:
    import onnx

    x = torch.randn(2, model.W)
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(
            model,
            (x,),
            str(tmp),
            input_names=["window"],
            output_names=["quantiles"],
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
            dynamic_axes={"window": {0: "batch"}, "quantiles": {0: "batch"}},
        )
    proto = onnx.load(str(tmp))
    tmp.unlink()
    print(f"folded {fold_integer_constants(proto)} integer constant nodes")
    proto.doc_string = (
        f"Fracast-0 (pypi {PACKAGE}=={VERSION}, {WEIGHT_FILE}, Apache-2.0), exported by tvm_tqs"
    )
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = "tvm_tqs.rollout", json.dumps(contract, sort_keys=True)
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def op_counts(blob: bytes) -> dict:
    import onnx

    proto = onnx.load_from_string(blob)
    domains = {n.domain for n in proto.graph.node}
    if domains - {"", "ai.onnx"}:
        raise RuntimeError(f"non-standard op domains: {domains}")
    return dict(sorted(collections.Counter(n.op_type for n in proto.graph.node).items()))


def etth1_ot() -> np.ndarray:
    import pandas as pd

    root = Path(os.environ.get("TVM_TQS_DATA", REPO.parent / "shared" / "data"))
    return pd.read_csv(root / "ETTh1.csv")["OT"].to_numpy(np.float32)


def tvm_check(blob: bytes, windows: np.ndarray, ort_out: np.ndarray) -> dict | None:
    """Import with tvm_tqs's loader (TVM Relax + the project's converters), compile for llvm, compare."""
    try:
        import tvm
        from tvm import relax

        sys.path.insert(0, str(REPO))
        from tvm_tqs.frontend.load import load
    except Exception as err:  # noqa: BLE001 - the check is optional
        print(f"tvm check skipped: {type(err).__name__}: {err}")
        return None
    t0 = time.perf_counter()
    mod = load(blob, {"batch": len(windows)})
    vm = relax.VirtualMachine(tvm.compile(mod, tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(np.ascontiguousarray(windows)))
    out = out.numpy() if hasattr(out, "numpy") else out[0].numpy()
    return {
        "tvm": tvm.__version__,
        "batch": len(windows),
        "tvm_vs_ort_maxabs": float(np.max(np.abs(out - ort_out))),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def evaluate(model, blob: bytes, L: int, H: int, stride: int, chunk: int = 64) -> dict:
    import onnxruntime as ort
    from fracast.inference import FracastModel

    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    ot = etth1_ot()
    origins = np.arange(TEST_START, TEST_END - H + 1, stride)
    idx = origins[:, None] + np.arange(-L, 0)[None, :]
    windows, targets = ot[idx], ot[origins[:, None] + np.arange(H)[None, :]]
    t0 = time.perf_counter()
    preds = np.concatenate(
        [sess.run(None, {"window": windows[i : i + chunk]})[0] for i in range(0, len(windows), chunk)]
    )
    ort_s = time.perf_counter() - t0
    point = preds[:, :, MEDIAN]
    naive = ot[origins[:, None] - SEASON + (np.arange(H)[None, :] % SEASON)]
    mu, sd = ot[:TRAIN_END].mean(), ot[:TRAIN_END].std()

    def mse(a, b, scale=1.0):
        return float(np.mean(((a - b) / scale) ** 2))

    # onnxruntime vs the torch wrapper, and the wrapper vs the package's own API, on a subset.
    sub = windows[:: max(1, len(windows) // 48)][:48]
    with torch.no_grad():
        torch_out = model(torch.from_numpy(sub)).numpy()
    ort_out = sess.run(None, {"window": sub})[0]
    pkg = FracastModel.from_pretrained(weights="fp32")
    pkg_out = np.stack([pkg.forecast(w) for w in sub]).astype(np.float32)
    ort_b1 = np.concatenate([sess.run(None, {"window": sub[i : i + 1]})[0] for i in range(4)])
    tvm_res = tvm_check(blob, sub[:4], ort_out[:4])
    return {
        "tvm_check": tvm_res,
        "windows": int(len(windows)),
        "window_stride": int(stride),
        "origins": [int(origins[0]), int(origins[-1])],
        "mse_raw": mse(point, targets),
        "mse_naive_raw": mse(naive, targets),
        "mse_std": mse(point, targets, sd),
        "mse_naive_std": mse(naive, targets, sd),
        "mae_raw": float(np.mean(np.abs(point - targets))),
        "mae_naive_raw": float(np.mean(np.abs(naive - targets))),
        "train_mean": float(mu),
        "train_std": float(sd),
        "quantile_crossings": float(np.mean(np.diff(preds, axis=2) < 0)),
        "ort_vs_torch_maxabs": float(np.max(np.abs(ort_out - torch_out))),
        "torch_vs_package_maxabs": float(np.max(np.abs(torch_out - pkg_out))),
        "ort_vs_package_maxabs": float(np.max(np.abs(ort_out - pkg_out))),
        "ort_batch1_vs_batched_maxabs": float(np.max(np.abs(ort_b1 - ort_out[:4]))),
        "check_windows": int(len(sub)),
        "ort_seconds": round(ort_s, 1),
    }


# --------------------------------------------------------------------------------------------------
# model card


def card(cfg, wdir, n_params, blob, ops, contract, ev) -> str:
    m = cfg["model"]
    lic = (
        Path(
            importlib.metadata.distribution(PACKAGE).locate_file(
                f"{PACKAGE}-{VERSION}.dist-info/licenses/LICENSE"
            )
        )
        .read_text()
        .splitlines()
    )
    wbytes = (wdir / "model.safetensors").stat().st_size
    sha = hashlib.sha256((wdir / "model.safetensors").read_bytes()).hexdigest()
    op_table = ", ".join(f"{k} {v}" for k, v in ops.items())
    lines = [
        f"# {NAME}: Fracast-0 (pretrained, shipped in the `{PACKAGE}` wheel)",
        "",
        "Generated by `python tests/corpus/pretrained/build.py`; do not edit by hand.",
        "",
        "## Provenance",
        f"- PyPI package `{PACKAGE}=={VERSION}` (`pip install --no-deps {PACKAGE}=={VERSION} safetensors`);"
        f" weights: `{WEIGHT_FILE}` inside the wheel ({wbytes:,} bytes, sha256 `{sha}`), loaded with the"
        " package's `fracast.inference.load_fracast(..., weights='fp32')` (the package default is the"
        " `w8` fake-quantised copy, `model.int8.safetensors`; we take the FP32 one). Nothing downloaded.",
        '- Upstream: Fracast-0 by "Fracast contributors", https://github.com/ztxtech/fracast-0 (model card'
        " also on the Hugging Face hub as `ztxtech/fracast-0`). Its periodogram period detector and phase"
        " encoding are copied from TinyCast (raws-labs/tinycast, Apache-2.0, arXiv:2608.15767). Pretrained"
        " upstream on GiftEvalPretrain, LOTSA, Chronos datasets, BOOM, fev and TinyCast synthetic data; not"
        " trained by us. The LOTSA collection includes the ETT datasets, so ETTh1"
        " (test rows too) was probably seen in pretraining: treat the ETTh1 numbers as a sanity check, not a benchmark.",
        f"- Licence: Apache-2.0 (wheel metadata `License-Expression: Apache-2.0`; file"
        f' `{PACKAGE}-{VERSION}.dist-info/licenses/LICENSE`, first line: "{lic[0].strip()}",'
        f' "{lic[1].strip()}"). Redistributing this converted copy is allowed with the licence and this'
        " notice of changes: converted from PyTorch to ONNX, wrapped with the input scaling described below.",
        "",
        "## Architecture",
        f"- {n_params:,} parameters (FP32, {wbytes:,} bytes of safetensors). Attention-free, convolutional:"
        f" input projection of [value, coverage, 5 recency channels] to d={m['d_model']}, plus a linear"
        f" projection of parameter-free phase features (sin/cos of the top-{m['periodic_topk']} periods found"
        " by a normalised periodogram with a Bonferroni significance test);"
        f" one shared block (causal depthwise dilated conv k={m['kernel_size']} + pointwise Linear + RMSNorm,"
        f" SwiGLU {m['d_model']}->{int(m['d_model'] * m['ffn_mult'])} + RMSNorm) applied {m['n_stages']} times"
        f" at dilations 1..{2 ** (m['n_stages'] - 1)}, each with FiLM scale conditioning; final RMSNorm.",
        f"- Head: mean + last-token summary -> {m['horizon']} horizon queries, SwiGLU decoder, two causal"
        " horizon convs, a future-state path (phase-folded seasonal fill of the context by the primary"
        " period, appended to the last 128 encoder states, 6 more passes of a shared conv block), then"
        f" Linear -> {len(m['quantiles'])} quantiles {m['quantiles'][0]}..{m['quantiles'][-1]}.",
        "",
        "## Input/output contract (`fracast0.rollout.json`, also in the ONNX metadata `tvm_tqs.rollout`)",
        f"- Input `window` float32 [batch, {m['W']}] (layout BL, univariate, raw scale, fully observed: no"
        f" NaNs; dynamic batch). Output `quantiles` float32 [batch, {m['horizon']}, {len(m['quantiles'])}],"
        f" raw scale; the point forecast is the median, `forecast_select` axis 2 index {MEDIAN}.",
        f"- Lookback {contract['lookback']}, horizon {contract['horizon']}, stride {contract['stride']}.",
        "- Normalisation is inside the graph: each window is min/max scaled to [0, 1] (`loc = min`,"
        " `span = max(max - min, 1e-5)`, exactly as `FracastModel._predict_rows`), the forecast is scaled"
        " back. So `channel_mean`/`channel_std` are null: the model takes any level and spread.",
        "- The period detector is inside the graph too: an ONNX `DFT` (opset 17, one-sided, length"
        f" {m['W']}) of the mean-removed window, power spectrum, local-max and significance masks, `TopK`"
        " k=4, `Round` -> periods. Both the encoder's phase features and the head's seasonal fill use it"
        " (the package runs it twice on the same input; the wrapper once).",
        "- Differences from the package API: the package accepts NaNs / short series (masking, left"
        " zero-padding); this graph assumes a full, finite window. Forecasts longer than 48 steps: the"
        " package re-feeds the median and renormalises per block; a rollout with stride 48 does the same.",
        "",
        "## ONNX",
        f"- Legacy TorchScript exporter (dynamo=False), opset {OPSET}, torch {torch.__version__}, dynamic"
        f" batch; {len(blob):,} bytes; standard domain only. Export-time rewrites, all the same computation:"
        " `nn.RMSNorm` (no legacy symbolic at opset 17) as x * rsqrt(mean(x^2) + eps) * w with the same eps"
        " (float32 machine eps); the package's `SwiGLU` `chunk(2, -1)` as two static slices; `torch.fft.rfft`"
        " as the ONNX `DFT` op; constants get their batch axis by broadcasting against a [B, 1, 1] zero tensor"
        " instead of `expand` (so no Shape/Expand ops); after export, all-constant integer subgraphs (the"
        " legacy `F.pad` -> `Pad` `pads` arithmetic: ConstantOfShape/Concat/Reshape/Slice/Transpose/Cast) are"
        " folded into `Constant`s. Without these rewrites TVM 0.27's Relax ONNX importer stops at the first"
        ' `Pad` ("Dynamic pads are not supported yet", then "emit_te now only supports Tensor that has'
        ' ShapeExpr shape" from the runtime-shape slices of `chunk` and `expand`).',
        f"- Op types ({sum(ops.values())} nodes): {op_table}.",
        "- Possibly unusual for a TVM importer: `DFT` (length 2048, one-sided; tvm_tqs converts it to a"
        " matmul against a constant DFT matrix), `TopK` (k=4), `Round`, `Where` with -inf, `GatherElements`,"
        " `Equal`/`Greater`/`GreaterOrEqual`/`And` masks, int64 `Cast`/`Floor`/`Clip`, `Pad` (18, causal"
        " left pads up to 1024), `Identity` (51: shared weights reused across the 10 + 6 dilation stages)."
        " The periods are data-dependent integers that feed Sin/Cos features and a phase-folding histogram"
        " (BatchMatMul of a one-hot built with `Equal`); a quantiser must keep that path (DFT, power"
        " spectrum, TopK, Round, Div/Floor) in float or the detected periods change.",
        tvm_line(ev),
        "",
        "## Check (ETTh1 'OT', onnxruntime on this file)",
        f"- {ev['windows']} windows of the ETTh1 test split (forecast origins {ev['origins'][0]}..{ev['origins'][1]},"
        f" stride {ev['window_stride']}, rows [11520, 14400) of `ETTh1.csv`), each with the {m['W']} rows"
        " before it as context (raw OT values), one call each, 48 steps, the median.",
        f"- MSE raw scale: Fracast-0 {ev['mse_raw']:.4f} vs seasonal naive (period {SEASON}) {ev['mse_naive_raw']:.4f};"
        f" MAE {ev['mae_raw']:.4f} vs {ev['mae_naive_raw']:.4f}.",
        f"- MSE standardised by the train rows [0, 8640) (mean {ev['train_mean']:.4f}, std {ev['train_std']:.4f}):"
        f" {ev['mse_std']:.4f} vs seasonal naive {ev['mse_naive_std']:.4f}.",
        f"- Fraction of adjacent quantile pairs that cross: {ev['quantile_crossings']:.4f}.",
        f"- onnxruntime vs torch wrapper, max abs diff over {ev['check_windows']} windows (raw scale, values"
        f" ~0-30): {ev['ort_vs_torch_maxabs']:.3g}; torch wrapper vs the package's own"
        f" `FracastModel.forecast` (fp32): {ev['torch_vs_package_maxabs']:.3g}; onnxruntime vs package:"
        f" {ev['ort_vs_package_maxabs']:.3g}; onnxruntime batch 1 vs batched: {ev['ort_batch1_vs_batched_maxabs']:.3g}.",
        f"- onnxruntime time for all windows on this machine's CPU: {ev['ort_seconds']} s.",
        "",
    ]
    return "\n".join(lines)


def tvm_line(ev) -> str:
    t = ev.get("tvm_check")
    if not t:
        return "- TVM: not checked in this build (tvm / tvm_tqs not importable)."
    return (
        f"- TVM {t['tvm']}: `tvm_tqs.frontend.load.load` (batch {t['batch']}) + `tvm.compile` for llvm"
        f" imports and runs it; max abs diff vs onnxruntime {t['tvm_vs_ort_maxabs']:.3g} on {t['batch']}"
        " ETTh1 windows (raw scale)."
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-eval", action="store_true", help="export + contract only (no ETTh1, no card)")
    ap.add_argument("--window-stride", type=int, default=1, help="stride between evaluated test windows")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model, cfg, wdir, n_params, n_swapped = build_wrapper()
    contract = rollout(cfg)
    args.out.mkdir(parents=True, exist_ok=True)
    blob = export(model, args.out / f"{NAME}.onnx", contract)
    ops = op_counts(blob)
    print(f"{NAME}: {n_params:,} params, swapped {dict(n_swapped)}, onnx {len(blob):,} bytes")
    print("ops:", ops)
    if len(blob) > MAX_BYTES:
        sys.exit(f"{NAME}.onnx is {len(blob):,} bytes (> {MAX_BYTES:,}): not written")
    (args.out / f"{NAME}.onnx").write_bytes(blob)
    (args.out / f"{NAME}.rollout.json").write_text(json.dumps(contract, indent=2) + "\n")
    if args.no_eval:
        return
    ev = evaluate(model, blob, contract["lookback"], contract["horizon"], args.window_stride)
    print(json.dumps(ev, indent=2))
    (args.out / f"{NAME}.md").write_text(card(cfg, wdir, n_params, blob, ops, contract, ev))


if __name__ == "__main__":
    main()
