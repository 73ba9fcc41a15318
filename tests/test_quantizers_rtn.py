"""Round-to-nearest: exact grid, scales, layouts and the error bound, over shapes (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvm_tqs.quantizers import as_matrix, from_matrix, rtn


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 9), min_size=2, max_size=3).map(tuple),
    bits=st.sampled_from([2, 4, 8]),
    group=st.one_of(st.none(), st.integers(1, 8)),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_rtn_properties(shape, bits, group, seed, data):
    axis = data.draw(st.integers(0, len(shape) - 1))
    w = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    qw = rtn(w, bits, axis, group)
    qmax = 2 ** (bits - 1) - 1
    assert qw.q.dtype == np.int8 and np.abs(qw.q).max() <= qmax
    deq = qw.dequantize()
    assert deq.shape == w.shape
    # Error of round-to-nearest is at most half a step of the element's own scale.
    m, red = as_matrix(w, axis), as_matrix(w, axis).shape[1]
    g = group or red
    step = np.repeat(qw.scale, g, axis=1)[:, :red]
    assert np.all(np.abs(as_matrix(deq, axis) - m) <= step / 2 + 1e-6)
    # The largest magnitude of each group maps exactly to +-qmax.
    for c in range(m.shape[0]):
        for k in range(0, red, g):
            blk = qw.q[c, k : k + g]
            if np.any(m[c, k : k + g] != 0):
                assert np.abs(blk).max() == qmax


def test_layout_round_trip():
    w = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    for axis in range(3):
        np.testing.assert_array_equal(from_matrix(as_matrix(w, axis), w.shape, axis), w)


def test_zero_channel_and_bad_args():
    w = np.zeros((4, 3), np.float32)
    qw = rtn(w, 8, 1)
    assert np.all(qw.q == 0) and np.all(qw.scale == 1.0)
    with pytest.raises(ValueError, match="bits must be in"):
        rtn(w, 9, 1)
    with pytest.raises(ValueError, match="group_size must be >= 1"):
        rtn(w, 4, 1, 0)
