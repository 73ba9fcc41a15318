"""Errors tvm_tqs raises for bad input: each names the file, input, op or option at fault."""

from __future__ import annotations


class TQSError(Exception):
    """Base class: a problem with what the user gave us, reported in one paragraph (the CLI prints it)."""


class ModelLoadError(TQSError):
    """The model file or object cannot be read as an ONNX model."""


class MissingShapeError(TQSError):
    """An input has a dynamic dimension and no static value was given for it."""


class UnsupportedOpsError(TQSError):
    """The model uses operators no converter handles; lists all of them at once."""

    def __init__(self, unsupported: list[tuple[str, int, str]], source: str = "model"):
        self.unsupported = unsupported  # (op_type, count, first node name)
        rows = "; ".join(f"{op} x{count} (first node '{node}')" for op, count, node in unsupported)
        super().__init__(
            f"{source} uses {len(unsupported)} operator type(s) that tvm_tqs cannot import: {rows}. "
            "Re-export the model without them (for example with a different opset or by decomposing "
            "them in the exporter), or add a converter in tvm_tqs/frontend/converters/."
        )


class RolloutSpecError(TQSError):
    """A rollout contract is missing, inconsistent with the model, or cannot be inferred."""


class MeasurementError(TQSError):
    """Latency could not be measured on the target (runner unreachable, the device could not run it)."""


class ExportError(TQSError):
    """The artifact directory cannot be written (the path exists, is not writable, or the disk is full);
    nothing partial is left behind."""
