"""What every converter here needs from its ONNX node: a label and error types that name it.

The errors are the importer's own types, with a message that names the node, since a model can
hold many LSTM/GRU/DFT nodes.
"""

from __future__ import annotations

import tvm


def node_label(op_type: str, attr: dict) -> str:
    name = attr.get("tvm_custom", {}).get("name", "")
    return f"{op_type} node '{name}'" if name else f"{op_type} node (unnamed)"


def unsupported_attribute(label: str, what: str, why: str) -> tvm.error.OpAttributeUnImplemented:
    return tvm.error.OpAttributeUnImplemented(f"{label}: {what} is not supported: {why}")


def invalid_attribute(label: str, what: str, why: str) -> tvm.error.OpAttributeInvalid:
    return tvm.error.OpAttributeInvalid(f"{label}: {what} is invalid: {why}")


def decode_attribute(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
