"""The horizon benchmark's speed bound (benchmarks/bare_sweep.py) computes what it claims to."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bare_sweep as bare  # noqa: E402 - benchmarks/ is not a package


@pytest.mark.parametrize("g", [0.0, 0.37, -0.61, 1.0, -1.0])
def test_bare_sweep_matches_brute_force(g):
    rng = np.random.default_rng(3)
    z = rng.normal(0.0, 30.0, (37, 41)).cumsum(axis=1)
    fast = bare.bare_sweep(z, g, 20.0)
    ref = bare.bare_reference(z, g, 20.0)
    assert np.array_equal(np.isnan(fast), np.isnan(ref))
    # NaN only where one of an observer's lines is off the grid (about the first and last rows); -inf
    # where a line leaves the grid at once (the last column, a few more by the corners)
    assert np.isfinite(fast).sum() >= (z.shape[0] - 3) * (z.shape[1] - 1)
    np.testing.assert_allclose(fast, ref, rtol=1e-9, atol=1e-12)


def test_bare_sweep_flat_plane():
    # on a plane tilted up along +p every pixel sees the far edge at the plane's own slope, less its height
    p = np.arange(30)
    z = np.tile(0.1 * 20.0 * p, (25, 1))  # 0.1 rise per metre
    tan = bare.bare_sweep(z, 0.3, 20.0, height_m=0.0)
    inner = tan[:, :-1][np.isfinite(tan[:, :-1])]
    assert inner.size > 0
    np.testing.assert_allclose(inner, 0.1, rtol=1e-9)


def test_bare_sweep_rejects_steep_lines():
    with pytest.raises(ValueError, match="within"):
        bare.bare_sweep(np.zeros((4, 4)), 1.5, 20.0)
