"""Exporter-styles corpus: small forecasters exported to ONNX the way users in the wild export them.

    python tests/corpus/build.py                      # rebuild every file, its contract and README.md
    python tests/corpus/build.py --only gru_fixed1_op13
    python tests/corpus/build.py --verify             # rebuild into a temp dir, compare sha256 with the committed files

Each model family is trained briefly here (a few hundred Adam steps, seconds) on ETTh1, read in place from
``$TVM_TQS_DATA`` (default ``<repo>/../shared/data``): train rows [0, 8640), z-scored per channel with the
train rows' mean and std (ddof=0); lookback 96, horizon 24. One trained model is exported in several styles
(legacy TorchScript vs dynamo exporter, fixed batch 1 vs dynamic batch, opsets 13-18, external data,
channels-first / univariate layouts, auxiliary mask and time-feature inputs, a quantile head). The models are
written the way users write them (negative indices, shape arithmetic on ``x.shape[0]``, stock
``nn.GRU`` / ``nn.TransformerEncoder``), not export-friendly the way the zoo's are.

Next to every ``<name>.onnx`` lies ``<name>.rollout.json``, its rollout contract (version 2). Only
``gru_fixed1_op13``, ``gru_dynamic_op13`` and ``mlp_legacy_dynamic_op14`` also carry it in the ONNX metadata
(key ``tvm_tqs.rollout``, JSON with sorted keys), so both ways of declaring a contract are covered.

Self-contained: numpy, pandas, torch, onnx (onnxruntime for the checks). Deterministic: seeds, one thread,
``torch.use_deterministic_algorithms(True)``, exporter debug metadata and doc strings stripped, so a rebuild
on the same torch build and CPU family gives byte-identical files.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from functools import cache  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TORCH_VERSION = "2.13.0"
L, H = 96, 24
TRAIN_END, TEST_START, TEST_END = 8640, 11520 - L, 14400
CHANNELS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
OT = CHANNELS.index("OT")
QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MISSING = 0.1  # fraction of masked-out entries when training the masked model
METADATA_KEY = "tvm_tqs.rollout"


# ---------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------
def data_dir() -> Path:
    return Path(os.environ.get("TVM_TQS_DATA", str(REPO.parent / "shared" / "data")))


@cache
def etth1() -> tuple[np.ndarray, np.ndarray]:
    """(z [rows, 7] float32 z-scored with train stats, hour [rows] int64)."""
    import pandas as pd

    path = data_dir() / "ETTh1.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: set TVM_TQS_DATA to the folder holding ETTh1.csv")
    df = pd.read_csv(path)
    raw = df[list(CHANNELS)].to_numpy(dtype=np.float64)
    mean, std = raw[:TRAIN_END].mean(axis=0), raw[:TRAIN_END].std(axis=0)
    z = ((raw - mean) / std).astype(np.float32)
    hour = pd.to_datetime(df["date"]).dt.hour.to_numpy().astype(np.int64)
    return z, hour


def windows(starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x [N, L, 7], y [N, H, 7] float32 and hour [N, L] int64 for windows starting at `starts`."""
    z, hour = etth1()
    idx = np.asarray(starts)[:, None] + np.arange(L + H)[None, :]
    w = z[idx]
    return (
        np.ascontiguousarray(w[:, :L]),
        np.ascontiguousarray(w[:, L:]),
        np.ascontiguousarray(hour[idx[:, :L]]),
    )


def eval_windows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every stride-1 window of the test split, rows [11520 - L, 14400)."""
    return windows(np.arange(TEST_START, TEST_END - L - H + 1))


# ---------------------------------------------------------------------------------------------------
# models (written the way users write them)
# ---------------------------------------------------------------------------------------------------
class GRUForecaster(nn.Module):
    """nn.GRU(7 -> 32, batch_first) over the mean-centred window, Linear(32 -> 24*7) on the last step."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.gru = nn.GRU(len(CHANNELS), hidden, num_layers=1, batch_first=True)
        self.head = nn.Linear(hidden, H * len(CHANNELS))

    def forward(self, window):
        mu = window.mean(dim=1, keepdim=True)
        out, _ = self.gru(window - mu)
        y = self.head(out[:, -1, :]).reshape(window.shape[0], H, len(CHANNELS))
        return y + mu


class MLPForecaster(nn.Module):
    """Channel-independent MLP over time: Linear(96 -> 64) -> ReLU -> Linear(64 -> 24), per channel."""

    def __init__(self, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(L, hidden), nn.ReLU(), nn.Linear(hidden, H))

    def forward(self, window):
        mu = window.mean(dim=1, keepdim=True)
        y = self.net((window - mu).permute(0, 2, 1))  # [B, C, H]
        return y.permute(0, 2, 1) + mu


class ChannelsFirstConv(nn.Module):
    """x [B, 7, 96] -> residual Conv1d(7 -> 16, k=5) -> ReLU -> Conv1d(16 -> 7, k=1), Linear(96 -> 24) over time."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(len(CHANNELS), width, 5, padding=2), nn.ReLU(), nn.Conv1d(width, len(CHANNELS), 1)
        )
        self.time = nn.Linear(L, H)

    def forward(self, x):
        mu = x.mean(dim=-1, keepdim=True)
        xc = x - mu
        return self.time(xc + self.conv(xc)) + mu  # [B, 7, 24]


class UnivariateMLP(nn.Module):
    """x [B, 96] -> Linear(96 -> 32) -> ReLU -> Linear(32 -> 24) + skip Linear(96 -> 24) -> y [B, 24]."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(L, hidden), nn.ReLU(), nn.Linear(hidden, H))
        self.skip = nn.Linear(L, H)

    def forward(self, x):
        mu = x.mean(dim=-1, keepdim=True)
        xc = x - mu
        return self.net(xc) + self.skip(xc) + mu


class MaskedQuantileMLP(nn.Module):
    """values/valid [B, 1, 96] (channels-first, bool mask) -> q [B, 24, 9] quantiles of OT.

    Masked level (mean over observed steps), values * valid and the mask as a second feature row,
    flattened, Linear(192 -> 32) -> ReLU -> Linear(32 -> 24*9)."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * L, hidden), nn.ReLU(), nn.Linear(hidden, H * len(QUANTILES)))

    def forward(self, values, valid):
        m = valid.float()
        level = (values * m).sum(dim=-1, keepdim=True) / m.sum(dim=-1, keepdim=True).clamp(min=1.0)
        feat = torch.cat([(values - level) * m, m], dim=1)  # [B, 2, L]
        # reshape(B, ...), not view(-1, ...): with -1 the legacy exporter declares q as
        # [batch, "Addq_dim_1", "Addq_dim_2"] instead of [batch, 24, 9]
        q = self.net(feat.flatten(1)).reshape(values.shape[0], H, len(QUANTILES))
        return q + level  # level [B, 1, 1] broadcasts over (H, Q)


class TimeFeatureLinear(nn.Module):
    """x [B, 96, 7] + hour [B, 96] int64: Linear(96 -> 24) over time per channel (shared), plus
    nn.Embedding(24, 4) of the forecast steps' hours (last hour + 1..24, mod 24) -> Linear(4 -> 7)."""

    def __init__(self):
        super().__init__()
        self.time = nn.Linear(L, H)
        self.hour_emb = nn.Embedding(24, 4)
        self.hour_out = nn.Linear(4, len(CHANNELS))
        self.register_buffer("steps", torch.arange(1, H + 1), persistent=False)

    def forward(self, x, hour):
        mu = x.mean(dim=1, keepdim=True)
        y = self.time((x - mu).transpose(1, 2)).transpose(1, 2)  # [B, H, C]
        future = (hour[:, -1:] + self.steps) % 24  # [B, H]
        return y + self.hour_out(self.hour_emb(future)) + mu


class PatchTSTEncoder(nn.Module):
    """PatchTST-style, channel-independent: per-channel patches 16/stride 16 (6 patches) via unfold,
    Linear(16 -> 16) embedding + learned positions, nn.TransformerEncoder (1 layer, d_model 16, 2 heads,
    FFN 32, batch_first, no dropout), flatten Linear(6*16 -> 24)."""

    def __init__(self, d_model: int = 16, patch: int = 16):
        super().__init__()
        self.patch, self.n_patches = patch, L // patch
        self.embed = nn.Linear(patch, d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(self.n_patches, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model=d_model, nhead=2, dim_feedforward=32, batch_first=True, dropout=0.0
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=1)
        self.head = nn.Linear(self.n_patches * d_model, H)

    def forward(self, window):
        B, _, C = window.shape
        mu = window.mean(dim=1, keepdim=True)
        x = (window - mu).permute(0, 2, 1)  # [B, C, L]
        # unfold(2, ...), not unfold(-1, ...): the legacy exporter's unfold symbolic unsqueezes and
        # concatenates at the (negative) dimension itself, which silently yields [B, C, 16, 6]
        p = x.unfold(2, self.patch, self.patch)  # [B, C, 6, 16]
        p = p.reshape(B * C, self.n_patches, self.patch)
        z = self.encoder(self.embed(p) + self.pos)  # [B*C, 6, 16]
        y = self.head(z.reshape(B * C, -1)).reshape(B, C, H)
        return y.permute(0, 2, 1) + mu


# ---------------------------------------------------------------------------------------------------
# families: architecture, how windows become inputs, loss, contract
# ---------------------------------------------------------------------------------------------------
def _blc(x, hour, rng=None):
    return (x,)


def _bcl(x, hour, rng=None):
    return (np.ascontiguousarray(x.transpose(0, 2, 1)),)


def _bl_ot(x, hour, rng=None):
    return (np.ascontiguousarray(x[:, :, OT]),)


def _masked(x, hour, rng=None):
    values = np.ascontiguousarray(x[:, None, :, OT])  # [N, 1, L]
    if rng is None:
        return values, np.ones(values.shape, dtype=bool)
    valid = rng.random(values.shape) >= MISSING
    garbage = rng.standard_normal(values.shape).astype(np.float32) * 3.0  # masked entries hold junk
    return np.where(valid, values, garbage).astype(np.float32), valid


def _with_hour(x, hour, rng=None):
    return x, hour


def _all(y):
    return y


def _ot(y):
    return np.ascontiguousarray(y[:, :, OT])


def _contract(win, wl, out, fl, channels, select=None, aux=()) -> dict:
    return {
        "version": 2,
        "window_input": win,
        "window_layout": wl,
        "forecast_output": out,
        "forecast_layout": fl,
        "forecast_select": select,
        "lookback": L,
        "horizon": H,
        "channels": channels,
        "target_channels": list(range(channels)),
        "stride": H,
        "exogenous": "hold",
        "channel_mean": [0.0] * channels,
        "channel_std": [1.0] * channels,
        "aux_inputs": list(aux),
    }


@dataclass(frozen=True)
class Family:
    """One trained model (exported by one or more variants)."""

    name: str
    make: Callable[[], nn.Module]
    input_names: tuple[str, ...]
    output_name: str
    inputs: Callable  # (x [N,L,7], hour [N,L], rng|None) -> tuple of numpy model inputs
    target: Callable  # y [N,H,7] -> what the point forecast is compared with
    contract: dict
    style: str
    seed: int
    steps: int = 300
    lr: float = 3e-3
    batch: int = 64
    loss: str = "mse"  # or "pinball" (quantile head, median at QUANTILES.index(0.5))

    def point(self, raw: np.ndarray) -> np.ndarray:
        """The point forecast of a raw output, in the layout of `target`."""
        sel = self.contract["forecast_select"]
        return raw if sel is None else np.take(raw, sel["index"], axis=sel["axis"])


FAMILIES = {
    f.name: f
    for f in [
        Family(
            "gru", GRUForecaster, ("window",), "forecast", _blc, _all,
            _contract("window", "BLC", "forecast", "BHC", 7),
            "nn.GRU(7->32, batch_first, 1 layer) + Linear(32->168) on out[:, -1]; mean-centred",
            seed=1, steps=250,
        ),
        Family(
            "mlp", MLPForecaster, ("window",), "forecast", _blc, _all,
            _contract("window", "BLC", "forecast", "BHC", 7),
            "channel-independent MLP over time, Linear(96->64)->ReLU->Linear(64->24); mean-centred",
            seed=2,
        ),
        Family(
            "channels_first", ChannelsFirstConv, ("x",), "y", _bcl, lambda y: np.ascontiguousarray(y.transpose(0, 2, 1)),
            _contract("x", "BCL", "y", "BCH", 7),
            "channels-first: residual Conv1d(7->16,k5)->ReLU->Conv1d(16->7) + Linear(96->24) over time",
            seed=3,
        ),
        Family(
            "univariate", UnivariateMLP, ("x",), "y", _bl_ot, _ot,
            _contract("x", "BL", "y", "BH", 1),
            "univariate OT: MLP(96->32->24) + linear skip; mean-centred",
            seed=4,
        ),
        Family(
            "masked_quantile", MaskedQuantileMLP, ("values", "valid"), "q", _masked, _ot,
            _contract(
                "values", "BCL", "q", "BH", 1, select={"axis": 2, "index": QUANTILES.index(0.5)},
                aux=[{"name": "valid", "policy": "observed_mask", "time_axis": 2, "value": 1}],
            ),
            "univariate OT, channels-first, bool observed mask (values*valid + mask row), "
            "9-quantile head (pinball loss, 10% missing in training)",
            seed=5, steps=400, loss="pinball",
        ),
        Family(
            "time_feature", TimeFeatureLinear, ("x", "hour"), "forecast", _with_hour, _all,
            _contract(
                "x", "BLC", "forecast", "BHC", 7,
                aux=[{"name": "hour", "policy": "time", "time_axis": 1, "step": 1, "period": 24, "start": 0}],
            ),
            "Linear(96->24) over time + nn.Embedding(24,4) of the forecast hours ((hour[:, -1:] + 1..24) % 24)",
            seed=6,
        ),
        Family(
            "patchtst", PatchTSTEncoder, ("window",), "forecast", _blc, _all,
            _contract("window", "BLC", "forecast", "BHC", 7),
            "PatchTST-style: unfold patches 16/16, Linear embed + positions, nn.TransformerEncoder "
            "(1 layer, d16, 2 heads, FFN 32), flatten Linear(96->24)",
            seed=7, steps=250,
        ),
    ]
}  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------
def setup_torch() -> None:
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    torch.use_deterministic_algorithms(True)


def pinball(q: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean pinball loss of quantile forecasts q [B, H, Q] for targets y [B, H]."""
    tau = torch.tensor(QUANTILES, dtype=q.dtype)
    err = y.unsqueeze(-1) - q
    return torch.maximum(tau * err, (tau - 1) * err).mean()


def to_torch(arrays) -> list[torch.Tensor]:
    return [torch.from_numpy(a) for a in arrays]


@cache
def trained(family_name: str) -> nn.Module:
    """The family's model after `steps` Adam steps on random train windows (deterministic)."""
    fam = FAMILIES[family_name]
    setup_torch()
    torch.manual_seed(fam.seed)
    model = fam.make()
    opt = torch.optim.Adam(model.parameters(), lr=fam.lr)
    gen = torch.Generator().manual_seed(fam.seed)
    rng = np.random.default_rng(fam.seed)
    model.train()
    for _ in range(fam.steps):
        starts = torch.randint(0, TRAIN_END - L - H + 1, (fam.batch,), generator=gen).numpy()
        x, y, hour = windows(starts)
        out = model(*to_torch(fam.inputs(x, hour, rng)))
        target = torch.from_numpy(fam.target(y))
        loss = pinball(out, target) if fam.loss == "pinball" else nn.functional.mse_loss(out, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    print(f"  trained {family_name}: {fam.steps} steps, last batch loss {loss.item():.4f}", flush=True)
    return model


# ---------------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    name: str
    family: str
    exporter: str  # "legacy" (dynamo=False) or "dynamo"
    opset: int
    dynamic: bool  # dynamic batch axis "batch"; False = batch 1 baked in
    metadata: bool = False  # also attach the contract as ONNX metadata "tvm_tqs.rollout"
    external: bool = False  # weights in <name>.onnx.data (onnx external data, one file)
    note: str = ""


VARIANTS = {
    v.name: v
    for v in [
        Variant("gru_fixed1_op13", "gru", "legacy", 13, False, metadata=True, note="no dynamic_axes: batch 1 in Reshape constants"),
        Variant("gru_dynamic_op13", "gru", "legacy", 13, True, metadata=True, note="same weights as gru_fixed1_op13"),
        Variant("mlp_legacy_dynamic_op14", "mlp", "legacy", 14, True, metadata=True),
        Variant("mlp_dynamo_dynamic_op18", "mlp", "dynamo", 18, True, note="dynamic_shapes Dim('batch')"),
        Variant("mlp_dynamo_fixed1_op18", "mlp", "dynamo", 18, False),
        Variant("mlp_external_data", "mlp", "legacy", 16, True, external=True, note="weights in mlp_external_data.onnx.data"),
        Variant("channels_first_op15", "channels_first", "legacy", 15, True),
        Variant("univariate_op16", "univariate", "legacy", 16, True),
        Variant("masked_quantile_cf", "masked_quantile", "legacy", 17, True),
        Variant("time_feature_op17", "time_feature", "legacy", 17, True, note="int64 hour input"),
        Variant("patchtst_encoder_dynamic", "patchtst", "legacy", 17, True, note="MHA runs sequence-first inside"),
        Variant("patchtst_encoder_fixed1", "patchtst", "legacy", 17, False, note="same weights as the dynamic one"),
    ]
}  # fmt: skip


def example_inputs(fam: Family, batch: int) -> tuple[torch.Tensor, ...]:
    x, _, hour = windows(np.arange(batch) * 100)
    return tuple(to_torch(fam.inputs(x, hour, None)))


def export(model: nn.Module, fam: Family, v: Variant) -> onnx.ModelProto:
    args = example_inputs(fam, 2 if v.dynamic else 1)
    names = [*fam.input_names, fam.output_name]
    # no torch.no_grad(): under no_grad an eval() nn.TransformerEncoderLayer takes its fused fast path
    # (aten::_transformer_encoder_layer_fwd), which the legacy exporter cannot export
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if v.exporter == "dynamo":
            dyn = {n: {0: torch.export.Dim("batch")} for n in fam.input_names} if v.dynamic else None
            prog = torch.onnx.export(
                model,
                args,
                dynamo=True,
                opset_version=v.opset,
                input_names=list(fam.input_names),
                output_names=[fam.output_name],
                dynamic_shapes=dyn,
                verbose=False,
            )
            return prog.model_proto
        buf = io.BytesIO()
        torch.onnx.export(
            model,
            args,
            buf,
            dynamo=False,
            opset_version=v.opset,
            input_names=list(fam.input_names),
            output_names=[fam.output_name],
            dynamic_axes={n: {0: "batch"} for n in names} if v.dynamic else None,
        )
        return onnx.load_from_string(buf.getvalue())


def clean(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop exporter debug metadata (stack traces with absolute paths, fx node dumps) and doc strings."""
    proto.ClearField("doc_string")
    proto.graph.ClearField("doc_string")
    del proto.metadata_props[:]
    graphs = [proto.graph] + [a.g for n in proto.graph.node for a in n.attribute if a.HasField("g")]
    for g in graphs:
        for item in [*g.node, *g.value_info, *g.input, *g.output, *g.initializer]:
            del item.metadata_props[:]
            item.ClearField("doc_string")
    for fn in proto.functions:
        fn.ClearField("doc_string")
        del fn.metadata_props[:]
        for n in fn.node:
            del n.metadata_props[:]
            n.ClearField("doc_string")
    return proto


def contract_text(fam: Family) -> str:
    return json.dumps(fam.contract, indent=2) + "\n"


def save(proto: onnx.ModelProto, v: Variant, fam: Family, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    if v.metadata:
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(fam.contract, sort_keys=True)
    onnx.checker.check_model(proto)
    path = out_dir / f"{v.name}.onnx"
    files = [path]
    if v.external:
        data = out_dir / f"{v.name}.onnx.data"
        data.unlink(missing_ok=True)  # onnx appends to an existing data file
        onnx.save(
            proto,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data.name,
            size_threshold=0,
        )
        data.chmod(0o644)  # onnx creates it owner-only
        files.append(data)
    else:
        path.write_bytes(proto.SerializeToString())
    contract = out_dir / f"{v.name}.rollout.json"
    contract.write_text(contract_text(fam))
    return [*files, contract]


# ---------------------------------------------------------------------------------------------------
# checks and README
# ---------------------------------------------------------------------------------------------------
def session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_onnx(
    sess, fam: Family, inputs: tuple[np.ndarray, ...], dynamic: bool, batch: int = 512
) -> np.ndarray:
    step = batch if dynamic else 1
    outs = [
        sess.run(
            [fam.output_name], {n: a[i : i + step] for n, a in zip(fam.input_names, inputs, strict=True)}
        )[0]
        for i in range(0, len(inputs[0]), step)
    ]
    return np.concatenate(outs, axis=0)


def parity(path: Path, v: Variant) -> float:
    """Max |onnxruntime - torch| over 32 test windows (random masks for the masked model)."""
    fam = FAMILIES[v.family]
    x, _, hour = eval_windows()
    sel = np.arange(0, len(x), len(x) // 32)[:32]
    inputs = fam.inputs(x[sel], hour[sel], np.random.default_rng(0) if fam.loss == "pinball" else None)
    with torch.no_grad():
        ref = trained(v.family)(*to_torch(inputs)).numpy()
    return float(np.abs(run_onnx(session(path), fam, inputs, v.dynamic) - ref).max())


def onnx_test_mse(path: Path, v: Variant) -> float:
    """MSE of one call (the point forecast) over every test window, from the ONNX file with onnxruntime."""
    fam = FAMILIES[v.family]
    x, y, hour = eval_windows()
    pred = fam.point(run_onnx(session(path), fam, fam.inputs(x, hour, None), v.dynamic))
    return float(((pred.astype(np.float64) - fam.target(y)) ** 2).mean())


def describe(proto: onnx.ModelProto) -> str:
    init = {t.name for t in proto.graph.initializer}

    def sig(vi):
        t = vi.type.tensor_type
        dims = ", ".join(d.dim_param or str(d.dim_value) for d in t.shape.dim)
        dtype = onnx.TensorProto.DataType.Name(t.elem_type).lower()
        return f"`{vi.name}` [{dims}] {dtype}"

    ins = ", ".join(sig(i) for i in proto.graph.input if i.name not in init)
    return f"{ins} -> {', '.join(sig(o) for o in proto.graph.output)}"


def readme_row(v: Variant, out_dir: Path) -> str:
    fam = FAMILIES[v.family]
    path = out_dir / f"{v.name}.onnx"
    proto = onnx.load(str(path), load_external_data=False)
    torch.manual_seed(0)
    params = sum(p.numel() for p in fam.make().parameters())
    size = path.stat().st_size
    size_s = f"{size:,}"
    if v.external:
        size_s += f" + {(out_dir / f'{v.name}.onnx.data').stat().st_size:,} (.data)"
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    exporter = "legacy (dynamo=False)" if v.exporter == "legacy" else "dynamo (dynamo=True)"
    style = fam.style + (f"; {v.note}" if v.note else "")
    meta = " + metadata" if v.metadata else ""
    return (
        f"| `{v.name}.onnx` | {exporter} | {opset} | {'dynamic' if v.dynamic else 'fixed 1'} | {style} "
        f"| {describe(proto)} | `{v.name}.rollout.json`{meta} | {params:,} | {size_s} | {onnx_test_mse(path, v):.4f} |"
    )


README_HEAD = """\
# Exporter-styles corpus

Small forecasters exported to ONNX by torch the way users export them in the wild: legacy TorchScript vs
dynamo exporter, batch 1 baked in vs a dynamic batch, opsets 13-18, external weights, channels-first and
univariate layouts, a bool observed-mask input, an int64 time-feature input, a quantile head, a stock
`nn.GRU` and a stock `nn.TransformerEncoder`. Each `<name>.onnx` has its rollout contract (version 2) in
`<name>.rollout.json`; the first three rows also carry it in the ONNX metadata (`tvm_tqs.rollout`).

Provenance: every model was trained here, briefly (250-400 Adam steps, seconds on one CPU thread), on ETTh1
train rows [0, 8640) z-scored with the train rows' per-channel mean/std (univariate models: column `OT`),
lookback 96, horizon 24; files are {total_kib:.0f} KiB in all (each under 150 KB). Rebuild (deterministic,
byte-identical on the same torch {torch} CPU build):

    python tests/corpus/build.py                   # every file, its contract and this README
    python tests/corpus/build.py --only NAME       # one variant (its family is retrained from its seed)
    python tests/corpus/build.py --verify          # rebuild into a temp dir and compare sha256

ETTh1 is read from `$TVM_TQS_DATA` (default `<repo>/../shared/data`), never copied here. "test MSE" is the
MSE of one call (24 steps, the point forecast: the median for the quantile model) over all 2,857 stride-1
windows of the ETTh1 test split, rows [11520-96, 14400), standardized scale, computed with onnxruntime on
the committed file (masks all observed).

| file | exporter | opset | batch | style | inputs -> outputs | contract | params | bytes | test MSE |
|---|---|---|---|---|---|---|---|---|---|
"""


def write_readme(out_dir: Path) -> None:
    rows = [readme_row(v, out_dir) for v in VARIANTS.values() if (out_dir / f"{v.name}.onnx").exists()]
    total = sum(p.stat().st_size for p in out_dir.glob("*.onnx*"))
    head = README_HEAD.format(total_kib=total / 1024, torch=TORCH_VERSION)
    (out_dir / "README.md").write_text(head + "\n".join(rows) + "\n")


# ---------------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------------
def build(v: Variant, out_dir: Path) -> list[Path]:
    fam = FAMILIES[v.family]
    proto = clean(export(trained(v.family), fam, v))
    files = save(proto, v, fam, out_dir)
    diff = parity(files[0], v)
    sizes = ", ".join(f"{p.name} {p.stat().st_size:,} B" for p in files)
    print(f"[{v.name}] {sizes}; |onnxruntime - torch| max {diff:.2e}", flush=True)
    if diff > 1e-5:
        raise AssertionError(f"{v.name}: onnxruntime differs from torch by {diff:.2e} > 1e-5")
    return files


def digests(out_dir: Path, names) -> dict[str, str]:
    out = {}
    for name in names:
        for p in sorted(out_dir.glob(f"{name}.*")):
            out[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=sorted(VARIANTS), metavar="NAME", help="build only these")
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: this folder)")
    ap.add_argument(
        "--verify", action="store_true", help="rebuild into a temp dir, compare sha256 with --out"
    )
    args = ap.parse_args(argv)
    if torch.__version__.split("+")[0] != TORCH_VERSION:
        print(f"warning: torch {torch.__version__}; the committed files were built with {TORCH_VERSION}")
    names = args.only or list(VARIANTS)
    if args.verify:
        with tempfile.TemporaryDirectory(prefix="corpus-verify-") as tmp:
            for name in names:
                build(VARIANTS[name], Path(tmp))
            old, new = digests(args.out, names), digests(Path(tmp), names)
        bad = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        for k in sorted(new):
            print(f"VERIFY {k}: {'identical' if k not in bad else 'DIFFERS'} ({new[k][:16]})")
        for k in sorted(set(old) - set(new)):
            print(f"VERIFY {k}: not rebuilt")
        print(f"VERIFY: {len(new) - len(bad)}/{len(new)} files byte-identical")
        return 1 if bad else 0
    for name in names:
        build(VARIANTS[name], args.out)
    write_readme(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
