"""ONNX LSTM, GRU and RNN converters, unrolled over the static sequence length.

Every fused op of the compiled graph is a decision unit for per-op quantization, so the graph is
laid out the way onnxruntime computes the recurrence: one matmul per direction projects the input
of all time steps at once (``X @ W^T`` plus both biases), and each step then costs one recurrent
matmul ``h @ R^T`` (two for GRU with ``linear_before_reset=0``) plus elementwise gate math.
``sequence_lens`` (constant or a runtime input) masks each step per batch row.

The pieces: `lstm`, `gru` and `simple_rnn` hold the converters, `rnn_config` validates a node,
`rnn_unroll` builds the graph they share (loop, masks, outputs), `rnn_weights` and
`rnn_activations` prepare their inputs.
"""

from __future__ import annotations

from .gru import GRU
from .lstm import LSTM
from .simple_rnn import RNN

__all__ = ["GRU", "LSTM", "RNN"]
