"""Weight quantizers behind one interface: w (fp32) -> QuantizedWeight (integers + scales).

Round-to-nearest lives here now; MSE clipping, Bit-Split and ModCap come as further modules with the
same call signature.
"""

from .base import QuantizedWeight, WeightQuantizer, as_matrix, from_matrix
from .rtn import rtn

__all__ = ["QuantizedWeight", "WeightQuantizer", "as_matrix", "from_matrix", "rtn"]
