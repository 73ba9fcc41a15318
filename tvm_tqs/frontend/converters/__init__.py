"""ONNX operator converters that TVM 0.27's Relax importer lacks, registered into it from here.

Each converter is an `OnnxOpConverter` subclass with `_impl_vN(cls, bb, inputs, attr, params)` methods,
exactly like the importer's own; recurrences are unrolled over the static sequence length.
"""

from __future__ import annotations

from tvm.relax.frontend.onnx import onnx_frontend as _onnx_frontend

from .dft import DFT
from .rnn import GRU, LSTM, RNN

CONVERTERS: dict[str, type] = {"LSTM": LSTM, "GRU": GRU, "RNN": RNN, "DFT": DFT}


def install() -> None:
    """Register CONVERTERS into the Relax ONNX importer; idempotent.

    The importer looks its table up through the module-level `_get_convert_map()` on every use
    (also when it checks for unsupported ops), so wrapping that function is the whole registration.
    """
    current = _onnx_frontend._get_convert_map
    if getattr(current, "_tvm_tqs_installed", False):
        return

    def convert_map_with_ours() -> dict:
        table = current()
        table.update(CONVERTERS)
        return table

    convert_map_with_ours._tvm_tqs_installed = True
    _onnx_frontend._get_convert_map = convert_map_with_ours


def supported_op_types() -> set[str]:
    """Every ONNX op type the importer handles once our converters are installed."""
    install()
    return set(_onnx_frontend._get_convert_map()) | {"Constant", "If"}
