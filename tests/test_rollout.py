"""RolloutSpec: validation, serialisation, ONNX metadata, and the numpy reference of the rollout."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_builders import mlp_forecaster

from tvm_tqs.errors import RolloutSpecError
from tvm_tqs.rollout import METADATA_KEY, RolloutSpec, infer_rollout_spec


def spec(**kw):
    base = dict(
        window_input="window",
        forecast_output="forecast",
        lookback=6,
        horizon=3,
        channels=3,
        target_channels=(0, 2),
        stride=2,
    )
    base.update(kw)
    return RolloutSpec(**base)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(stride=4), r"stride must be in \[1, horizon=3\]"),
        (dict(target_channels=(0, 3)), "out of range for 3 channels"),
        (dict(target_channels=()), "target_channels is empty"),
        (dict(target_channels=(1, 1)), "duplicates"),
        (dict(exogenous="predict"), "exogenous must be 'hold' or 'supplied'"),
        (dict(channel_mean=(0.0,)), "channel_mean has 1 entries for 3 channels"),
        (dict(channel_std=(1.0, 0.0, 1.0)), "channel_std entries must be > 0"),
        (dict(lookback=0), "must be >= 1"),
    ],
)
def test_invalid_specs_are_rejected(kw, match):
    with pytest.raises(RolloutSpecError, match=match):
        spec(**kw)


def test_json_round_trip_and_unknown_fields():
    s = spec(channel_mean=(0, 0, 0), channel_std=(1, 2, 3))
    assert RolloutSpec.from_json(s.to_json()) == s
    with pytest.raises(RolloutSpecError, match=r"unknown fields \['lookahead'\]"):
        RolloutSpec.from_dict({**s.to_dict(), "lookahead": 3})
    with pytest.raises(RolloutSpecError, match="not valid JSON"):
        RolloutSpec.from_json("{")


def test_attach_and_read_back_from_onnx():
    model = mlp_forecaster(lookback=16, horizon=4, channels=2)
    attached = RolloutSpec("window", "forecast", 16, 4, 2, (0,), 2, exogenous="supplied")
    attached.attach(model)
    attached.attach(model)  # replaces, does not duplicate
    assert [p.key for p in model.metadata_props].count(METADATA_KEY) == 1
    assert RolloutSpec.from_onnx(model) == attached


def test_inferred_default_feeds_all_channels_back():
    s = infer_rollout_spec(mlp_forecaster(lookback=16, horizon=4, channels=2))
    assert s == RolloutSpec("window", "forecast", 16, 4, 2, (0, 1), 4)


def test_inference_refuses_ambiguous_channels():
    model = mlp_forecaster(channels=2)
    model.graph.output[0].type.tensor_type.shape.dim[2].dim_value = 1
    with pytest.raises(RolloutSpecError, match="input 'window' has 2 channels but output 'forecast' has 1"):
        infer_rollout_spec(model)


def test_next_window_holds_exogenous_and_shifts_targets():
    s = spec()  # channels 0 and 2 predicted, channel 1 exogenous (held), stride 2
    window = np.arange(18, dtype=np.float32).reshape(1, 6, 3)
    forecast = np.array([[[100, 200], [101, 201], [102, 202]]], dtype=np.float32)
    nxt = s.next_window(window, forecast)
    np.testing.assert_array_equal(nxt[:, :4], window[:, 2:])
    np.testing.assert_array_equal(nxt[0, 4:], [[100, 16, 200], [101, 16, 201]])


def test_next_window_supplied_exogenous():
    s = spec(exogenous="supplied")
    window = np.zeros((2, 6, 3), np.float32)
    forecast = np.ones((2, 3, 2), np.float32)
    exog = np.full((2, 2, 1), 7.0, np.float32)
    np.testing.assert_array_equal(s.next_window(window, forecast, exog)[:, 4:, 1], 7.0)
    with pytest.raises(RolloutSpecError, match="needs future exogenous values"):
        s.next_window(window, forecast)


def test_rollout_of_a_linear_model_matches_the_closed_form():
    # Model: forecast every step = mean of the window's last row per target channel; a persistence model
    # with horizon 3 and stride 2 must repeat the last value for every rolled-out step.
    s = spec(target_channels=(0, 1, 2))
    rng = np.random.default_rng(0)
    context = rng.standard_normal((4, 6, 3)).astype(np.float32)

    def persistence(inputs):
        return np.repeat(inputs["window"][:, -1:, :], 3, axis=1)

    out = s.rollout(persistence, context, steps=7)
    assert out.shape == (4, 7, 3)
    np.testing.assert_array_equal(out, np.repeat(context[:, -1:, :], 7, axis=1))
    assert s.calls(7) == 4


def test_context_shape_errors_name_the_input():
    s = spec()
    with pytest.raises(RolloutSpecError, match=r"context for input 'window' must have shape \[batch, 6, 3\]"):
        s.rollout(lambda inputs: inputs, np.zeros((1, 5, 3), np.float32), steps=2)


def _io_model(inputs, outputs):
    """A graph with only these inputs and outputs (inference reads nothing else)."""
    from onnx import TensorProto, helper

    types = {"float": TensorProto.FLOAT, "bool": TensorProto.BOOL, "int64": TensorProto.INT64}
    graph = helper.make_graph(
        [],
        "io",
        [helper.make_tensor_value_info(n, types[t], d) for n, t, d in inputs],
        [helper.make_tensor_value_info(n, types[t], d) for n, t, d in outputs],
    )
    return helper.make_model(graph)


@pytest.mark.parametrize(
    "inputs, outputs, expect",
    [
        ([("x", "float", ["b", 7, 96])], [("y", "float", ["b", 7, 24])], ("BCL", "BCH", 96, 7, 24)),
        ([("x", "float", ["b", 96])], [("y", "float", ["b", 24])], ("BL", "BH", 96, 1, 24)),
        ([("x", "float", ["b", 96, 7])], [("y", "float", ["b", 24, 7])], ("BLC", "BHC", 96, 7, 24)),
        ([("x", "float", ["b", 7, 96])], [("y", "float", ["b", 24, 7])], ("BCL", "BHC", 96, 7, 24)),
    ],
)
def test_inferred_layouts(inputs, outputs, expect):
    s = infer_rollout_spec(_io_model(inputs, outputs))
    assert (s.window_layout, s.forecast_layout, s.lookback, s.channels, s.horizon) == expect


@pytest.mark.parametrize(
    "inputs, outputs, match",
    [
        # L == H: [B, 96, 7] -> [B, 96, 7] reads as BLC/BHC and as BCL/BCH; refuse to guess.
        ([("x", "float", ["b", 96, 7])], [("y", "float", ["b", 96, 7])], "several readings fit"),
        # month: 0- or 1-based, period 12 or none? Left to the user.
        (
            [("x", "float", ["b", 96, 7]), ("month", "int64", ["b", 96])],
            [("y", "float", ["b", 24, 7])],
            "the period and start of time input 'month'",
        ),
        # A padding mask marks what is NOT observed: not an observed-mask.
        (
            [("x", "float", ["b", 96, 7]), ("key_padding_mask", "bool", ["b", 96])],
            [("y", "float", ["b", 24, 7])],
            "the policy of input 'key_padding_mask'",
        ),
    ],
)
def test_inference_refuses_to_guess(inputs, outputs, match):
    with pytest.raises(RolloutSpecError, match=match) as err:
        infer_rollout_spec(_io_model(inputs, outputs))
    assert '"<choose>"' in str(err.value)  # the skeleton to edit follows the paragraph


def test_inferred_calendar_and_counter_inputs():
    s = infer_rollout_spec(
        _io_model(
            [("x", "float", ["b", 96, 7]), ("hour", "int64", ["b", 96]), ("time_idx", "int64", ["b", 96])],
            [("y", "float", ["b", 24, 7])],
        )
    )
    hour, idx = s.aux_inputs
    assert (hour.policy, hour.period, idx.policy, idx.period) == ("time", 24.0, "time", None)
