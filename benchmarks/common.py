"""What every benchmark script shares: the zoo, the machine description, and atomic result files."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tvm_tqs.io import write_text_atomic

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def zoo_models() -> list[Path]:
    """Every committed zoo model, then the example shipped in the package."""
    found = sorted((REPO / "benchmarks" / "zoo" / "models").glob("*.onnx"))
    return found + sorted((REPO / "tvm_tqs" / "examples").glob("*.onnx"))


def selected_models(names: list[str] | None) -> list[Path]:
    """The zoo models named (all when none are); exits with a message when there are none."""
    paths = [p for p in zoo_models() if not names or p.stem in names]
    if not paths:
        sys.exit("no zoo models found (benchmarks/zoo/models/*.onnx)" + (f" named {names}" if names else ""))
    return paths


def per_model(
    paths: list[Path], evaluate: Callable[[Path], dict], done: Callable[[dict], None] | None = None
) -> tuple[list[dict], dict[str, str]]:
    """`evaluate` each model (timed into ``total_s``); one model failing is recorded, not fatal."""
    results, failures = [], {}
    for path in paths:
        print(f"== {path.stem}", flush=True)
        t0 = time.perf_counter()
        try:
            res = evaluate(path)
        except Exception as err:  # noqa: BLE001 - one model failing must not hide the others
            failures[path.stem] = f"{type(err).__name__}: {err}"
            print(f"   FAILED: {failures[path.stem]}", flush=True)
            continue
        res["total_s"] = time.perf_counter() - t0
        results.append(res)
        if done is not None:
            done(res)
    return results, failures


def card_of(path: Path) -> dict:
    """The machine-readable model card beside a zoo model."""
    card = path.with_suffix(".json")
    if not card.exists():
        raise FileNotFoundError(f"{path.name} has no model card {card.name}")
    return json.loads(card.read_text())


def command_line(script: str) -> str:
    """The command that reproduces this run, for the results files."""
    return f"python benchmarks/{script}" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")


def machine_env() -> dict:
    """Machine, core count and load at the start: 2 shared cores make load part of every number."""
    try:
        load = os.getloadavg()
        load_s = f"load average at start {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} ({os.cpu_count()} cores)"
    except OSError:
        load_s = "load unknown"
    return {
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "load": load_s,
        "python": platform.python_version(),
    }


def write_results(
    out: Path | str, name: str, payload: dict, markdown: str, failures: dict | None = None
) -> None:
    """Write `name`.json and `name`.md into `out` atomically, listing models that failed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if failures:
        markdown += (
            "\n## Models that failed\n\n" + "\n".join(f"- {k}: {v}" for k, v in failures.items()) + "\n"
        )
    write_text_atomic(out / f"{name}.json", json.dumps(payload, indent=1))
    write_text_atomic(out / f"{name}.md", markdown)
    print(f"wrote {out / name}.md and .json")
