"""Weight quantizers behind one interface: ``quantizer(w, bits, channel_axis, group_size) -> QuantizedWeight``.

- `rtn`: round-to-nearest, scale = max|w| / qmax per channel or group;
- `mse`: the clipped scale minimising the squared weight error (never worse than rtn);
- `bitsplit` / `BitSplit`: Bit-Split and stitching, weight error then (with the inputs' Gram matrix) output
  reconstruction error;
- `modcap` / `ModCap`: ModCap grouping (capacity differentials between adjacent weight groups of the fused
  graph) with joint Bit-Split of the chosen pairs against the pair's output (`modcap_quantizer(problem)`).

Every quantizer takes bits 2..8 on the symmetric grid [-(2^(b-1) - 1), 2^(b-1) - 1] (int3: [-3, 3]).

`compile(quantizer="rtn" | "mse" | "bitsplit" | "modcap")` and ``--quantizer`` name them (`QUANTIZERS`);
"modcap" needs calibration windows.
"""

from .base import QuantizedWeight, WeightQuantizer, as_matrix, blocks_of, from_matrix
from .bitsplit import BitSplit, bitsplit, split_planes, stitch_planes
from .modcap import ModCap, joint_bitsplit, modcap_quantizer
from .mse import mse
from .rtn import rtn

QUANTIZERS = ("rtn", "mse", "bitsplit", "modcap")

__all__ = [
    "QUANTIZERS",
    "BitSplit",
    "ModCap",
    "QuantizedWeight",
    "WeightQuantizer",
    "as_matrix",
    "bitsplit",
    "blocks_of",
    "from_matrix",
    "joint_bitsplit",
    "modcap_quantizer",
    "mse",
    "rtn",
    "split_planes",
    "stitch_planes",
]
