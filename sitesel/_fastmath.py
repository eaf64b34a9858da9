"""Series forms of sine and cosine for the numba kernels, where libm calls would dominate."""

from __future__ import annotations

import math

from numba import njit


@njit(cache=True, inline="always")
def sin_cos(x):
    """(sin x, cos x) for x in radians: Taylor series for |x| < 0.6 (the omitted terms are
    below 1e-18 of the result there), libm beyond."""
    if abs(x) < 0.6:
        x2 = x * x
        s = x * (1.0 - x2 / 6.0 * (1.0 - x2 / 20.0 * (1.0 - x2 / 42.0 * (1.0 - x2 / 72.0 * (
            1.0 - x2 / 110.0 * (1.0 - x2 / 156.0 * (1.0 - x2 / 210.0)))))))
        c = 1.0 - x2 / 2.0 * (1.0 - x2 / 12.0 * (1.0 - x2 / 30.0 * (1.0 - x2 / 56.0 * (1.0 - x2 / 90.0 * (
            1.0 - x2 / 132.0 * (1.0 - x2 / 182.0 * (1.0 - x2 / 240.0)))))))
        return s, c
    return math.sin(x), math.cos(x)
