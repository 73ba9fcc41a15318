"""Model import: ONNX (and Relax IRModules) into TVM Relax, with our converters registered."""

from .load import load

__all__ = ["load"]
