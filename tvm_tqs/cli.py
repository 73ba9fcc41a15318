"""`tvm-tqs` command line: argument parsing only; the work is done by the public API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .artifact import check_export_path
from .errors import MeasurementError, TQSError
from .io import write_text_atomic
from .options import ERROR_MODELS
from .precision import PRECISION_ORDER
from .progress import Interrupts, ProgressBars
from .quantizers import QUANTIZERS
from .solver import SOLVER_METHODS


def _parse_shapes(items: list[str]) -> dict:
    """["window=1,96,7", "batch=4"] -> {"window": [1, 96, 7], "batch": 4}."""
    shapes: dict = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            dims = [int(v) for v in value.split(",")] if sep and value else None
        except ValueError:
            dims = None
        if not name or dims is None:
            raise TQSError(
                f"--shape '{item}' must look like NAME=D0,D1,... (an input) or NAME=N (a symbolic dim)"
            )
        shapes[name] = dims[0] if len(dims) == 1 else dims
    return shapes


def _input_shapes(args) -> dict:
    """--shape values, plus --batch for every symbolic leading dimension not given otherwise."""
    from .frontend.load import bind_shapes, read_onnx

    shapes = _parse_shapes(args.shape)
    if args.batch is None:
        return shapes
    return bind_shapes(read_onnx(args.model)[0], shapes, args.batch)


def _cmd_inspect(args) -> int:
    from .graph import inspect
    from .report.text import fused_op_table

    with _progress(args) as progress:
        progress(0, 1, "importing and fusing")
        ops = inspect(args.model, target=args.target, input_shapes=_input_shapes(args), rollout=args.rollout)
    if args.json:
        print(json.dumps([op.to_dict() for op in ops], indent=2))
    else:
        print(fused_op_table(ops))
    return 0


def _cmd_targets(args) -> int:
    from .report.text import format_table
    from .targets.registry import registry

    specs = registry().values()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": s.name,
                        "kind": s.kind,
                        "features": s.features,
                        "tvm_target": s.tvm_target,
                        "description": s.description,
                    }
                    for s in specs
                ],
                indent=2,
            )
        )
    else:
        print(
            format_table(
                ["target", "features", "description"],
                [(s.name, ",".join(s.features) or "-", s.description) for s in specs],
            )
        )
    return 0


def _progress(args) -> ProgressBars:
    return ProgressBars(not args.quiet and (args.progress or sys.stderr.isatty()), _INTERRUPTS)


def _cmd_score(args) -> int:
    import numpy as np

    from .report.text import tqs_table
    from .tqs import score

    contexts = None
    if args.contexts:
        try:
            contexts = np.load(args.contexts)
        except (OSError, ValueError) as err:
            raise TQSError(f"cannot read --contexts '{args.contexts}' as a .npy array: {err}") from None
    with _progress(args) as progress:
        report = score(
            args.model,
            horizon=args.horizon,
            seeds=(None if contexts is not None else 8) if args.seeds is None else args.seeds,
            mode=args.mode,
            contexts=contexts,
            eps=args.eps,
            seed=args.seed,
            burn_in_calls=args.burn_in,
            linearity=not args.no_linearity,
            batch=args.batch,
            progress=progress,
            input_shapes=_parse_shapes(args.shape),
            rollout=args.rollout,
            path=args.path,
        )
    if args.out:
        _INTERRUPTS.check()
        write_text_atomic(args.out, report.to_json(indent=1))
    if args.json:
        print(report.to_json(indent=1))
        return 0
    print(tqs_table(report, top=args.top, by=args.rank_by))
    if args.out:
        print(f"report written to {args.out}")
    return 0


def _load_calibration(path: str | None):
    if path is None:
        return None
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise TQSError(f"cannot read --calibration '{path}' as a .npy array: {err}") from None


def _cmd_compile(args) -> int:
    from .report.text import plan_summary

    if sum(x is not None for x in (args.budget, args.uniform, args.plan)) != 1:
        raise TQSError("give exactly one of --budget, --uniform, --plan")
    plan = None
    if args.plan:
        try:
            with open(args.plan) as f:
                plan = json.load(f)
        except (OSError, ValueError) as err:  # ValueError: invalid JSON or not text at all
            raise TQSError(f"cannot read --plan '{args.plan}' as JSON: {err}") from None
    check_export_path(args.out, args.overwrite)  # before minutes of work, not after
    with _progress(args) as progress:
        compiled = _compile_args(args, plan, progress)
        progress(0, 1, "exporting")
        path = compiled.export(args.out, overwrite=args.overwrite)
    library = json.loads((path / "plan.json").read_text())["library"]
    last = compiled.trace[-1] if compiled.trace else {}
    if last.get("met") is False:
        print(
            f"warning: measured latency {last['measured_ms']:.4g} ms is over the budget after "
            f"{len(compiled.trace)} rounds (the artifact is the last round's plan)",
            file=sys.stderr,
        )
    if args.json:
        result = {
            "artifact": str(path),
            "library": library,
            "report": str(path / "report.html"),
            "plan": compiled.plan.to_dict(),
            "trace": list(compiled.trace),
        }
        print(json.dumps(result, indent=1))
        return 0
    print(plan_summary(compiled))
    print(f"artifact written to {path} ({library}, plan.json, report.json, report.html)")
    return 0


def _compile_args(args, plan, progress):
    from .compiler import compile as compile_model

    return compile_model(
        args.model,
        target=args.target,
        budget=args.budget,
        plan=plan,
        uniform=args.uniform,
        input_shapes=_parse_shapes(args.shape),
        batch=args.batch,
        rollout=args.rollout,
        horizon=args.horizon,
        seeds=args.seeds,
        runner=args.runner,
        solver=args.solver,
        error_model=args.error_model,
        quantizer=args.quantizer,
        calibration=_load_calibration(args.calibration),
        progress=progress,
    )


def _cmd_report(args) -> int:
    from .report.html import read_artifact_report, write_html

    report = read_artifact_report(args.artifact)
    out = write_html(report, args.out or os.path.join(args.artifact, "report.html"))
    if args.json:
        print(json.dumps({"report": str(out)}))
    else:
        print(f"report written to {out}")
    return 0


def _cmd_reliability(args) -> int:
    from .frontend.load import import_onnx, read_onnx, require_rollout_spec
    from .reliability import evaluate
    from .reliability.variants import artifact_plan, csv_windows, host_variants

    proto, source = read_onnx(args.model)
    spec = require_rollout_spec(
        import_onnx(proto, _parse_shapes(args.shape), source, rollout=args.rollout), source
    )
    data, channels = csv_windows(
        args.data,
        spec,
        count=args.windows,
        steps=args.horizon,
        split=args.split,
        columns=args.columns.split(",") if args.columns else None,
        date_column=args.date_column,
        normalize=args.normalize == "train",
    )
    plans = {Path(d).name or d: artifact_plan(d) for d in args.plan}
    budgets = {f"tqs {b}": b for b in args.budget}
    if not (plans or budgets or args.uniform):
        budgets, args.uniform = {"tqs size=25%": "size=25%"}, ["int8"]
    with _progress(args) as progress:
        progress(0, 1, "compiling the variants")
        variants = host_variants(
            args.model,
            plans=plans,
            budgets=budgets,
            uniform=tuple(args.uniform),
            horizon=args.horizon,
            input_shapes=_parse_shapes(args.shape),
            rollout=args.rollout,
        )
        progress(0, 1, "rolling out every group")
        table = evaluate(
            variants,
            data,
            spec.target_channels,
            args.horizon,
            channel_names=channels,
            description=f"{Path(args.model).name} on {Path(args.data).name}: {len(data.x)} test windows, "
            f"{args.horizon}-step rollouts",
        )
    if args.out:
        table.write(args.out, png=not args.no_png)
    if args.attach:
        _attach(args.plan, table)
    print(json.dumps(table.to_dict(), indent=1) if args.json else table.markdown())
    return 0


def _attach(plans: list[str], table) -> None:
    """Add the table to the one --plan artifact's report.json and re-render its report.html."""
    from .report.html import read_artifact_report, write_html

    if len(plans) != 1:
        raise TQSError(f"--attach needs exactly one --plan artifact, got {len(plans)}")
    report = read_artifact_report(plans[0])
    report["reliability"] = table.to_dict()
    write_text_atomic(Path(plans[0]) / "report.json", json.dumps(report, indent=1, sort_keys=True) + "\n")
    write_html(report, Path(plans[0]) / "report.html")


def _cmd_rollout(args) -> int:
    from .contract import METADATA_KEY
    from .frontend.load import import_onnx, read_onnx, require_rollout_spec

    with _progress(args) as progress:
        progress(0, 1, "importing")
        proto, source = read_onnx(args.model)
        mod = import_onnx(proto, _input_shapes(args), source, rollout=args.rollout)
    spec = require_rollout_spec(mod, source)
    if args.rollout:
        origin = f"from --rollout {args.rollout}"
    elif any(p.key == METADATA_KEY for p in proto.metadata_props):
        origin = "attached to the model (metadata key 'tvm_tqs.rollout')"
    else:
        origin = "inferred from the model's inputs and outputs"
    text = json.dumps(spec.to_dict(), indent=2, sort_keys=True)
    if args.json:
        print(text)
    else:
        print(f"rollout contract of {args.model} ({origin}; checked against the model):\n{text}")
    return 0


def _add_rollout_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rollout",
        metavar="JSON",
        help="rollout contract file (docs/rollout.md); overrides the one attached to or inferred from the model",
    )


def _add_progress_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--progress", action="store_true", help="progress bars even when stderr is not a terminal")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _add_model_args(p: argparse.ArgumentParser, target: str = "x86") -> None:
    p.add_argument("model", nargs="?", help="ONNX model file (or --example)")
    p.add_argument("--example", action="store_true", help="use the example model shipped in the package")
    p.add_argument(
        "--target", default=target, help=f"registered target name (see `tvm-tqs targets`); default {target}"
    )
    p.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME=DIMS",
        help="static shape for an input (window=1,96,7) or a symbolic dim (batch=4); repeatable",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=1,
        help="value for symbolic leading (batch) dims not set by --shape; default 1",
    )
    _add_rollout_arg(p)


EXIT_CODES = """exit codes:
  0    success
  2    usage or input error (bad option, unreadable or unsupported model, bad contract, ...)
  3    the budget cannot be met by any plan (the message names the smallest feasible value)
  4    a latency measurement failed (runner unreachable, the device could not run the model)
  130  interrupted (Ctrl-C); nothing is left on disk"""

EXAMPLES = {
    "inspect": "  tvm-tqs inspect --example\n  tvm-tqs inspect model.onnx --batch 4 --json",
    "score": "  tvm-tqs score model.onnx --mode weight --top 10\n"
    "  tvm-tqs score model.onnx --contexts windows.npy --out tqs.json\n"
    "  tvm-tqs score model.onnx --json > tqs.json",
    "compile": "  tvm-tqs compile --example --target arm_cpu --budget size=25% --out artifact/\n"
    "  tvm-tqs compile model.onnx --target x86 --budget latency=2ms --runner local --out art/\n"
    "  tvm-tqs compile model.onnx --target x86 --budget size=20% --error-model cross --out art/",
    "reliability": "  tvm-tqs reliability model.onnx --data ETTh1.csv --split 8640,2880,2880 --plan art/ --out rel/\n"
    "  tvm-tqs reliability model.onnx --data series.csv --budget size=25% --uniform int8 --json",
    "report": "  tvm-tqs report artifact/\n  tvm-tqs report artifact/ --out /tmp/plan.html",
    "rollout": "  tvm-tqs rollout model.onnx\n  tvm-tqs rollout model.onnx --rollout contract.json --json",
    "targets": "  tvm-tqs targets\n  tvm-tqs targets --json",
}


def _sub(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=f"examples:\n{EXAMPLES[name]}\n\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--verbose", action="store_true", help="also show TVM's own (C++) log lines")
    return p


def _score_parser(sub) -> None:
    p = _sub(sub, "score", "TQS: rank the fused ops by how their errors grow over the rollout")
    p.add_argument("model", help="ONNX model file with a rollout contract (attached or inferable)")
    p.add_argument("--horizon", type=int, default=96, help="rollout length in time steps; default 96")
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="replicates (context + noise draw); default 8, or one per --contexts window",
    )
    p.add_argument(
        "--mode",
        choices=["output", "weight"],
        default="output",
        help="perturb site results (any op) or the weights they read; default output",
    )
    p.add_argument("--eps", type=float, default=1e-3, help="relative perturbation size; default 1e-3")
    p.add_argument("--seed", type=int, default=0, help="seed for contexts, noise and bootstrap; default 0")
    p.add_argument(
        "--contexts",
        metavar="NPY",
        help="initial windows [S, lookback, channels] (.npy) instead of the data-free synthetic family",
    )
    p.add_argument(
        "--burn-in",
        type=int,
        default=None,
        metavar="CALLS",
        help="free-running model calls applied to the synthetic contexts first; default 4 "
        "(0 when the horizon is shorter than one call)",
    )
    p.add_argument("--no-linearity", action="store_true", help="skip the eps/2 linearity check")
    p.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME=DIMS",
        help="static value for a symbolic dim other than the batch (seq=96) or an input's full shape",
    )
    _add_rollout_arg(p)
    p.add_argument(
        "--path",
        choices=["auto", "rows", "calls"],
        default="auto",
        help="rows of an execution as batch rows of one call (rows) or one call each (calls); default auto",
    )
    p.add_argument(
        "--batch", type=int, default=None, help="rows per compiled rollout; default automatic (<= 128)"
    )
    p.add_argument("--top", type=int, default=None, help="show only the N highest-ranked sites")
    p.add_argument("--rank-by", choices=["tqs", "gain"], default="tqs", help="ranking key; default tqs")
    p.add_argument("--out", metavar="PATH", help="also write the full report as JSON to PATH")
    p.add_argument("--json", action="store_true", help="print the full report as JSON instead of the table")
    _add_progress_args(p)
    p.set_defaults(func=_cmd_score)


def _compile_parser(sub) -> None:
    p = _sub(sub, "compile", "plan per-op precisions under a budget, quantize, build, export")
    _add_model_args(p, target="arm_cpu")
    p.add_argument(
        "--budget", help="size=25%%|size=40kb|avg-bits=5|bops=30%%|latency=2ms (comma-separate to combine)"
    )
    p.add_argument("--uniform", choices=list(PRECISION_ORDER), help="same precision everywhere (no TQS)")
    p.add_argument("--plan", help="forced plan JSON file {site: precision} (no TQS)")
    p.add_argument(
        "--out", required=True, help="artifact directory to write (model.so, plan.json, report.json)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing artifact directory")
    p.add_argument("--horizon", type=int, default=96, help="TQS rollout horizon in time steps (default 96)")
    p.add_argument("--seeds", type=int, default=8, help="TQS replicates (default 8)")
    p.add_argument("--runner", help="latency runner: local | rpc://HOST:PORT/KEY | offline:DIR")
    p.add_argument("--solver", choices=list(SOLVER_METHODS), default="auto")
    p.add_argument(
        "--error-model",
        choices=list(ERROR_MODELS),
        default="cross",
        help="cross (default): measured interactions between weight groups; independent: groups add in "
        "variance, exact knapsack (docs/error_model.md)",
    )
    p.add_argument(
        "--quantizer",
        choices=list(QUANTIZERS),
        default="rtn",
        help="rtn (default) | mse | bitsplit (output reconstruction) | modcap (+ joint pairs; needs --calibration)",
    )
    p.add_argument(
        "--calibration",
        metavar="NPY",
        help="real windows [N, lookback, channels] (.npy) for bitsplit / modcap (default: data-free)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the plan, trace and artifact paths as JSON instead of tables",
    )
    _add_progress_args(p)
    p.set_defaults(func=_cmd_compile)


def _reliability_parser(sub) -> None:
    p = _sub(sub, "reliability", "worst-group rollout error of fp32 and quantized variants on real data")
    p.add_argument("model", help="ONNX model file with a rollout contract (attached or inferable)")
    p.add_argument("--data", required=True, metavar="CSV", help="real series: a CSV with a header row")
    p.add_argument(
        "--columns", help="the model's channels, comma-separated, in order; default every column but the date"
    )
    p.add_argument("--date-column", default="date", help="timestamps (month and season groups); default date")
    p.add_argument(
        "--split", default="0.7,0.1,0.2", help="train,val,test as fractions or rows; default 0.7,0.1,0.2"
    )
    p.add_argument(
        "--normalize",
        choices=["train", "none"],
        default="train",
        help="z-score with train rows' statistics (default)",
    )
    p.add_argument("--windows", type=int, default=256, help="test windows, evenly spaced; default 256")
    p.add_argument("--horizon", type=int, default=96, help="rollout steps scored; default 96")
    p.add_argument(
        "--plan", action="append", default=[], metavar="DIR", help="an artifact's plan (repeatable)"
    )
    p.add_argument(
        "--budget", action="append", default=[], help="a data-free TQS plan at this budget (repeatable)"
    )
    p.add_argument("--uniform", action="append", default=[], choices=list(PRECISION_ORDER), help="repeatable")
    p.add_argument("--shape", action="append", default=[], metavar="NAME=DIMS", help="as for compile")
    _add_rollout_arg(p)
    p.add_argument("--out", metavar="DIR", help="write reliability.json, .md and .png there")
    p.add_argument("--no-png", action="store_true", help="no PNG (it needs matplotlib)")
    p.add_argument("--attach", action="store_true", help="add the table to the --plan artifact's report")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    _add_progress_args(p)
    p.set_defaults(func=_cmd_reliability)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tvm-tqs",
        description="Trajectory-sensitivity-driven quantization on TVM",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = _sub(sub, "inspect", "list the fused ops of the compiled graph")
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_progress_args(p)
    p.set_defaults(func=_cmd_inspect)

    _score_parser(sub)

    _compile_parser(sub)

    p = _sub(sub, "report", "write the HTML report of an artifact directory (compile --out writes one too)")
    p.add_argument("artifact", help="artifact directory written by compile --out (reads its report.json)")
    p.add_argument("--out", metavar="HTML", help="where to write the report; default ARTIFACT/report.html")
    p.add_argument("--json", action="store_true", help='print {"report": PATH} instead of a sentence')
    p.set_defaults(func=_cmd_report)

    _reliability_parser(sub)

    p = _sub(sub, "rollout", "print the rollout contract in use (attached, inferred or --rollout)")
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="print only the contract's JSON")
    _add_progress_args(p)
    p.set_defaults(func=_cmd_rollout)

    p = _sub(sub, "targets", "list the registered hardware targets")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_targets)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "example"):
        if args.example == (args.model is not None):
            parser.error(f"{args.command}: give either MODEL or --example")
        if args.example:
            from .examples import example_model

            args.model = str(example_model())
    from .native_log import native_log_hidden

    try:
        with _INTERRUPTS, native_log_hidden(not args.verbose):
            return args.func(args)
    except BaseException as err:  # noqa: BLE001 - mapped to an exit code below, or raised again
        # A Ctrl-C inside a TVM pass reaches us wrapped in whatever the FFI makes of it (a bare
        # RuntimeError, a TVMError, or our own error around the importer's): the signal decides.
        if isinstance(err, KeyboardInterrupt) or (_INTERRUPTS.seen and not isinstance(err, SystemExit)):
            print(f"tvm-tqs {args.command}: interrupted", file=sys.stderr)
            return 130
        code = _exit_code(err)
        if code is None:
            raise
        print(f"tvm-tqs {args.command}: error: {err}", file=sys.stderr)
        return code


def _exit_code(err: BaseException) -> int | None:
    """The documented exit code of an error (EXIT_CODES); None for a bug (let the traceback show)."""
    from .solver import InfeasibleBudgetError

    if isinstance(err, InfeasibleBudgetError):
        return 3
    if isinstance(err, MeasurementError):
        return 4
    if isinstance(err, (TQSError, OSError)):  # OSError: a file that cannot be read or written
        return 2
    return None


_INTERRUPTS = Interrupts()  # Ctrl-C, remembered: TVM may swallow the KeyboardInterrupt

if __name__ == "__main__":
    sys.exit(main())
