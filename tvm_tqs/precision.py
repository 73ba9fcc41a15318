"""The precisions a fused op can take: one registry that every other module asks.

Adding a precision means one entry here plus its kernels (targets/kernels) and its packing (passes).
Nothing here imports TVM, so targets/ and the TVM-free solver can use it too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import TQSError

# int4 weights carry one fp32 scale per `INT4_GROUP` consecutive reduction elements of an output channel.
INT4_GROUP = 32
_SCALE_BYTES = 4  # fp32 scales


@dataclass(frozen=True)
class Precision:
    """How one precision stores weights and what its kernels compute in.

    Parameters
    ----------
    name : str
        The vocabulary word (plans, CLI, reports).
    bits : int
        Weight bits.
    act_bits : int
        Activation bits of the arithmetic, for BOPs: the integer kernels quantize activations to int8; fp16 is
        weight-only (fp32 arithmetic) on CPUs.
    integer : bool
        Integer weights with fp32 scales (per output channel, or per group along the reduction).
    group_size : int or None
        Default reduction elements per scale; None: one scale per output channel (or no scale for floats).
    """

    name: str
    bits: int
    act_bits: int
    integer: bool
    group_size: int | None = None

    def storage_bytes(self, size: int, channels: int, group_size: int | None = None) -> float:
        """Bytes of a weight of `size` elements with `channels` output channels, scales included."""
        if not self.integer:
            return size * self.bits / 8
        if self.group_size is None:
            return size * self.bits / 8 + channels * _SCALE_BYTES
        groups = math.ceil((size // channels) / (group_size or self.group_size))
        return size * self.bits / 8 + channels * groups * _SCALE_BYTES

    def bops(self, macs: int) -> float:
        return float(macs * self.bits * self.act_bits)


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", bits=32, act_bits=32, integer=False),
        Precision("fp16", bits=16, act_bits=32, integer=False),
        Precision("int8", bits=8, act_bits=8, integer=True),
        Precision("int4", bits=4, act_bits=8, integer=True, group_size=INT4_GROUP),
    )
}
# Most to least precise: the order options are listed in and ties are broken by.
PRECISION_ORDER: tuple[str, ...] = tuple(PRECISIONS)
FLOAT = "fp32"


def precision(name: str, what: str = "precision") -> Precision:
    """The registered precision `name`; a clear error naming `what` otherwise."""
    try:
        return PRECISIONS[name]
    except (KeyError, TypeError):
        raise TQSError(f"{what} {name!r} is not one of {', '.join(PRECISION_ORDER)}") from None
