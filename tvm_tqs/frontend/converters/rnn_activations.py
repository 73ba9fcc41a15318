"""The gate activation functions of ONNX LSTM/GRU nodes (``activations``, ``activation_alpha/beta``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tvm import relax

from .onnx_node import decode_attribute, invalid_attribute, unsupported_attribute

Activation = Callable[[relax.Expr], relax.Expr]


def scalar_const(value: float, dtype: str) -> relax.Expr:
    return relax.const(value, dtype)


def _make_activation(name: str, alpha: float | None, beta: float | None, dtype: str) -> Activation:
    """Build one ONNX RNN activation; ``alpha``/``beta`` are already resolved to their values."""
    op = relax.op
    name = name.lower()
    if name == "sigmoid":
        return op.sigmoid
    if name == "tanh":
        return op.tanh
    if name == "relu":
        return op.nn.relu
    if name == "affine":
        return lambda x: op.add(op.multiply(x, scalar_const(alpha, dtype)), scalar_const(beta, dtype))
    if name == "leakyrelu":
        return lambda x: op.nn.leakyrelu(x, alpha)
    if name == "thresholdedrelu":
        return lambda x: op.where(op.greater(x, scalar_const(alpha, dtype)), x, scalar_const(0.0, dtype))
    if name == "scaledtanh":
        return lambda x: op.multiply(
            op.tanh(op.multiply(x, scalar_const(beta, dtype))), scalar_const(alpha, dtype)
        )
    if name == "hardsigmoid":
        return lambda x: op.clip(
            op.add(op.multiply(x, scalar_const(alpha, dtype)), scalar_const(beta, dtype)), 0, 1
        )
    if name == "elu":
        return lambda x: op.where(
            op.less(x, scalar_const(0.0, dtype)),
            op.multiply(op.subtract(op.exp(x), scalar_const(1.0, dtype)), scalar_const(alpha, dtype)),
            x,
        )
    if name == "softsign":
        return lambda x: op.divide(x, op.add(op.abs(x), scalar_const(1.0, dtype)))
    if name == "softplus":
        return op.nn.softplus
    raise AssertionError(name)  # _ACTIVATION_PARAMS is checked first


# name -> (default alpha, default beta); None marks a parameter the function does not take.
# A function whose value is missing from activation_alpha/activation_beta gets these, which are
# onnxruntime's: they agree with the standalone ONNX ops except ThresholdedRelu (ONNX's op
# defaults alpha to 1.0, onnxruntime's RNN kernels to 0); Affine and ScaledTanh have no
# standalone op any more and onnxruntime defaults both of their parameters to 0.
_ACTIVATION_PARAMS: dict[str, tuple[float | None, float | None]] = {
    "sigmoid": (None, None),
    "tanh": (None, None),
    "relu": (None, None),
    "affine": (0.0, 0.0),
    "leakyrelu": (0.01, None),
    "thresholdedrelu": (0.0, None),
    "scaledtanh": (0.0, 0.0),
    "hardsigmoid": (0.2, 0.5),
    "elu": (1.0, None),
    "softsign": (None, None),
    "softplus": (None, None),
}


def parse_activations(
    label: str, attr: dict, defaults: Sequence[str], num_directions: int, dtype: str
) -> list[list[Activation]]:
    """Resolve ``activations``/``activation_alpha``/``activation_beta`` into per-direction lists.

    ONNX lists the functions of the forward direction first; alphas and betas are consumed in
    order by the functions that take them, and a function whose value is missing from the list
    gets its default from ``_ACTIVATION_PARAMS``.
    """
    names = [decode_attribute(n) for n in attr.get("activations", ())]
    if not names:
        names = list(defaults) * num_directions
    if len(names) != len(defaults) * num_directions:
        raise invalid_attribute(
            label,
            f"attribute 'activations' {names}",
            f"expected {len(defaults)} functions per direction ({len(defaults) * num_directions} in all)",
        )
    alphas = list(attr.get("activation_alpha", ()))
    betas = list(attr.get("activation_beta", ()))
    funcs = []
    for name in names:
        if name.lower() not in _ACTIVATION_PARAMS:
            raise unsupported_attribute(
                label,
                f"attribute 'activations' value '{name}'",
                f"supported functions are {', '.join(sorted(_ACTIVATION_PARAMS))} (case-insensitive)",
            )
        default_alpha, default_beta = _ACTIVATION_PARAMS[name.lower()]
        alpha = beta = None
        if default_alpha is not None:
            alpha = float(alphas.pop(0)) if alphas else default_alpha
        if default_beta is not None:
            beta = float(betas.pop(0)) if betas else default_beta
        funcs.append(_make_activation(name, alpha, beta, dtype))
    per_dir = len(defaults)
    return [funcs[d * per_dir : (d + 1) * per_dir] for d in range(num_directions)]
