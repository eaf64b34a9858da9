"""Shared constants and small numba helpers of the horizon kernels."""

from __future__ import annotations

import numpy as np
from numba import njit

from ..constants import MOON_RADIUS_M
from ..errors import SiteselError

_R = MOON_RADIUS_M
_INV_4R2 = 1.0 / (4.0 * MOON_RADIUS_M * MOON_RADIUS_M)


def bearings_deg(n_azimuths: int) -> np.ndarray:
    """Grid bearings (degrees clockwise from grid north, +y) of the horizon azimuths."""
    n = int(n_azimuths)
    if n < 1:
        raise SiteselError(f"the number of horizon azimuths must be at least 1, got {n}")
    return np.arange(n) * 360.0 / n


@njit(cache=True, inline="always")
def inv_k(x, y):
    """1 / polar stereographic scale factor at map point (x, y)."""
    return 1.0 / (1.0 + (x * x + y * y) * _INV_4R2)


@njit(cache=True, inline="always")
def unit_chord(x1, y1, x2, y2):
    """Chord between map points (x1, y1) and (x2, y2) on the unit sphere: 2 sin(theta / 2) of
    their central angle theta. The stereographic projection (from the north pole onto the plane
    at the south pole, k = 1 there) maps the chord exactly: 4R |p1 - p2| /
    sqrt((|p1|^2 + 4R^2) (|p2|^2 + 4R^2)), with no trigonometric call."""
    dx = x2 - x1
    dy = y2 - y1
    return (2.0 * np.sqrt((dx * dx + dy * dy) * _INV_4R2)
            / np.sqrt((1.0 + (x1 * x1 + y1 * y1) * _INV_4R2) * (1.0 + (x2 * x2 + y2 * y2) * _INV_4R2)))


def exit_box(terrain_grid, far_grid=None) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of the supplied grids' outer edges together: where a
    horizon search leaves them, and the terrain beyond (``continuation_tan``) begins."""
    outer = [terrain_grid.bounds_m] + ([far_grid.bounds_m] if far_grid is not None else [])
    return (min(b[0] for b in outer), min(b[1] for b in outer), max(b[2] for b in outer),
            max(b[3] for b in outer))


def exit_lines(sin_b, cos_b, box) -> np.ndarray:
    """Exit along bearing b from the box (left, bottom, right, top), as
    (bx, inv_sx, big_x, by, inv_cy, big_y, sin_b, cos_b): from map point (x, y) the search
    leaves the box at map distance min((bx - x) inv_sx + big_x, (by - y) inv_cy + big_y)
    (``big``: inf for a direction with no component across those sides); see :func:`exit_point`."""
    out = []
    for d, low, high in ((sin_b, box[0], box[2]), (cos_b, box[1], box[3])):
        if abs(d) > 1e-12:
            out += [high if d > 0 else low, 1.0 / d, 0.0]
        else:
            out += [0.0, 0.0, np.inf]
    return np.array(out + [sin_b, cos_b])


@njit(cache=True, inline="always")
def exit_point(x, y, lines):
    """Map point where the search from (x, y), inside the box, leaves it along the bearing of
    ``lines`` (:func:`exit_lines`). No branch, so loops over it vectorise."""
    s = max(min((lines[0] - x) * lines[1] + lines[2], (lines[3] - y) * lines[4] + lines[5]), 0.0)
    return x + s * lines[6], y + s * lines[7]


@njit(cache=True, inline="always")
def bilinear(z, r, c):
    """Bilinear height at fractional (row, col); NaN outside or if a weighted corner is NaN."""
    nr, nc = z.shape
    if r < 0.0 or c < 0.0 or r > nr - 1 or c > nc - 1:
        return np.nan
    r0 = min(int(r), nr - 2) if nr > 1 else 0
    c0 = min(int(c), nc - 2) if nc > 1 else 0
    fr = r - r0
    fc = c - c0
    if nr > 1 and nc > 1:
        # branch-free where the four corners are heights (a third faster in the far-field ray)
        top = z[r0, c0] + fc * (z[r0, c0 + 1] - z[r0, c0])
        bottom = z[r0 + 1, c0] + fc * (z[r0 + 1, c0 + 1] - z[r0 + 1, c0])
        acc = top + fr * (bottom - top)
        if acc == acc:
            return acc
    # a NaN corner counts only if it has weight
    acc = 0.0
    if (1.0 - fr) * (1.0 - fc) > 0.0:
        acc += (1.0 - fr) * (1.0 - fc) * z[r0, c0]
    if (1.0 - fr) * fc > 0.0:
        acc += (1.0 - fr) * fc * z[r0, c0 + 1]
    if fr * (1.0 - fc) > 0.0:
        acc += fr * (1.0 - fc) * z[r0 + 1, c0]
    if fr * fc > 0.0:
        acc += fr * fc * z[r0 + 1, c0 + 1]
    return acc



def window_slices(shape, rows, cols):
    rows = rows if rows is not None else slice(None)
    cols = cols if cols is not None else slice(None)
    r0, r1, rs = rows.indices(shape[0])
    c0, c1, cs = cols.indices(shape[1])
    if rs != 1 or cs != 1:
        raise SiteselError("horizon windows must be contiguous row/column slices (step 1)")
    if r1 <= r0 or c1 <= c0:
        raise SiteselError(f"empty horizon window rows={rows} cols={cols} for a grid of shape {shape}")
    return r0, r1, c0, c1


def far_arrays(far_field):
    if far_field is None:
        return np.full((2, 2), np.nan, np.float32), 0.0, 0.0, 1.0, False
    g = far_field.grid
    return np.ascontiguousarray(far_field.height_m, dtype=np.float32), g.x0_m, g.y0_m, g.resolution_m, True



def continuation_tan(ground_m, observer_height_m, exit_distance_m):
    """tan(elevation) of the unknown terrain beyond the supplied grids.

    That terrain is assumed to continue at the observer's own ground height
    ``ground_m`` from the ground distance ``exit_distance_m`` (where the search
    leaves the grids) outward. Seen from ``observer_height_m`` above the
    ground, its highest point is at the central angle
    ``max(exit_distance_m / R, acos((R + hg) / (R + hg + h)))``: the tangent
    point (the bare-sphere dip) if the grid ends before it, else the grid
    edge. ``exit_distance_m`` is R times the central angle between the observer
    and the point where the search leaves the grids (their outer edges, see
    ``exit_box``). Inside the grids the terrain itself decides, so an observer on a
    rim above its surroundings sees a horizon below the dip.
    """
    r_ground = _R + np.asarray(ground_m, dtype=np.float64)
    r_obs = r_ground + observer_height_m
    theta = np.maximum(np.asarray(exit_distance_m, dtype=np.float64) / _R, np.arccos(r_ground / r_obs))
    theta = np.maximum(theta, 1e-12)  # an observer on the edge, at h = 0, looking out: horizontal
    return (r_ground * np.cos(theta) - r_obs) / (r_ground * np.sin(theta))
