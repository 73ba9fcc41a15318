"""The tvm-tqs command line, run as a real process: tables, JSON, and one-paragraph errors (no tracebacks)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import onnx
import pytest
from cli_runner import run_cli
from onnx_builders import mlp_forecaster, with_unsupported_ops


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "mlp.onnx"
    onnx.save(mlp_forecaster(), str(path))
    return path


def test_console_script_is_installed():
    assert shutil.which("tvm-tqs", path=str(Path(sys.executable).parent)), "console script tvm-tqs missing"


def test_inspect_prints_a_table(model_path):
    code, out, err = run_cli("inspect", str(model_path))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["site", "prim_func", "fused", "ops"]
    assert any("matmul+add+relu" in line for line in lines)
    assert lines[-1].startswith("4 fused call sites")


def test_inspect_json_with_shapes(model_path):
    code, out, _ = run_cli("inspect", str(model_path), "--json", "--shape", "window=3,16,2")
    assert code == 0
    table = json.loads(out)
    assert table[0]["inputs"][0]["shape"] == [3, 16, 2]
    assert {"index", "func", "kinds", "inputs", "outputs", "weights", "macs", "anchor"} <= set(table[0])


def _dynamic_time(path):
    model = mlp_forecaster()
    dim = model.graph.input[0].type.tensor_type.shape.dim[1]
    dim.Clear()
    dim.dim_param = "time"
    onnx.save(model, str(path))


@pytest.mark.parametrize(
    "make, args, expect",
    [
        (lambda p: p.write_bytes(b"\x00\x01garbage" * 10), [], "is not an ONNX model or is corrupt"),
        (lambda p: onnx.save(with_unsupported_ops(), str(p)), [], "Celu x2 (first node 'celu_first')"),
        (_dynamic_time, [], "input 'window' dimension 1 ('time') is dynamic"),
        (
            lambda p: onnx.save(mlp_forecaster(), str(p)),
            ["--batch", "0"],
            "input_shapes['batch'] must be a positive int, got 0",
        ),
    ],
    ids=["corrupt", "unsupported-op", "missing-shape", "bad-batch"],
)
def test_bad_input_gives_one_paragraph_error(tmp_path, make, args, expect):
    path = tmp_path / "bad.onnx"
    make(path)
    code, _, err = run_cli("inspect", str(path), *args)
    assert code == 2
    assert "Traceback" not in err
    assert err.startswith("tvm-tqs inspect: error: ")
    assert expect in err
    assert err.count("\n") == 1


def test_targets_lists_registry():
    code, out, _ = run_cli("targets")
    assert code == 0
    for name in ["x86", "arm_cpu/cortex-a76", "arm_cpu/neoverse-v1", "cuda/jetson-orin", "opencl/adreno"]:
        assert name in out


def test_tvm_native_log_lines_are_hidden_unless_verbose():
    # etth1_patchtst6's Gather ops make TVM's C++ code log "Fast mode segfaults ..." to fd 2 when lowered
    model = str(
        Path(__file__).resolve().parents[1] / "benchmarks" / "zoo" / "models" / "etth1_patchtst6.onnx"
    )
    code, out, err = run_cli("inspect", model)
    assert code == 0 and "Fast mode" not in err and "Fast mode" not in out
    code, _, err = run_cli("inspect", model, "--verbose")
    assert code == 0 and "Fast mode segfaults" in err


@pytest.mark.parametrize(
    "command", ["inspect", "score", "compile", "report", "reliability", "rollout", "targets"]
)
def test_every_command_has_help_with_examples_and_exit_codes(command):
    code, out, _ = run_cli(command, "--help")
    assert code == 0
    assert f"tvm-tqs {command}" in out.split("examples:")[1]
    assert "exit codes:" in out and "3    the budget cannot be met" in out


def test_exit_codes_distinguish_usage_budget_and_success(tmp_path):
    code, _, err = run_cli(
        "compile", "--example", "--target", "x86", "--uniform", "int9", "--out", str(tmp_path / "a")
    )
    assert code == 2 and "int9" in err  # argparse: usage error
    code, _, err = run_cli("compile", "--example", "--budget", "size=1b", "--out", str(tmp_path / "b"))
    assert code == 3 and "smallest feasible" in err and not (tmp_path / "b").exists()
    code, out, _ = run_cli("targets", "--json")
    assert code == 0 and json.loads(out)


@pytest.mark.parametrize(
    "args",
    [
        ("inspect", "--example"),
        ("score", "--horizon", "8", "--seeds", "2"),
        ("rollout", "--example"),
        ("targets",),
    ],
    ids=lambda a: a[0],
)
def test_json_output_is_pure_json_and_no_progress_off_a_terminal(args):
    from tvm_tqs.examples import example_model

    if args[0] == "score":  # score takes a model path, not --example
        args = ("score", str(example_model()), *args[1:])
    code, out, err = run_cli(*args, "--json")
    assert code == 0, err
    assert json.loads(out)
    assert "%|" not in err and "it/s" not in err  # stderr is not a terminal here: no bars
