"""Packaging: passes/ and targets/ install under tvm_tqs only, and every package directory is listed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
MAPPING = {"tvm_tqs": "tvm_tqs", "tvm_tqs.passes": "passes", "tvm_tqs.targets": "targets"}


def test_subpackages_import_under_tvm_tqs():
    import tvm_tqs.passes  # noqa: F401
    import tvm_tqs.targets  # noqa: F401


@pytest.mark.parametrize("name", ["passes", "targets"])
def test_bare_names_do_not_import_even_from_the_repo_root(name):
    proc = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    assert f"installs as tvm_tqs.{name}" in proc.stderr


def test_every_package_directory_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == MAPPING
    found = set()
    for package, directory in MAPPING.items():
        for init in (ROOT / directory).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / directory).parts
            found.add(".".join((package, *rel)))
    assert found == set(config["packages"])
