"""Failing safely from the command line: `tvm-tqs` as a real process, fed bad input, exits with the
documented code (2 input, 3 infeasible budget, 4 measurement, 130 Ctrl-C), prints one paragraph naming
the culprit (no traceback) and leaves nothing on disk (docs/reliability.md)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_runner import run_cli
from onnx import numpy_helper
from onnx_builders import mlp_forecaster


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_inputs")
    model = mlp_forecaster()
    onnx.save(model, d / "mlp.onnx")
    data = (d / "mlp.onnx").read_bytes()
    (d / "truncated.onnx").write_bytes(data[: len(data) // 2])
    nan = onnx.ModelProto()
    nan.CopyFrom(model)
    w = numpy_helper.to_array(nan.graph.initializer[0]).copy()
    w[0, 0] = np.nan
    nan.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "w1"))
    onnx.save(nan, d / "nan.onnx")
    np.save(d / "wrong_contexts.npy", np.zeros((2, 15, 2), np.float32))
    (d / "binary.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    (d / "list.json").write_text("[1, 2]")
    (d / "a_file").write_text("x")
    return d


def _clean(err: str) -> None:
    assert "Traceback" not in err and err.count("error:") == 1, err


def _nothing_left(out: Path) -> None:
    """No artifact and no temporary sibling (`.NAME.*`) of it."""
    assert not out.exists(), f"{out} was left behind"
    siblings = (
        [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
        if out.parent.is_dir()
        else []
    )
    assert siblings == [], siblings


SLOW = (
    pytest.mark.slow
)  # each CLI process pays ~6 s of TVM import on a 2-core host: the rest run with -m slow


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        pytest.param(["inspect", "{d}/truncated.onnx"], ["truncated.onnx", "corrupt"], id="truncated"),
        pytest.param(["inspect", "{d}/nan.onnx"], ["initializer 'w1'", "NaN"], id="nan-weights", marks=SLOW),
        pytest.param(
            ["inspect", "{d}/mlp.onnx", "--target", "arm_cpu/nonexistent"],
            ["unknown target 'arm_cpu/nonexistent'"],
            id="unknown-target",
            marks=SLOW,
        ),
        pytest.param(["score", "{d}/mlp.onnx", "--seeds", "0"], ["seeds must be >= 1, got 0"], id="seeds-0"),
        pytest.param(
            ["score", "{d}/mlp.onnx", "--horizon", "0"],
            ["horizon must be >= 1, got 0"],
            id="horizon-0",
            marks=SLOW,
        ),
        pytest.param(
            ["score", "{d}/mlp.onnx", "--contexts", "{d}/wrong_contexts.npy"],
            ["input 'window'", "got [2, 15, 2]"],
            id="contexts-shape",
            marks=SLOW,
        ),
        pytest.param(
            ["rollout", "{d}/mlp.onnx", "--rollout", "{d}/binary.json"],
            ["binary.json", "not a text (JSON) file"],
            id="binary-rollout",
        ),
    ],
)
def test_bad_model_inputs_exit_2_with_one_paragraph(files, args, fragments):
    code, out, err = run_cli(*[a.format(d=files) for a in args])
    assert code == 2, (code, out, err)
    _clean(err)
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize(
    ("args", "code", "fragments"),
    [
        pytest.param(
            ["--budget", "size=-5%"],
            2,
            ["size_bytes must be a positive finite number"],
            id="negative-size",
            marks=SLOW,
        ),
        pytest.param(
            ["--budget", "size=25%,size=30%"], 2, ["budget gives size twice"], id="size-twice", marks=SLOW
        ),
        pytest.param(
            ["--plan", "{d}/binary.json"], 2, ["cannot read --plan", "binary.json"], id="binary-plan"
        ),
        pytest.param(["--plan", "{d}/list.json"], 2, ["plan must be a mapping", "list"], id="list-plan"),
        pytest.param(
            ["--uniform", "int8", "--horizon", "0"],
            2,
            ["horizon must be a positive integer, got 0"],
            id="horizon-0",
            marks=SLOW,
        ),
        pytest.param(
            [
                "--budget",
                "latency=1ms",
                "--runner",
                "rpc://127.0.0.1:1/board",
                "--horizon",
                "8",
                "--seeds",
                "2",
            ],
            4,
            ["cannot reach the TVM RPC tracker at 127.0.0.1:1", "'board'"],
            id="rpc-unreachable",
            marks=SLOW,
        ),
    ],
)
def test_bad_compile_options_exit_with_their_code_and_write_nothing(files, tmp_path, args, code, fragments):
    out = tmp_path / "art"
    got, stdout, err = run_cli(
        "compile",
        str(files / "mlp.onnx"),
        "--target",
        "x86",
        *[a.format(d=files) for a in args],
        "--out",
        str(out),
    )
    assert got == code, (got, stdout, err)
    _clean(err)
    for fragment in fragments:
        assert fragment in err, err
    _nothing_left(out)


def test_out_paths_that_cannot_become_an_artifact_are_refused_before_any_work(files, tmp_path):
    blocker = files / "a_file"
    code, _, err = run_cli(
        "compile", str(files / "mlp.onnx"), "--uniform", "int8", "--out", str(blocker), "--overwrite"
    )
    assert code == 2 and "is a file, not an artifact directory" in err, err
    assert blocker.read_text() == "x"  # --overwrite never deletes what is not an artifact
    if os.geteuid() == 0:  # root ignores permission bits: a file in place of a parent directory instead
        out, why = blocker / "sub" / "art", f"'{blocker}' is a file, not a directory"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        out, why = ro / "art", f"'{ro}' is not writable"
    start = time.time()
    code, _, err = run_cli("compile", str(files / "mlp.onnx"), "--uniform", "int8", "--out", str(out))
    assert code == 2 and why in err, err
    _clean(err)
    assert not out.exists() and time.time() - start < 60


@SLOW
def test_an_out_path_the_disk_refuses_at_export_time_leaves_nothing(files):
    # /proc takes no new directories, even for root: the export fails after the build, cleanly.
    out = Path("/proc/tvm-tqs-art")
    code, _, err = run_cli(
        "compile", str(files / "mlp.onnx"), "--target", "x86", "--uniform", "int8", "--out", str(out)
    )
    assert code == 2, err
    _clean(err)
    assert "cannot write the artifact to '/proc/tvm-tqs-art'" in err and "No such file or directory" in err
    _nothing_left(out)


# ------------------------------------------------------------------------------------------------
# Ctrl-C during compile: exit 130, "interrupted", nothing on disk
# ------------------------------------------------------------------------------------------------
def _interrupt_compile(out: Path, when: str) -> tuple[int, str]:
    """Start `tvm-tqs compile --progress`, send SIGINT once stderr shows the step `when`; (code, stderr)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tvm_tqs",
            "compile",
            "--example",
            "--target",
            "x86",
            "--budget",
            "size=25%",
            "--horizon",
            "24",
            "--seeds",
            "2",
            "--progress",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    seen = b""
    deadline = time.time() + 120
    try:
        while when.encode() not in seen and time.time() < deadline and proc.poll() is None:
            ready, _, _ = select.select([proc.stderr], [], [], 1.0)
            if ready:
                seen += os.read(proc.stderr.fileno(), 65536)
        assert when.encode() in seen, f"the compile never reached '{when}': {seen[-2000:]!r}"
        time.sleep(0.3)  # inside the step's TVM work, not at its first line
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=120)  # bounded: no hang after Ctrl-C
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, (seen + rest).decode(errors="replace")


@pytest.mark.parametrize("when", ["importing and fusing", pytest.param("scoring", marks=SLOW)])
def test_ctrl_c_during_compile_exits_130_and_leaves_nothing(tmp_path, when):
    out = tmp_path / "art"
    code, err = _interrupt_compile(out, when)
    assert code == 130, err[-3000:]
    assert "tvm-tqs compile: interrupted" in err and "Traceback" not in err
    _nothing_left(out)


@SLOW
def test_json_error_paths_keep_stdout_clean(files, tmp_path):
    code, out, err = run_cli(
        "compile", str(files / "mlp.onnx"), "--budget", "foo=3", "--json", "--out", str(tmp_path / "a")
    )
    assert code == 2 and out == "" and "budget 'foo=3'" in err
    code, out, _ = run_cli("targets", "--json")
    assert code == 0 and json.loads(out)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ("InfeasibleBudgetError('budget cannot be met')", 3),
        ("RPCUnavailableError('cannot reach the TVM RPC tracker')", 4),
        ("MeasurementError('measuring failed')", 4),
        ("ExportError('cannot write the artifact')", 2),
        ("OSError(28, 'No space left on device', 'out/report.json')", 2),
        ("TQSError('bad option')", 2),
        ("KeyError('bug')", None),  # a bug keeps its traceback
    ],
)
def test_every_error_class_maps_to_its_documented_exit_code(error, code):
    from tvm_tqs import errors
    from tvm_tqs.cli import _exit_code
    from tvm_tqs.latency import RPCUnavailableError
    from tvm_tqs.solver import InfeasibleBudgetError

    names = {
        **vars(errors),
        "RPCUnavailableError": RPCUnavailableError,
        "InfeasibleBudgetError": InfeasibleBudgetError,
    }
    assert _exit_code(eval(error, names)) == code
