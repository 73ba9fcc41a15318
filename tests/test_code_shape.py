"""The house rules that keep the code readable: small units, and no reaching into private names from outside."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = [p for d in ("tvm_tqs", "passes", "targets") for p in sorted((ROOT / d).rglob("*.py"))]
MAX_FILE_LINES, MAX_FUNCTION_LINES = 600, 120


def test_no_library_file_or_function_is_oversized():
    problems = []
    for path in LIBRARY:
        text = path.read_text()
        if text.count("\n") > MAX_FILE_LINES:
            problems.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert not problems, problems


@pytest.mark.parametrize("folder", ["benchmarks", "tutorials"])
def test_benchmarks_and_tutorials_use_only_public_names(folder):
    problems = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tvm_tqs"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                private += [part for part in node.module.split(".") if part.startswith("_")]
                if private:
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module} {private}")
    assert not problems, problems
