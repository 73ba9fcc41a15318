"""Fixtures shared by the aarch64 tests: the qemu runner binary, prepared once per session."""

from __future__ import annotations

import subprocess

import pytest
import qemu_runner


@pytest.fixture(scope="session")
def qemu_aarch64_runner():
    """Path of the aarch64 loader (tests/qemu_runner); skips when its runtime cannot be prepared."""
    if not qemu_runner.available():
        pytest.skip("qemu-aarch64 / aarch64-linux-gnu-g++ not installed")
    try:
        return qemu_runner.setup()
    except subprocess.CalledProcessError as e:  # first use downloads the aarch64 wheels (network)
        pytest.skip(f"cannot prepare the aarch64 runtime: {e.stderr!r:.300}")
    except (RuntimeError, OSError) as e:
        pytest.skip(f"cannot prepare the aarch64 runtime: {e}")
