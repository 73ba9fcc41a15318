"""An aarch64 TVM RPC server under qemu-aarch64 (user mode): a remote "board" for tests, no hardware.

``setup()`` prepares once per cache directory (``$TQS_QEMU_RPC_CACHE``, default
``~/.cache/tvm_tqs/qemu-rpc``):

- ``sysroot/``: an arm64 Debian bookworm sysroot with Python 3.11 (the dependency closure of
  python3.11-minimal, libpython3.11-stdlib and libstdc++6), downloaded by ``apt-get`` run with a
  private state directory and ``APT::Architecture=arm64`` (the system's dpkg configuration is not
  touched, no root needed), unpacked with ``dpkg -x``; signatures are checked with the host's
  ``debian-archive-keyring``.
- ``site/``: the aarch64 wheels of the host's apache-tvm and apache-tvm-ffi versions, numpy,
  cloudpickle and psutil (``pip install --target --platform manylinux_2_28_aarch64
  --only-binary=:all: --python-version 3.11``).
- ``python3``: a wrapper ``exec qemu-aarch64 -L sysroot -0 <wrapper> sysroot/usr/bin/python3.11``.
  Passing the wrapper as argv[0] makes it ``sys.executable`` of the emulated Python, so the child
  processes the RPC server starts also go through qemu (binfmt is not registered on these hosts).

``start_server(tracker, key)`` then runs ``python -m tvm.exec.rpc_server`` under it (setsid; register
time about 25 s on 2 cores, then upload/run/time_evaluator work; emulated timings mean nothing).

Unavailable pieces raise `QemuRPCUnavailable` with the reason (tests skip on it): qemu-aarch64 or
aarch64-linux-gnu-g++ missing, no apt-get/dpkg or Debian keyring, no network for apt or pip.

CLI (e.g. for CI caching): ``python tests/qemu_rpc/prepare.py [--cache DIR] [--serve HOST:PORT --key KEY]``.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["QemuRPCUnavailable", "cache_dir", "missing_tools", "setup", "start_server"]

QEMU = "qemu-aarch64"
CROSS_CXX = "aarch64-linux-gnu-g++"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
MIRROR = os.environ.get("TQS_QEMU_RPC_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"  # its python3.11 matches the cp311 tvm-ffi wheel
PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6")
PLATFORM = "manylinux_2_28_aarch64"


class QemuRPCUnavailable(RuntimeError):
    """Something the emulated RPC server needs is missing; the message says what."""


def cache_dir() -> Path:
    return Path(os.environ.get("TQS_QEMU_RPC_CACHE", Path.home() / ".cache" / "tvm_tqs" / "qemu-rpc"))


def missing_tools() -> str | None:
    """Why the emulated server cannot be prepared on this host (None when the tools are there)."""
    for tool, hint in (
        (QEMU, "apt-get install qemu-user"),
        (CROSS_CXX, "apt-get install g++-aarch64-linux-gnu"),
        ("apt-get", "a Debian/Ubuntu host"),
        ("dpkg", "a Debian/Ubuntu host"),
    ):
        if shutil.which(tool) is None:
            return f"{tool} not found ({hint})"
    if not Path(KEYRING).exists():
        return f"{KEYRING} not found (apt-get install debian-archive-keyring)"
    return None


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise QemuRPCUnavailable(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")
    return proc


def _sysroot(cache: Path) -> Path:
    root = cache / "sysroot"
    if (root / ".done").exists():
        return root
    apt = cache / "apt"
    for sub in ("state/lists/partial", "cache/archives/partial", "etc"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "status").touch()
    (apt / "etc" / "sources.list").write_text(f"deb [arch=arm64 signed-by={KEYRING}] {MIRROR} {SUITE} main\n")
    opts = [
        "-o",
        f"Dir::State={apt / 'state'}",
        "-o",
        f"Dir::State::status={apt / 'status'}",
        "-o",
        f"Dir::Cache={apt / 'cache'}",
        "-o",
        f"Dir::Etc::SourceList={apt / 'etc' / 'sources.list'}",
        "-o",
        "Dir::Etc::SourceParts=-",
        "-o",
        "APT::Architecture=arm64",
        "-o",
        "APT::Architectures::=arm64",
        "-o",
        "Debug::NoLocking=1",
        "-qq",
    ]
    _run(["apt-get", *opts, "update"], "apt-get update (arm64 package lists)", timeout=600)
    # apt-get update exits 0 when a mirror is unreachable (it only warns): check that lists came.
    if not any((apt / "state" / "lists").glob("*_Packages*")):
        raise QemuRPCUnavailable(
            f"could not download the arm64 package lists from {MIRROR} (no network access?)"
        )
    # With an empty status file apt resolves the whole dependency closure (libc6 and all) and
    # --download-only fetches it without installing anything.
    _run(
        ["apt-get", *opts, "-y", "--no-install-recommends", "--download-only", "install", *PACKAGES],
        "apt-get download of the arm64 Python",
        timeout=1200,
    )
    tmp = cache / "sysroot.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for deb in sorted((apt / "cache" / "archives").glob("*.deb")):
        _run(["dpkg", "-x", str(deb), str(tmp)], f"dpkg -x {deb.name}")
    if not (tmp / "usr" / "bin" / "python3.11").exists():
        raise QemuRPCUnavailable("the arm64 sysroot has no usr/bin/python3.11")
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    (root / ".done").touch()
    return root


def _site(cache: Path) -> Path:
    site = cache / "site"
    pins = [
        f"apache-tvm=={importlib.metadata.version('apache-tvm')}",
        f"apache-tvm-ffi=={importlib.metadata.version('apache-tvm-ffi')}",
    ]
    stamp = " ".join(pins)
    if (site / ".done").exists() and (site / ".done").read_text() == stamp:
        return site
    tmp = cache / "site.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--target",
            str(tmp),
            "--platform",
            PLATFORM,
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--only-binary=:all:",
            *pins,
            "numpy",
            "cloudpickle",
            "psutil",
        ],
        "pip install of the aarch64 wheels",
        timeout=1200,
    )
    shutil.rmtree(site, ignore_errors=True)
    os.replace(tmp, site)
    (site / ".done").write_text(stamp)
    return site


def setup(cache: str | os.PathLike | None = None) -> Path:
    """Prepare (once) and return the wrapper: an executable that runs the aarch64 Python under qemu."""
    reason = missing_tools()
    if reason:
        raise QemuRPCUnavailable(reason)
    cache = Path(cache) if cache is not None else cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    root = _sysroot(cache)
    site = _site(cache)
    wrapper = cache / "python3"
    text = (
        "#!/bin/sh\n"
        "# aarch64 Python under qemu; argv0 = this file, so sys.executable re-enters qemu in child processes\n"
        f"PYTHONPATH='{site}' PYTHONHOME=/usr PYTHONNOUSERSITE=1 "
        f"exec {shutil.which(QEMU)} -L '{root}' -0 '{wrapper}' '{root}/usr/bin/python3.11' \"$@\"\n"
    )
    if not wrapper.exists() or wrapper.read_text() != text:
        wrapper.write_text(text)
        wrapper.chmod(0o755)
    return wrapper


def start_server(
    tracker: str,
    key: str,
    *,
    cache: str | os.PathLike | None = None,
    port: int = 9300,
    port_end: int = 9400,
    log: str | os.PathLike | None = None,
) -> subprocess.Popen:
    """Start an emulated aarch64 RPC server registering with `tracker` ("host:port") under `key`.

    Its own session (setsid): stop it with ``os.killpg(proc.pid, signal.SIGKILL)``. It takes ~25 s to
    register (importing tvm under emulation).
    """
    wrapper = setup(cache)
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        [
            str(wrapper),
            "-m",
            "tvm.exec.rpc_server",
            "--tracker",
            tracker,
            "--key",
            key,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--port-end",
            str(port_end),
        ],
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=str(wrapper.parent),
    )


def wait_for_servers(host: str, port: int, key: str, count: int = 1, timeout_s: float = 180.0) -> None:
    """Wait until `count` servers are registered under `key` (raises TimeoutError)."""
    from tvm import rpc

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            tracker = rpc.connect_tracker(host, port)
            try:
                info = tracker.summary()
            finally:
                tracker.close()
            keys = [str(s.get("key", "")).split(":", 1)[-1] for s in info.get("server_info", [])]
            if keys.count(key) >= count:
                return
        except (OSError, RuntimeError):
            pass
        time.sleep(1.0)
    raise TimeoutError(f"no {count} server(s) under key '{key}' at {host}:{port} after {timeout_s:g} s")
