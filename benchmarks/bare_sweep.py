"""The least work any implementation of the horizon sweep must do: a speed bound for the benchmark.

Issue 5 prescribes the sweep (Dozier & Frew 1990; Barrett 2011): per azimuth, parallel lines one
pixel apart, an upper convex hull per line, sub-pixel interpolation so that diagonal azimuths are
as accurate as axis-aligned ones. ``bare_sweep`` keeps exactly that and drops everything else
sitesel's kernel does for accuracy and for its output:

* flat terrain: no curvature of the Moon, no map scale factor;
* no exact ray over the nearest 16 pixels, no far field, no floor at the grid's edge;
* one float per observer into a plain (rows, cols) plane, not the (rows, cols, K) layout
  that the visibility stage reads.

What is left per azimuth: each line samples the DEM at every column (linear between rows),
pushes the sample on its hull, and each observer, between two lines, makes one tangent query on
each (galloping from the line's previous answer, as sitesel does) and interpolates the two.
Its throughput therefore bounds what any scalar implementation of this algorithm reaches on a
machine (a different algorithm, or SIMD across lines, is not bounded by it); the benchmark sets it
against the issue's target. It is checked against a plain brute-force search
over the same samples (``bare_reference``; ``tests/test_bare_sweep.py``).

The frame is the one of ``sitesel.horizon.sweep``: ``z`` is indexed (q, p), the look direction
is +p, line i holds the points q = i + g p (|g| <= 1 covers every bearing up to a transpose or a
reversal, which cost the same).
"""

from __future__ import annotations

import math
import time

import numpy as np
from numba import njit, prange

from sitesel.horizon.sweep import _hull_push, _hull_tangent

#: Gaps between the lines one thread walks in lockstep (sitesel's kernel walked 16 until it
#: vectorised its sampling across them; kept, so that gauge readings stay comparable).
LINE_BLOCK = 16


def _line_range(g, nq, npp):
    """Offsets i of the lines that cross the grid: [i_lo, i_hi)."""
    reach = int(math.ceil(abs(g) * (npp - 1)))
    return (-reach - 1, nq) if g > 0 else (-1, nq + reach)


@njit(cache=True, parallel=True, fastmath={"contract", "arcp", "nsz"})
def _bare_kernel(z, g, step_m, height_m, i_lo, i_hi, out_tan):
    nq, npp = z.shape
    n_blocks = (i_hi - i_lo + LINE_BLOCK - 1) // LINE_BLOCK
    for blk in prange(n_blocks):
        i0 = i_lo + blk * LINE_BLOCK
        hx = np.empty((LINE_BLOCK + 1, npp))
        hy = np.empty((LINE_BLOCK + 1, npp))
        n_hull = np.zeros(LINE_BLOCK + 1, np.int64)
        guess = np.zeros(LINE_BLOCK + 1, np.int64)
        z_line = np.empty(LINE_BLOCK + 1)
        for p in range(npp - 1, -1, -1):
            x_m = p * step_m
            for j in range(LINE_BLOCK + 1):
                q = i0 + j + g * p
                z_line[j] = np.nan
                if 0.0 <= q <= nq - 1.0:
                    q0 = min(int(q), nq - 2)
                    f = q - q0
                    z_line[j] = (1.0 - f) * z[q0, p] + f * z[q0 + 1, p]
            # the observer in each gap [i, i + 1) of this column queries the hulls of both lines,
            # which hold the samples beyond its column
            for j in range(LINE_BLOCK):
                q_line = i0 + j + g * p
                qo = math.ceil(q_line)
                f = qo - q_line
                if qo < 0 or qo >= nq or f >= 1.0:
                    continue
                z_obs = (1.0 - f) * z_line[j] + f * z_line[j + 1] + height_m
                if z_obs != z_obs:  # a line off the grid
                    continue
                total = 0.0
                for side in range(2):
                    line = j + side
                    tan_elev = -np.inf
                    if n_hull[line] > 0:
                        v = _hull_tangent(hx[line], hy[line], n_hull[line], x_m, z_obs, guess[line])
                        guess[line] = v
                        tan_elev = (hy[line, v] - z_obs) / (hx[line, v] - x_m)
                    total += (f if side else 1.0 - f) * tan_elev
                out_tan[qo, p] = total
            for j in range(LINE_BLOCK + 1):
                if z_line[j] == z_line[j]:
                    n_hull[j] = _hull_push(hx[j], hy[j], n_hull[j], x_m, z_line[j])


def bare_sweep(z, g, step_m, height_m=2.0):
    """tan(horizon elevation) along +p of every pixel of ``z`` (float64 (q, p); NaN where an observer's
    line leaves the grid), for lines of slope ``g`` (|g| <= 1) sampled ``step_m`` apart along p."""
    if not abs(g) <= 1.0:
        raise ValueError(f"line slope g must be within [-1, 1], got {g}")
    z = np.ascontiguousarray(z, dtype=np.float32)
    out = np.full(z.shape, np.nan)
    _bare_kernel(z, float(g), float(step_m), float(height_m), *_line_range(g, *z.shape), out)
    return out


def bare_reference(z, g, step_m, height_m=2.0):
    """``bare_sweep`` by brute force: every observer against every sample of its two lines ahead."""
    z = np.asarray(z, dtype=np.float32).astype(np.float64)
    nq, npp = z.shape
    out = np.full(z.shape, np.nan)

    def line_z(i, p):
        q = i + g * p
        if not 0.0 <= q <= nq - 1.0:
            return np.nan
        q0 = min(int(q), nq - 2)
        f = q - q0
        return (1.0 - f) * z[q0, p] + f * z[q0 + 1, p]

    for i in range(*_line_range(g, nq, npp)):
        for p in range(npp):
            qo = math.ceil(i + g * p)
            f = qo - (i + g * p)
            if qo < 0 or qo >= nq or f >= 1.0:
                continue
            z_obs = (1.0 - f) * line_z(i, p) + f * line_z(i + 1, p) + height_m
            if np.isnan(z_obs):
                continue
            total = 0.0
            for line, weight in ((i, 1.0 - f), (i + 1, f)):
                slopes = [(line_z(line, pp) - z_obs) / ((pp - p) * step_m) for pp in range(p + 1, npp)]
                slopes = [s for s in slopes if not np.isnan(s)]
                total += weight * (max(slopes) if slopes else -np.inf)
            out[qo, p] = total
    return out


def bare_sweep_rate(z, step_m, bearings_deg=tuple(range(0, 46, 5))):
    """Pixel*azimuths per second of ``bare_sweep`` over ``z`` at these bearings from the grid axis
    (0-45 deg: the others are their transposes or reversals), compiled beforehand; and the mean
    seconds per azimuth."""
    z = np.ascontiguousarray(z, dtype=np.float32)
    bare_sweep(z[:64, :64], 0.5, step_m)
    seconds = []
    for bearing in bearings_deg:
        clock = time.perf_counter()
        bare_sweep(z, math.tan(math.radians(bearing)), step_m)
        seconds.append(time.perf_counter() - clock)
    per_azimuth_s = float(np.mean(seconds))
    return z.size / per_azimuth_s, per_azimuth_s
