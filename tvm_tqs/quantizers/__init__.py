"""Weight quantizers behind one interface: ``quantizer(w, bits, channel_axis, group_size) -> QuantizedWeight``.

- `rtn`: round-to-nearest, scale = max|w| / qmax per channel or group;
- `mse`: the clipped scale minimising the squared weight error (never worse than rtn);
- `bitsplit` / `BitSplit`: Bit-Split and stitching, weight error then (with the inputs' Gram matrix) output
  reconstruction error.

`compile(quantizer="rtn" | "mse" | "bitsplit")` and ``--quantizer`` name them (`QUANTIZERS`).
"""

from .base import QuantizedWeight, WeightQuantizer, as_matrix, blocks_of, from_matrix
from .bitsplit import BitSplit, bitsplit, split_planes, stitch_planes
from .mse import mse
from .rtn import rtn

QUANTIZERS = ("rtn", "mse", "bitsplit")

__all__ = [
    "QUANTIZERS",
    "BitSplit",
    "QuantizedWeight",
    "WeightQuantizer",
    "as_matrix",
    "bitsplit",
    "blocks_of",
    "from_matrix",
    "mse",
    "rtn",
    "split_planes",
    "stitch_planes",
]
