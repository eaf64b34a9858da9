"""Series and polynomial forms of sine and arctangent for the numba kernels, where libm
calls would dominate, or keep a loop from being vectorised."""

from __future__ import annotations

import math

from numba import njit


#: The factors 1 / (2k (2k + 1)), k = 1..9, of ``sin_small``'s series: multiplying by them
#: rather than dividing by 2k (2k + 1) keeps nine divisions per call out of the loops (a
#: vectorised division costs several times a multiplication, and LLVM may not swap one for
#: the other unless told that rounding may change).
_SIN64 = tuple(1.0 / (2 * k * (2 * k + 1)) for k in range(1, 10))


@njit(cache=True, inline="always")
def sin_small(x):
    """sin x for |x| <= pi / 2 (radians), by its Taylor series to x^19 (error below 3e-16):
    no branch and no division, so loops over it vectorise."""
    x2 = x * x
    c1, c2, c3, c4, c5, c6, c7, c8, c9 = _SIN64
    return x * (1.0 - x2 * c1 * (1.0 - x2 * c2 * (1.0 - x2 * c3 * (1.0 - x2 * c4 * (1.0 - x2 * c5 * (
        1.0 - x2 * c6 * (1.0 - x2 * c7 * (1.0 - x2 * c8 * (1.0 - x2 * c9)))))))))


@njit(cache=True, inline="always")
def atan2(y, x):
    """atan2(y, x) in radians within 4e-8 (Abramowitz & Stegun 4.4.49 on [0, 1], then the
    octant by selects): no libm call and no branch, so loops over it vectorise."""
    ax = abs(x)
    ay = abs(y)
    swap = ay > ax
    num = ax if swap else ay
    den = ay if swap else ax
    t = num / den if den > 0.0 else 0.0
    t2 = t * t
    p = t * (0.9999993329 + t2 * (-0.3332985605 + t2 * (0.1994653599 + t2 * (-0.1390853351 + t2 * (
        0.0964200441 + t2 * (-0.0559098861 + t2 * (0.0218612288 + t2 * -0.0040540580)))))))
    p = 0.5 * math.pi - p if swap else p
    p = math.pi - p if x < 0.0 else p
    return -p if y < 0.0 else p
