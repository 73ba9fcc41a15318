"""Prepare the emulated aarch64 RPC server (and optionally run it): see tests/qemu_rpc/__init__.py.

python tests/qemu_rpc/prepare.py [--cache DIR]                       # download + unpack, once
python tests/qemu_rpc/prepare.py --serve 127.0.0.1:9190 --key arm64-qemu   # and serve (foreground)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import qemu_rpc  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default=None, help=f"cache directory (default {qemu_rpc.cache_dir()})")
    p.add_argument(
        "--serve", default=None, metavar="HOST:PORT", help="then run an RPC server for this tracker"
    )
    p.add_argument("--key", default="arm64-qemu")
    a = p.parse_args(argv)
    try:
        wrapper = qemu_rpc.setup(a.cache)
    except qemu_rpc.QemuRPCUnavailable as err:
        print(f"qemu RPC server unavailable: {err}", file=sys.stderr)
        return 2
    print(wrapper)
    if a.serve:
        return subprocess.call(
            [
                str(wrapper),
                "-m",
                "tvm.exec.rpc_server",
                "--tracker",
                a.serve,
                "--key",
                a.key,
                "--host",
                "127.0.0.1",
                "--port",
                "9300",
                "--port-end",
                "9400",
            ],
            cwd=str(wrapper.parent),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
