"""The tutorials run end to end (slow: each compiles one or more models), each in a fresh directory."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*.py"))


def test_tutorials_are_numbered_and_say_what_and_how_long():
    numbers = [p.name.split("_", 1)[0] for p in TUTORIALS]
    assert len(TUTORIALS) >= 6 and all(re.fullmatch(r"\d\d", n) for n in numbers), numbers
    assert len(set(numbers)) == len(numbers), numbers
    for path in TUTORIALS:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert doc.startswith(f"Tutorial {int(path.name[:2])}:"), path.name
        assert "Time:" in doc and "Run: python tutorials/" in doc, path.name


@pytest.mark.slow
@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path):
    # A tutorial writes only into its working directory: the user's latency cache must stay untouched.
    user_cache = tmp_path / "user-cache" / "latency.jsonl"
    env = {**os.environ, "TVM_TQS_LATENCY_CACHE": str(user_cache)}
    proc = subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"tutorial {int(path.name[:2])} done" in proc.stdout, proc.stdout[-3000:]
    assert not user_cache.exists()
