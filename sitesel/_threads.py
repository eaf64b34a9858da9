"""Spreading uneven work over numba's threads.

``prange`` hands each thread one contiguous block of the iteration range. Where
the cost per item is uneven and clustered (the rays of a far-field edge, which
sit in a band of rows; the pixels of a lit ridge, which the visibility scan
visits step by step while a crater floor next to it is decided at once), one
thread gets most of it. Visiting item ``i * spread_stride(n) % n`` instead of
``i`` gives each thread an even share of any cluster.
"""

from __future__ import annotations

import math


def spread_stride(n: int) -> int:
    """A stride coprime with n near n / golden ratio: i -> i * stride mod n visits 0..n-1
    once each, and any run of consecutive i spreads evenly over them."""
    stride = max(1, round(n * 0.6180339887498949))
    while math.gcd(stride, n) != 1:
        stride += 1
    return stride
