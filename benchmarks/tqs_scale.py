"""How do TQS scoring and compile scale with model size? Time and peak memory from 0.1M to 20M parameters.

    python benchmarks/tqs_scale.py [--sizes NAME ...] [--paths rows calls] [--steps score responses compile]
                                   [--timeout S] [--out benchmarks/results]

Models: PatchTST on torch's ``nn.TransformerEncoder`` as in the zoo's ``etth1_patchtst6`` (channel-independent
encoder, 12 patches, per-channel heads, 7 channels, lookback 96, stride 24), random weights (every layer
initialised apart, so every weight is its own group), widths and depths chosen for ~0.1M to ~20M parameters;
exported by torch (legacy exporter, opset 17, dynamic batch) into a temporary folder (nothing committed).

Per model, each step in a fresh Python process (so its peak resident memory is its own: ``VmHWM`` of the
child's /proc/self/status; not ``ru_maxrss``, which Linux carries over exec from the parent that exported
the models), timed wall-clock, with a per-step timeout:

- ``score[auto]`` (and ``score[rows]`` / ``score[calls]`` with ``--paths``): ``tvm_tqs.score(model,
  horizon=96, seeds=8, mode="weight", path=...)``: the perturbed rollout compiled once, the rows of every
  execution as batch rows (rows) or each row as its own model call (calls); auto takes rows where the
  model keeps batch rows apart. torch's ``nn.MultiheadAttention`` exports attention sequence-first, which
  mixes batch rows at the attention sites, so these models score on the calls path (the table says which);
- ``responses``: the cross-group model's residual responses (`tvm_tqs.planning.residual_responses`);
- ``compile``: ``tvm_tqs.compile(model, "x86", "size=25%", tqs_report=<the score[rows] report>)``: planning
  (activation pass, residual responses, cross-group solver), quantize and build, without the scoring
  (given the first score step's report).

Reported: parameters, fused sites, weight groups, executions, seconds, seconds per scored site, peak RSS.
The calls path runs its rows on `tvm_tqs.tqs_paths.workers()` threads (one per core; ``TVM_TQS_WORKERS``).
The issue's goal: 20M parameters scored and compiled in <= 10 min and <= 8 GiB on 2 cores, the scoring
cost linear in the number of sites. Writes benchmarks/results/tqs_scale.{json,md} and, with matplotlib,
tqs_scale.png.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "zoo"))

# name: (d_model, layers, d_ff); parameters measured when built
SIZES = {
    "0.1M": (32, 6, 64),
    "0.5M": (64, 8, 256),
    "2M": (128, 8, 512),
    "7M": (256, 8, 1024),
    "20M": (384, 11, 1536),
}
HORIZON, SEEDS, TIMEOUT = 96, 8, 1800
STEPS = ("score", "responses", "compile")


def build_model(d_model: int, layers: int, d_ff: int, out: Path) -> dict:
    """Export the PatchTST stack with independently initialised weights; returns its facts."""
    import io

    import numpy as np
    import onnx
    import torch
    from models import PatchTSTStack

    from tvm_tqs.rollout import RolloutSpec

    torch.manual_seed(0)
    model = PatchTSTStack(96, 24, 7, d_model=d_model, heads=4, d_ff=d_ff, layers=layers).eval()
    with torch.no_grad():
        for m in model.modules():  # cloned encoder layers start equal: make every weight its own
            if isinstance(m, torch.nn.Linear | torch.nn.MultiheadAttention):
                for p in m.parameters():
                    if p.dim() == 2:
                        torch.nn.init.xavier_uniform_(p)
    buf = io.BytesIO()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 96, 7)).astype(np.float32))
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
    )
    proto = onnx.load_from_string(buf.getvalue())
    RolloutSpec(
        window_input="window",
        forecast_output="forecast",
        lookback=96,
        horizon=24,
        channels=7,
        target_channels=tuple(range(7)),
        stride=24,
        exogenous="hold",
        channel_mean=(0.0,) * 7,
        channel_std=(1.0,) * 7,
    ).attach(proto)
    onnx.save(proto, str(out))
    return {"params": int(sum(p.numel() for p in model.parameters())), "onnx_bytes": out.stat().st_size}


def peak_rss_mib() -> float:
    """This process's peak resident memory: VmHWM (its own address space; ru_maxrss would include the
    parent's peak before exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(step: str, model: str, report_path: str) -> dict:
    """Run one step in this process and return its facts (the parent reads them from stdout)."""
    import tvm_tqs

    t0 = time.perf_counter()
    out: dict = {}
    if step.startswith("score"):
        path = step[step.index("[") + 1 : -1]
        report = tvm_tqs.score(model, horizon=HORIZON, seeds=SEEDS, mode="weight", path=path)
        scored = sum(1 for s in report.sites if s.status == "ok")
        out.update(
            sites=len(report.ops),
            scored=scored,
            executions=report.executions,
            batch=report.batch,
            path=report.path,
        )
        if not Path(report_path).exists():  # the first score step's report serves compile
            Path(report_path).write_text(report.to_json())
    elif step == "responses":
        from tvm_tqs.planning import PlanningProblem, residual_responses

        problem = PlanningProblem.from_model(model, "x86")
        responses = residual_responses(problem, horizon=HORIZON, seeds=SEEDS)
        out.update(groups=len(problem.groups), probes=len(responses.keys), executions=responses.executions)
    elif step == "compile":
        from tvm_tqs.tqs_report import TQSReport

        report = TQSReport.from_json(Path(report_path).read_text())
        compiled = tvm_tqs.compile(model, target="x86", budget="size=25%", tqs_report=report)
        out.update(groups=len({s.group for s in compiled.plan.sites if s.group}))
    else:
        raise SystemExit(f"unknown step {step!r}")
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def run_step(step: str, model: Path, report_path: Path, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", step, str(model), str(report_path)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"step": step, "status": f"timeout after {timeout:.0f} s", "seconds": timeout}
    wall = time.perf_counter() - t0
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"step": step, "status": f"failed: {proc.stderr.strip().splitlines()[-1:]}", "seconds": wall}
    return {"step": step, "status": "ok", "process_s": wall} | json.loads(lines[-1])


def markdown(rows: list[dict], payload: dict) -> str:
    env = payload["environment"]
    lines = [
        "# TQS and compile at scale: time and peak memory vs parameters",
        "",
        f"Command: `{payload['command']}`",
        "",
        f"Machine: {env['machine']}; {env['load']}. Method in benchmarks/tqs_scale.py's docstring "
        f"(horizon {HORIZON}, {SEEDS} seeds, weight mode; each step a fresh process; timeout "
        f"{payload['timeout']:.0f} s; calls-path rows on {payload.get('workers', 1)} worker threads).",
        "",
    ]
    if payload.get("peak") != "VmHWM":
        lines += [
            "Peak RSS of this run is the child's `ru_maxrss`, which Linux carries over exec from the parent: "
            "where the parent had exported a larger model first, a step shows the parent's peak (a floor; "
            "repeated values) rather than its own. Values above that floor are the step's own.",
            "",
        ]
    lines += [
        "| model | params | step | status | path | sites (scored) | executions | seconds | s per scored site | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["params"]):
        for s in r["steps"]:
            scored = s.get("scored")
            per_site = f"{s['seconds'] / scored:.2f}" if scored and s["status"] == "ok" else "-"
            sites = f"{s['sites']} ({scored})" if "sites" in s else "-"
            lines.append(
                f"| {r['name']} (d {r['d_model']}, {r['layers']} layers) | {r['params']:,} | {s['step']} | "
                f"{s['status']} | {s.get('path', '-')} | {sites} | {s.get('executions', '-')} | {s['seconds']:.1f} | {per_site} | "
                f"{s.get('peak_rss_mib', float('nan')):.0f} |"
            )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], out: Path) -> Path | None:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    steps = sorted({s["step"] for r in rows for s in r["steps"]})
    for step in steps:
        pts = sorted(
            ((r["params"], s) for r in rows for s in r["steps"] if s["step"] == step and s["status"] == "ok"),
            key=lambda p: p[0],
        )
        if not pts:
            continue
        xs = [p for p, _ in pts]
        ax1.plot(xs, [s["seconds"] for _, s in pts], marker="o", label=step)
        ax2.plot(xs, [s["peak_rss_mib"] / 1024 for _, s in pts], marker="o", label=step)
    ax1.axhline(600, color="0.5", linestyle=":", label="goal 10 min")
    ax2.axhline(8, color="0.5", linestyle=":", label="goal 8 GiB")
    for ax, label in ((ax1, "seconds"), (ax2, "peak RSS (GiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("TQS scoring and compile vs model size (2 cores)")
    fig.tight_layout()
    path = out / "tqs_scale.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(*sys.argv[2:5])))
        return 0
    from common import command_line, machine_env, write_results

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", choices=list(SIZES), help="model sizes (default: all)")
    parser.add_argument("--paths", nargs="*", default=["auto"], choices=["auto", "rows", "calls"])
    parser.add_argument(
        "--steps",
        nargs="*",
        default=list(STEPS),
        choices=list(STEPS),
        help="steps per model (default all; compile includes the responses, which 'responses' times alone)",
    )
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help=f"seconds per step ({TIMEOUT})")
    parser.add_argument("--out", default=str(HERE / "results"), help="output folder")
    args = parser.parse_args(argv)
    from tvm_tqs.tqs_paths import workers

    payload = {
        "command": command_line("tqs_scale.py"),
        "environment": machine_env(),
        "timeout": args.timeout,
        "workers": workers(),
        "peak": "VmHWM",
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="tqs-scale-") as tmp:
        for name in args.sizes or list(SIZES):
            d_model, layers, d_ff = SIZES[name]
            model = Path(tmp) / f"patchtst_{name}.onnx"
            row = {"name": name, "d_model": d_model, "layers": layers, "d_ff": d_ff}
            row |= build_model(d_model, layers, d_ff, model)
            report_path = Path(tmp) / f"{name}.report.json"
            steps = [f"score[{p}]" for p in args.paths] if "score" in args.steps else []
            steps += [step for step in ("responses", "compile") if step in args.steps]
            row["steps"] = []
            for step in steps:
                result = run_step(step, model, report_path, args.timeout)
                row["steps"].append(result)
                print(f"{name} ({row['params']:,} params) {step}: {result['status']} {result['seconds']:.1f} s "
                      f"{result.get('peak_rss_mib', 0):.0f} MiB", flush=True)  # fmt: skip
            rows.append(row)
            payload["results"] = rows  # written after every model: a long run keeps what it finished
            write_results(args.out, "tqs_scale", payload, markdown(rows, payload), [])
    png = plot(rows, Path(args.out))
    if png:
        print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
