"""The error model's pieces (docs/error_model.md) against direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tvm_tqs.error_model import activation_error, crest_factor, group_error2, weight_error
from tvm_tqs.quantizers import rtn


def test_weight_error_is_the_relative_error_of_what_the_quantizer_stores():
    w = np.random.default_rng(0).standard_normal((64, 48)).astype(np.float32)
    for bits, precision in ((8, "int8"), (4, "int4")):
        q = rtn(w, bits, 1, 32 if bits == 4 else None).dequantize()
        assert weight_error(w, 1, precision) == pytest.approx(
            np.linalg.norm(q - w) / np.linalg.norm(w), rel=1e-6
        )
    assert 0 < weight_error(w, 1, "fp16") < weight_error(w, 1, "int8") < weight_error(w, 1, "int4")
    assert weight_error(w, 1, "fp32") == 0.0 and weight_error(np.zeros((4, 4)), 1, "int8") == 0.0
    with pytest.raises(ValueError, match="int3"):
        weight_error(w, 1, "int3")


def test_activation_noise_of_per_row_int8_matches_simulation():
    x = np.random.default_rng(1).standard_normal((4096, 64))
    scale = np.abs(x).max(axis=1, keepdims=True) / 127
    noise = np.round(x / scale) * scale - x
    measured = np.linalg.norm(noise) / np.linalg.norm(x)
    assert activation_error(crest_factor(x), "int8") == pytest.approx(measured, rel=0.05)
    assert crest_factor(np.ones((3, 8))) == pytest.approx(1.0)
    assert activation_error(5.0, "fp16") == 0.0


def test_group_error_adds_weight_error_coherently_and_activation_error_in_variance():
    assert group_error2([2.0, 3.0], 0.1, 0.0) == pytest.approx((0.1 * 5) ** 2)
    assert group_error2([2.0, 3.0], 0.0, 0.1) == pytest.approx(0.01 * 13)
    assert math.isinf(group_error2([math.inf], 0.1, 0.0))
    # A site whose gain could not be measured is never cheap, but fp16 (no activation noise) stays a number.
    assert math.isinf(group_error2([math.inf, 1.0], 0.001, 0.0))
    assert group_error2([math.inf], 0.0, 0.0) == 0.0


def test_predicted_error_does_not_depend_on_the_compile_batch():
    """The activation crests run the data-free contexts in chunks of the module's batch; the rows that pad
    the last chunk (copies of context 0) must not count, or the plan changes with compile(batch=)."""
    import tvm_tqs
    from tvm_tqs.examples import example_model

    model = example_model()
    report = tvm_tqs.score(model, horizon=48, seeds=4, mode="weight", linearity=False)
    errors = [
        tvm_tqs.compile(
            model, target="x86", budget="size=40%", tqs_report=report, seeds=4, batch=b
        ).plan.predicted_error
        for b in (1, 16)
    ]
    assert errors[1] == pytest.approx(errors[0], rel=1e-9)
