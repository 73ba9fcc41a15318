"""Named hardware targets: the TVM target, ISA features, precisions per op kind, and how to build for it."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import tvm

from tvm_tqs.errors import TQSError
from tvm_tqs.precision import PRECISION_ORDER

from .host import host_cpu, host_features

PRECISIONS = PRECISION_ORDER
# Op kinds that carry weights and have integer kernels; everything else runs in float.
WEIGHTED_KINDS = ("matmul", "conv1d", "conv2d", "dense")


class UnknownTargetError(TQSError):
    """A target name that is not registered."""


@dataclass(frozen=True)
class TargetSpec:
    """One named deployment target.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"arm_cpu/cortex-a76"``.
    tvm_target : dict
        The TVM target in dict form (TVM 0.27 rejects ``"llvm -mcpu=..."`` strings).
    kind : {"x86", "arm_cpu", "cuda", "opencl"}
        Target family: selects the kernel/schedule set.
    features : tuple of str
        ISA features the schedules may use (``avx512vnni``, ``dotprod``, ``i8mm``, ``dp4a``, ...).
    precisions : dict
        Precisions available per weighted op kind; other ops stay fp32 (or fp16 where listed).
    cross_compiler : str or None
        C++ compiler for `export_library` when the target is not this host.
    runnable_here : bool
        Whether artifacts for it run on this machine natively (x86 host) for measurement.
    description : str
        One line for `tvm-tqs targets`.
    """

    name: str
    tvm_target: dict
    kind: str
    features: tuple[str, ...]
    precisions: dict = field(hash=False)
    cross_compiler: str | None = None
    runnable_here: bool = False
    description: str = ""

    def target(self) -> tvm.target.Target:
        return tvm.target.Target(self.tvm_target)


def _host_features() -> tuple[str, ...]:
    """The host's features in the registry's order (the entry's `features`)."""
    have = host_features()
    return tuple(f for f in ("avx2", "avx512f", "avx512vnni", "avxvnni") if f in have)


_INT = {k: PRECISION_ORDER for k in WEIGHTED_KINDS}
_GPU = {k: PRECISION_ORDER for k in WEIGHTED_KINDS}
_ARM_TRIPLE = "aarch64-linux-gnu"
_ARM_CC = "aarch64-linux-gnu-g++"


def _arm(name: str, mcpu: str, mattr: list[str], features: tuple[str, ...], description: str) -> TargetSpec:
    return TargetSpec(
        name=name,
        tvm_target={"kind": "llvm", "mtriple": _ARM_TRIPLE, "mcpu": mcpu, "mattr": mattr},
        kind="arm_cpu",
        features=features,
        precisions=_INT,
        cross_compiler=_ARM_CC,
        description=description,
    )


@functools.cache
def registry() -> dict[str, TargetSpec]:
    """All registered targets by name (built once; the host entry reads this machine's CPU)."""
    cpu = host_cpu()
    specs = [
        TargetSpec(
            name="x86",
            tvm_target={"kind": "llvm", "mcpu": cpu},
            kind="x86",
            features=_host_features(),
            precisions=_INT,
            runnable_here=True,
            description=f"this x86_64 host (LLVM cpu '{cpu}'); int8 via AVX-512 VNNI, AVX2 fallback",
        ),
        _arm("arm_cpu", "generic", ["+neon"], ("neon",), "generic aarch64 with NEON (int8 via smull/sadalp)"),
        _arm(
            "arm_cpu/cortex-a72",
            "cortex-a72",
            ["+neon"],
            ("neon",),
            "Cortex-A72 (Raspberry Pi 4): NEON, no dotprod",
        ),
        _arm(
            "arm_cpu/cortex-a76",
            "cortex-a76",
            ["+neon", "+dotprod"],
            ("neon", "dotprod"),
            "Cortex-A76 / Neoverse-N1 (Raspberry Pi 5, Graviton2): NEON + sdot",
        ),
        _arm(
            "arm_cpu/neoverse-v1",
            "neoverse-v1",
            ["+neon", "+dotprod", "+i8mm"],
            ("neon", "dotprod", "i8mm"),
            "Neoverse-V1 (Graviton3) and i8mm Cortex-A: NEON + sdot + smmla",
        ),
        TargetSpec(
            name="cuda/jetson-orin",
            tvm_target={"kind": "cuda", "arch": "sm_87", "host": {"kind": "llvm", "mtriple": _ARM_TRIPLE}},
            kind="cuda",
            features=("dp4a", "fp16"),
            precisions=_GPU,
            cross_compiler=_ARM_CC,
            description="NVIDIA Jetson Orin (sm_87, aarch64 host): int8/int4 via __dp4a, dlight for the rest",
        ),
        TargetSpec(
            name="cuda/sm_90",
            tvm_target={"kind": "cuda", "arch": "sm_90", "host": {"kind": "llvm"}},
            kind="cuda",
            features=("dp4a", "fp16"),
            precisions=_GPU,
            description="NVIDIA Hopper (H100/H200, sm_90), x86_64 host: int8/int4 via __dp4a, dlight for the rest",
        ),
        TargetSpec(
            name="opencl/mali",
            tvm_target={"kind": "opencl", "device": "mali", "host": {"kind": "llvm", "mtriple": _ARM_TRIPLE}},
            kind="opencl",
            features=("fp16",),
            precisions=_GPU,
            cross_compiler=_ARM_CC,
            description="Arm Mali GPU through OpenCL (aarch64 host): int8/int4 integer kernels, dlight for the rest",
        ),
        TargetSpec(
            name="opencl/adreno",
            tvm_target={
                "kind": "opencl",
                "device": "adreno",
                "host": {"kind": "llvm", "mtriple": _ARM_TRIPLE},
            },
            kind="opencl",
            features=("fp16",),
            precisions=_GPU,
            cross_compiler=_ARM_CC,
            description="Qualcomm Adreno GPU through OpenCL (aarch64 host): int8/int4 integer kernels, dlight for the rest",
        ),
    ]
    return {s.name: s for s in specs}


def get_target(name: str | TargetSpec) -> TargetSpec:
    """Look a target up by name; an unknown name lists the valid ones."""
    if isinstance(name, TargetSpec):
        return name
    table = registry()
    if name not in table:
        raise UnknownTargetError(f"unknown target '{name}'; valid targets: {', '.join(table)}")
    return table[name]
