"""Per-group rollout error of model variants (fp32 and quantized) on real test windows: the table, its worst
groups and their gaps to fp32."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TQSError
from ..io import write_text_atomic
from .data import Windows
from .groups import build_groups, corrupt

Forecaster = Callable[
    [np.ndarray], np.ndarray
]  # contexts [N, lookback, C] -> forecasts [N, horizon, targets]
REFERENCE = "fp32"


@dataclass(frozen=True)
class ReliabilityTable:
    """Rollout MSE / MAE of every variant on every group (rows), in the model's units.

    ``rows[i]`` = ``{"group", "kind", "windows", "<variant> MSE", "<variant> MAE", ...}``.
    """

    variants: tuple[str, ...]
    rows: tuple[dict, ...]
    horizon: int
    description: str = ""

    def summary(self) -> dict[str, dict]:
        """Per variant: mean MSE over groups, the worst group and its MSE, the gap to fp32 there
        (MSE / fp32's MSE - 1), and the largest gap over all groups with its group."""
        out = {}
        for v in self.variants:
            mse = np.array([r[f"{v} MSE"] for r in self.rows])
            worst = int(np.argmax(mse))
            entry = {
                "mean_mse": float(mse.mean()),
                "worst_group": self.rows[worst]["group"],
                "worst_mse": float(mse[worst]),
            }
            if REFERENCE in self.variants and v != REFERENCE:
                ref = np.array([r[f"{REFERENCE} MSE"] for r in self.rows])
                gap = mse / ref - 1.0
                entry["gap_at_worst"] = float(gap[worst])
                entry["max_gap"] = float(gap.max())
                entry["max_gap_group"] = self.rows[int(np.argmax(gap))]["group"]
            out[v] = entry
        return out

    @classmethod
    def from_dict(cls, d: dict) -> ReliabilityTable:
        return cls(tuple(d["variants"]), tuple(d["rows"]), d["horizon"], d.get("description", ""))

    def to_dict(self) -> dict:
        return json.loads(
            json.dumps(
                {
                    "variants": list(self.variants),
                    "horizon": self.horizon,
                    "description": self.description,
                    "rows": list(self.rows),
                    "summary": self.summary(),
                },
                allow_nan=False,
            )
        )

    def markdown(self) -> str:
        head = ["group", "kind", "windows"] + [f"{v} MSE / MAE" for v in self.variants]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            lines.append(
                f"| {r['group']} | {r['kind']} | {r['windows']} | "
                + " | ".join(f"{r[f'{v} MSE']:.4f} / {r[f'{v} MAE']:.4f}" for v in self.variants)
                + " |"
            )
        lines += [
            "",
            "| variant | mean MSE | worst group | worst MSE | gap to fp32 there | largest gap (group) |",
        ]
        lines.append("|---|---|---|---|---|---|")
        for v, s in self.summary().items():
            gap = f"{100 * s['gap_at_worst']:+.1f}%" if "gap_at_worst" in s else "-"
            largest = f"{100 * s['max_gap']:+.1f}% ({s['max_gap_group']})" if "max_gap" in s else "-"
            lines.append(
                f"| {v} | {s['mean_mse']:.4f} | {s['worst_group']} | {s['worst_mse']:.4f} | {gap} | {largest} |"
            )
        return "\n".join(lines) + "\n"

    def write_png(self, path: str | os.PathLike) -> Path:
        """MSE per group (x axis) for every variant, and each quantized variant's gap to fp32; needs matplotlib
        (the `plot` extra)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise TQSError("a PNG needs matplotlib: pip install 'tvm_tqs[plot]'") from None
        path = Path(path)
        fig, (ax, gap) = plt.subplots(2, 1, figsize=(max(8, 0.32 * len(self.rows)), 6.4), sharex=True)
        x = np.arange(len(self.rows))
        for i, v in enumerate(self.variants):
            color = f"C{i}"  # the same colour for a variant in both panels
            ax.plot(x, [r[f"{v} MSE"] for r in self.rows], marker="o", ms=3, label=v, color=color)
            if v != REFERENCE and REFERENCE in self.variants:
                rel = [100 * (r[f"{v} MSE"] / r[f"{REFERENCE} MSE"] - 1) for r in self.rows]
                gap.plot(x, rel, marker="o", ms=3, label=v, color=color)
        ax.set_ylabel(f"{self.horizon}-step rollout MSE")
        ax.set_yscale("log")
        gap.axhline(0, color="#444", lw=0.8)
        gap.set_ylabel("gap to fp32 (%)")
        gap.set_xticks(x, [r["group"] for r in self.rows], rotation=70, ha="right", fontsize=7)
        for a in (ax, gap):
            a.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(self.description, fontsize=9)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        os.replace(tmp, path)
        return path

    def write(self, directory: str | os.PathLike, png: bool = True) -> Path:
        """``reliability.json``, ``reliability.md`` and (with matplotlib) ``reliability.png`` in `directory`."""
        directory = Path(directory)
        write_text_atomic(directory / "reliability.json", json.dumps(self.to_dict(), indent=1) + "\n")
        write_text_atomic(directory / "reliability.md", self.markdown())
        if png:
            self.write_png(directory / "reliability.png")
        return directory


def evaluate(
    variants: Mapping[str, Forecaster],
    windows: Windows,
    targets: list[int],
    horizon: int,
    channel_names: list[str] | None = None,
    seed: int = 0,
    description: str = "",
) -> ReliabilityTable:
    """Roll every variant out from the clean and the corrupted contexts and score each group.

    Parameters
    ----------
    variants : mapping of name -> callable(contexts) -> forecasts
        ``"fp32"`` among them gives the gaps; forecasts are ``[N, horizon, len(targets)]``.
    windows : Windows
        Test contexts and futures in model units (`tvm_tqs.reliability.data.windows`).
    targets : list of int
        The forecast channels' positions among the context channels.
    horizon : int
        Rollout steps scored.
    """
    if horizon > windows.y.shape[1]:
        raise TQSError(f"horizon {horizon} exceeds the {windows.y.shape[1]} future steps of the windows")
    truth = windows.y[:, :horizon][:, :, targets].astype(np.float64)
    groups = build_groups(windows.x, windows.starts, targets, channel_names)
    inputs = {None: windows.x}
    for g in groups:
        if g.corruption is not None and (g.corruption, g.severity) not in inputs:
            inputs[(g.corruption, g.severity)] = corrupt(windows.x, g.corruption, g.severity, seed)
    forecasts = {}
    for name, forecast in variants.items():
        for key, x in inputs.items():
            out = np.asarray(forecast(x), np.float64)
            if out.shape != truth.shape:
                raise TQSError(f"variant '{name}' forecast {out.shape}, expected {truth.shape}")
            forecasts[name, key] = out
    rows = []
    for g in groups:
        row = {"group": g.name, "kind": g.kind, "windows": int(len(g.rows))}
        key = None if g.corruption is None else (g.corruption, g.severity)
        cols = list(range(len(targets))) if g.channels is None else list(g.channels)
        t = truth[g.rows][:, :, cols]
        for name in variants:
            err = forecasts[name, key][g.rows][:, :, cols] - t
            row[f"{name} MSE"] = float(np.mean(err**2))
            row[f"{name} MAE"] = float(np.mean(np.abs(err)))
        rows.append(row)
    return ReliabilityTable(tuple(variants), tuple(rows), horizon, description)
