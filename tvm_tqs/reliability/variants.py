"""The variants a reliability run compares, built for this host: fp32, forced plans (from artifacts), uniform
precisions and data-free TQS plans under a budget; and the test windows of a CSV in the model's units."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import TQSError
from .data import Windows, parse_split, read_csv, standardize, windows
from .evaluate import REFERENCE, Forecaster

HOST = "x86"


def artifact_plan(directory: str | os.PathLike) -> dict[int, str]:
    """The precisions an exported artifact's plan chose, ``{site: precision}``."""
    path = Path(directory) / "plan.json"
    try:
        meta = json.loads(path.read_text())
        sites = meta["solved_plan"]["sites"]
    except FileNotFoundError:
        raise TQSError(
            f"--plan '{directory}' has no plan.json: not an artifact written by compile --out"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TQSError(f"cannot read the plan in '{path}': {err}") from None
    return {int(s["site"]): s["precision"] for s in sites}


def csv_windows(
    path: str | os.PathLike,
    spec,
    *,
    count: int,
    steps: int,
    split: str = "0.7,0.1,0.2",
    columns: list[str] | None = None,
    date_column: str | None = "date",
    normalize: bool = True,
) -> tuple[Windows, list[str]]:
    """Test windows of a CSV for a model with rollout contract `spec`: z-scored with the train rows' statistics
    (as the zoo's models were trained; `normalize=False` keeps raw units), futures in the test rows."""
    series = read_csv(path, columns, date_column)
    if len(series.channels) != spec.channels:
        raise TQSError(
            f"--data '{path}' gives {len(series.channels)} channels {list(series.channels)}; the model takes "
            f"{spec.channels} (choose them with --columns, in the model's order)"
        )
    train_end, val_end, test_end = parse_split(split, len(series.values))
    values = standardize(series, train_end)[0] if normalize else series.values.astype("float32")
    return windows(values, series.times, val_end, test_end, spec.lookback, steps, count), list(
        series.channels
    )


def host_variants(
    model,
    *,
    plans: dict[str, dict[int, str]] | None = None,
    budgets: dict[str, str] | None = None,
    uniform: tuple[str, ...] = (),
    horizon: int,
    batch: int = 32,
    **compile_options,
) -> dict[str, Forecaster]:
    """``{name: forecaster}``: fp32 first, then every forced plan, uniform precision and TQS budget plan, each
    compiled for this host with `batch` rows per call."""
    from ..compiler import compile as compile_model

    def rollout_of(compiled):
        return lambda x: compiled.rollout(x, horizon)

    jobs = {REFERENCE: {"uniform": "fp32"}}
    jobs.update({name: {"plan": plan} for name, plan in (plans or {}).items()})
    jobs.update({f"uniform {p}": {"uniform": p} for p in uniform if p != "fp32"})
    jobs.update({name: {"budget": b} for name, b in (budgets or {}).items()})
    return {
        name: rollout_of(compile_model(model, target=HOST, batch=batch, **compile_options, **job))
        for name, job in jobs.items()
    }
