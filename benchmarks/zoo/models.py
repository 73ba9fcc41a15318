"""Torch modules of the model zoo. All map a window ``[B, L, C]`` to a forecast ``[B, H, C]``.

Export-friendly by construction: no negative indices or negative slice bounds (``L - 1`` rather than
``-1``), reshapes keep the batch axis as ``-1``, attention is written with matmul/softmax, no dropout.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _center(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Subtract each window's per-channel mean over time (added back to the forecast)."""
    mu = x.mean(dim=1, keepdim=True)
    return x - mu, mu


def _revin(x: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Non-affine RevIN (Kim et al. 2022): per-window, per-channel mean and std over time."""
    mu = x.mean(dim=1, keepdim=True)
    xc = x - mu
    sd = torch.sqrt((xc * xc).mean(dim=1, keepdim=True) + eps)
    return xc / sd, mu, sd


class RNNForecaster(nn.Module):
    """nn.LSTM / nn.GRU encoder (batch_first) over the mean-centred window + linear head on the last state."""

    def __init__(self, cell: str, lookback: int, horizon: int, channels: int, hidden: int, layers: int):
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.cell, self.lookback, self.horizon, self.channels = cell, lookback, horizon, channels
        self.layers = layers
        self.rnn = rnn(channels, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, horizon * channels)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        z, mu = _center(window)
        out, _ = self.rnn(z)  # [B, L, hidden]
        last = out[:, self.lookback - 1, :]  # positive index: exports as Gather(1)
        y = self.head(last).reshape(-1, self.horizon, self.channels)
        return y + mu


class TCN(nn.Module):
    """Dilated causal Conv1d residual stack (kernel 3, dilations 1..32: receptive field 127 >= L)."""

    def __init__(
        self, lookback: int, horizon: int, channels: int, width: int, dilations=(1, 2, 4, 8, 16, 32)
    ):
        super().__init__()
        self.lookback, self.horizon, self.channels = lookback, horizon, channels
        self.kernel = 3
        self.inp = nn.Conv1d(channels, width, 1)
        # symmetric zero padding + keeping the first L outputs == left (causal) padding, without Pad ops
        self.convs = nn.ModuleList(
            nn.Conv1d(width, width, self.kernel, dilation=d, padding=(self.kernel - 1) * d) for d in dilations
        )
        self.mix = nn.ModuleList(nn.Conv1d(width, width, 1) for _ in dilations)
        self.dilations = tuple(dilations)
        self.head = nn.Linear(width, horizon * channels)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        z, mu = _center(window)
        h = self.inp(z.transpose(1, 2))  # [B, W, L]
        for conv, mix in zip(self.convs, self.mix, strict=True):
            y = conv(h)[:, :, 0 : self.lookback]  # causal: output t sees inputs <= t
            h = h + mix(torch.relu(y))
        last = h[:, :, self.lookback - 1]
        y = self.head(torch.relu(last)).reshape(-1, self.horizon, self.channels)
        return y + mu


def moving_average_matrix(lookback: int, kernel: int) -> torch.Tensor:
    """[L, L] matrix of DLinear's moving average with replicate padding at both ends (odd kernel)."""
    half = (kernel - 1) // 2
    a = torch.zeros(lookback, lookback, dtype=torch.float64)
    for t in range(lookback):
        for k in range(t - half, t + half + 1):
            a[t, min(max(k, 0), lookback - 1)] += 1.0 / kernel
    return a.float()


class DLinear(nn.Module):
    """DLinear (Zeng et al. 2023), shared across channels: trend = moving average (kernel 25),
    seasonal = x - trend, forecast = Linear_s(seasonal) + Linear_t(trend) along time."""

    def __init__(self, lookback: int, horizon: int, channels: int, kernel: int = 25):
        super().__init__()
        self.lookback, self.horizon, self.channels = lookback, horizon, channels
        self.register_buffer("avg", moving_average_matrix(lookback, kernel))
        self.seasonal = nn.Linear(lookback, horizon)
        self.trend = nn.Linear(lookback, horizon)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        trend = torch.matmul(self.avg, window)  # [B, L, C]
        seasonal = window - trend
        y = self.seasonal(seasonal.transpose(1, 2)) + self.trend(trend.transpose(1, 2))  # [B, C, H]
        return y.transpose(1, 2)


class MLP(nn.Module):
    """Mean-centred window, flattened, two hidden ReLU layers, linear head."""

    def __init__(self, lookback: int, horizon: int, channels: int, hidden: int):
        super().__init__()
        self.lookback, self.horizon, self.channels = lookback, horizon, channels
        self.net = nn.Sequential(
            nn.Linear(lookback * channels, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, horizon * channels),
        )

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        z, mu = _center(window)
        y = self.net(z.reshape(-1, self.lookback * self.channels))
        return y.reshape(-1, self.horizon, self.channels) + mu


class EncoderLayer(nn.Module):
    """Pre-norm Transformer encoder layer with attention written as matmul + softmax."""

    def __init__(self, patches: int, d_model: int, heads: int, d_ff: int):
        super().__init__()
        # sizes are Python ints (not x.shape) so the traced graph has no Shape/Gather arithmetic
        self.patches, self.d_model, self.heads, self.d_head = patches, d_model, heads, d_model // heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, d_ff)
        self.ff2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, P, D]
        p, d = self.patches, self.d_model
        qkv = self.qkv(self.norm1(x)).reshape(-1, p, 3, self.heads, self.d_head).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [N, heads, P, d_head]
        att = torch.softmax(torch.matmul(q, k.transpose(2, 3)) * (1.0 / math.sqrt(self.d_head)), dim=3)
        o = torch.matmul(att, v).permute(0, 2, 1, 3).reshape(-1, p, d)
        x = x + self.proj(o)
        return x + self.ff2(torch.nn.functional.gelu(self.ff1(self.norm2(x))))


class PatchTST(nn.Module):
    """Small channel-independent PatchTST (Nie et al. 2023): RevIN, end replicate-padding, patches of 16
    with stride 8 embedded by a Conv1d (= unfold + shared Linear), learned positional embedding,
    pre-norm encoder layers, flatten head."""

    def __init__(
        self, lookback: int, horizon: int, channels: int, patch: int = 16, stride: int = 8,
        d_model: int = 32, heads: int = 4, d_ff: int = 64, layers: int = 2,
    ):  # fmt: skip
        super().__init__()
        self.lookback, self.horizon, self.channels = lookback, horizon, channels
        self.stride = stride
        self.patches = (lookback + stride - patch) // stride + 1
        self.embed = nn.Conv1d(1, d_model, patch, stride=stride)
        self.pos = nn.Parameter(torch.randn(1, self.patches, d_model) * 0.02)
        self.d_model = d_model
        self.layers = nn.ModuleList(EncoderLayer(self.patches, d_model, heads, d_ff) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(self.patches * d_model, horizon)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        z, mu, sd = _revin(window)
        s = z.transpose(1, 2).reshape(-1, 1, self.lookback)  # [B*C, 1, L]
        end = s[:, :, self.lookback - 1 : self.lookback]
        s = torch.cat([s] + [end] * self.stride, dim=2)  # replicate pad at the end (Concat, no Expand)
        x = self.embed(s).transpose(1, 2) + self.pos  # [B*C, P, D]
        for layer in self.layers:
            x = layer(x)
        y = self.head(self.norm(x).reshape(-1, self.patches * self.d_model))  # [B*C, H]
        y = y.reshape(-1, self.channels, self.horizon).transpose(1, 2)
        return y * sd + mu


class FITS(nn.Module):
    """FITS (Xu et al. 2024): RevIN, rfft over time, low-pass to `cut` bins, complex linear upsampling
    to cut * (L+H)/L bins (written with real weights), zero-pad, irfft to L+H steps, keep the last H."""

    def __init__(self, lookback: int, horizon: int, channels: int, cut: int):
        super().__init__()
        self.lookback, self.horizon, self.channels = lookback, horizon, channels
        total = lookback + horizon
        self.cut, self.total = cut, total
        self.up = cut * total // lookback
        if self.up * lookback != cut * total:
            raise ValueError("choose cut so that cut * (L + H) / L is an integer")
        self.pad = total // 2 + 1 - self.up
        self.wr = nn.Linear(cut, self.up)  # real part of the complex weight (+ real bias)
        self.wi = nn.Linear(cut, self.up, bias=False)  # imaginary part
        self.bi = nn.Parameter(torch.zeros(self.up))  # imaginary bias

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        z, mu, sd = _revin(window)
        spec = torch.fft.rfft(z.transpose(1, 2), dim=2)[:, :, 0 : self.cut]  # [B, C, cut] complex
        xr, xi = spec.real, spec.imag
        yr = self.wr(xr) - nn.functional.linear(xi, self.wi.weight)
        yi = nn.functional.linear(xr, self.wi.weight) + nn.functional.linear(xi, self.wr.weight) + self.bi
        up = torch.complex(nn.functional.pad(yr, (0, self.pad)), nn.functional.pad(yi, (0, self.pad)))
        rec = torch.fft.irfft(up, n=self.total, dim=2) * (self.total / self.lookback)  # [B, C, L+H]
        y = rec[:, :, self.lookback : self.total].transpose(1, 2)
        return y * sd + mu


class PatchTSTStack(nn.Module):
    """PatchTST written as a user would with torch's own blocks: RevIN, end replicate-padding, patches of 16
    with stride 8 embedded by a Conv1d, learned positions, ``nn.TransformerEncoder`` (pre-norm
    ``nn.TransformerEncoderLayer``, GELU), and one flatten head per channel (PatchTST's ``individual``)."""

    def __init__(
        self, lookback: int, horizon: int, channels: int, patch: int = 16, stride: int = 8,
        d_model: int = 32, heads: int = 4, d_ff: int = 64, layers: int = 6,
    ):  # fmt: skip
        super().__init__()
        self.lookback, self.horizon, self.channels = lookback, horizon, channels
        self.stride, self.d_model = stride, d_model
        self.patches = (lookback + stride - patch) // stride + 1
        self.embed = nn.Conv1d(1, d_model, patch, stride=stride)
        self.pos = nn.Parameter(torch.randn(1, self.patches, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, d_ff, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(
            layer, layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.heads = nn.ModuleList(nn.Linear(self.patches * d_model, horizon) for _ in range(channels))

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        z, mu, sd = _revin(window)
        s = z.transpose(1, 2).reshape(-1, 1, self.lookback)  # [B*C, 1, L]
        end = s[:, :, self.lookback - 1 : self.lookback]
        s = torch.cat([s] + [end] * self.stride, dim=2)
        x = self.encoder(self.embed(s).transpose(1, 2) + self.pos)  # [B*C, P, D]
        x = x.reshape(-1, self.channels, self.patches * self.d_model)
        y = torch.stack([head(x[:, c]) for c, head in enumerate(self.heads)], dim=2)  # [B, H, C]
        return y * sd + mu


class NBeatsBlock(nn.Module):
    """Generic N-BEATS block: 4 ReLU FC layers, then theta_b / theta_f and their learned (generic) bases."""

    def __init__(self, lookback: int, horizon: int, width: int, theta: int):
        super().__init__()
        self.fc = nn.ModuleList(nn.Linear(lookback if i == 0 else width, width) for i in range(4))
        self.theta_b = nn.Linear(width, theta, bias=False)
        self.theta_f = nn.Linear(width, theta, bias=False)
        self.backcast = nn.Linear(theta, lookback)
        self.forecast = nn.Linear(theta, horizon)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x
        for fc in self.fc:
            h = torch.relu(fc(h))
        return self.backcast(self.theta_b(h)), self.forecast(self.theta_f(h))


class NBeats(nn.Module):
    """N-BEATS generic (Oreshkin et al. 2020), channel-independent on RevIN-normalised series: a stack of
    blocks with doubly residual links (x -= backcast, forecast += block forecast)."""

    def __init__(
        self, lookback: int, horizon: int, channels: int, blocks: int = 3, width: int = 128, theta: int = 32
    ):
        super().__init__()
        self.lookback, self.horizon, self.channels = lookback, horizon, channels
        self.blocks = nn.ModuleList(NBeatsBlock(lookback, horizon, width, theta) for _ in range(blocks))

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        z, mu, sd = _revin(window)
        x = z.transpose(1, 2).reshape(-1, self.lookback)  # [B*C, L]
        y = None
        for block in self.blocks:
            back, fore = block(x)
            x = x - back
            y = fore if y is None else y + fore
        y = y.reshape(-1, self.channels, self.horizon).transpose(1, 2)
        return y * sd + mu


def build(arch: str, lookback: int, horizon: int, channels: int, **kw) -> nn.Module:
    if arch in ("lstm", "gru"):
        return RNNForecaster(arch, lookback, horizon, channels, **kw)
    cls = {
        "tcn": TCN, "dlinear": DLinear, "mlp": MLP, "patchtst": PatchTST, "fits": FITS,
        "patchtst_stack": PatchTSTStack, "nbeats": NBeats,
    }[arch]  # fmt: skip
    return cls(lookback, horizon, channels, **kw)
