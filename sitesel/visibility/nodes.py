"""A pixel's horizon as visibility thresholds on the Sun's and Earth's Moon-fixed longitude.

See the package docstring (:mod:`sitesel.visibility`) for the construction and its error bound.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._fastmath import atan2, sin_small
from ..constants import MOON_RADIUS_M
from ..terrain.grid import local_frame
from ..terrain.model import Terrain


@njit(cache=True)
def _bearing_cos_sin(n_az):
    """Cosines and sines of the K grid bearings ``np.arange(K) * 360 / K``."""
    bearing = np.arange(n_az) * (2.0 * np.pi / n_az)
    return np.cos(bearing), np.sin(bearing)


# fused multiply-adds and reciprocals (atan2's quotient) move the nodes by ~1e-13 deg and
# halve the cost of this loop, the largest part of the per-pixel cost of the fractions
@njit(cache=True, fastmath={"contract", "arcp", "nsz"})
def _node_run(east, north, up, cos_lon, sin_lon, r_m, horizon_deg, cos_b, sin_b, offset_deg, distance_m, ka, kb, lam,
              delta):
    """Nodes ``ka`` .. ``kb - 1`` (0 <= ka <= kb <= K) of :func:`_horizon_nodes`, into
    ``lam[:kb - ka]`` and ``delta``. The loop has no branch and no libm call (within 3e-6
    deg of them), so it vectorises."""
    n = horizon_deg.size
    to_rad = np.pi / 180.0
    cos_off = np.cos(offset_deg * to_rad)
    sin_off = np.sin(offset_deg * to_rad)
    e0, e1, e2 = east[0], east[1], east[2]
    n0, n1, n2 = north[0], north[1], north[2]
    u0, u1, u2 = up[0], up[1], up[2]
    spacing_deg = 360.0 / n
    inv_d = 1.0 / distance_m
    cb = cos_b[ka:kb]
    sb = sin_b[ka:kb]
    hd = horizon_deg[ka:kb]
    for i in range(kb - ka):
        # Local azimuth b_k - lon by angle subtraction (no trig per node).
        sa = sb[i] * cos_lon - cb[i] * sin_lon
        ca = cb[i] * cos_lon + sb[i] * sin_lon
        hx = sa * e0 + ca * n0
        hy = sa * e1 + ca * n1
        hz = sa * e2 + ca * n2
        se = sin_small(hd[i] * to_rad)
        ce = np.sqrt(1.0 - se * se)
        lam[i], delta[i] = _node(hx, hy, hz, u0, u1, u2, r_m, ce * cos_off + se * sin_off, se * cos_off - ce * sin_off,
                                 distance_m, inv_d, cb[i], sb[i], (ka + i) * spacing_deg)


@njit(cache=True)
def _horizon_nodes(east, north, up, cos_lon, sin_lon, r_m, horizon_deg, cos_b, sin_b, offset_deg, distance_m, k0,
                   lam, delta):
    """One body's horizon curve of one pixel as Moon-fixed (longitude, latitude) nodes, degrees.

    Node k is where the body's centre is, seen from the Moon's centre at ``distance_m``,
    when it sits at the horizon bearing ``b_k`` and elevation ``horizon_k - offset`` seen
    from ``r_m * up`` (offset: the Sun's mean semi-diameter; 0 for the Earth). Nodes
    ``k0 .. k0 + lam.size - 1``, their indices taken modulo K (``k0`` may be negative),
    go into ``lam`` and ``delta``: longitudes near the bearing ``(k mod K) * 360 / K`` (as
    seen from the pole; the table builders unwrap them), latitudes the thresholds.
    """
    n_az = horizon_deg.size
    done = 0
    while done < lam.size:
        ka = (k0 + done) % n_az  # Python's modulo: never negative
        kb = min(n_az, ka + lam.size - done)
        _node_run(east, north, up, cos_lon, sin_lon, r_m, horizon_deg, cos_b, sin_b, offset_deg, distance_m, ka, kb,
                  lam[done:], delta[done:])
        done += kb - ka


@njit(cache=True, inline="always")
def _make_increasing(lam):
    """Guard against a non-monotone curve (skyline steeper than ~1/colatitude): nudge each
    longitude above the one before it."""
    for k in range(1, lam.size):
        if lam[k] <= lam[k - 1]:
            lam[k] = lam[k - 1] + 1e-9


@njit(cache=True, inline="always")
def _node(hx, hy, hz, u0, u1, u2, r_m, ce, se, distance_m, inv_d, cos_b, sin_b, bearing_deg):
    """Direction at elevation (cos, sin) = (ce, se) along horizontal unit vector h (up (u0, u1,
    u2)), taken to the Moon's centre at ``distance_m`` (the Sun's or the Earth's: at least
    100 Moon radii; ``inv_d`` its reciprocal): its longitude (near ``bearing_deg``) and latitude, degrees."""
    dx = ce * hx + se * u0
    dy = ce * hy + se * u1
    dz = ce * hz + se * u2
    # Topocentric range s with |r up + s d| = distance (d . up = se), by the series of the
    # root: u < 3e-5 for the Sun and the Earth, so the omitted terms are below 1e-19.
    u = (r_m * ce * inv_d) ** 2
    s = -r_m * se + distance_m * (1.0 - u * (0.5 + u * (0.125 + u * 0.0625)))
    gx = r_m * u0 + s * dx
    gy = r_m * u1 + s * dy
    gz = r_m * u2 + s * dz
    along = gx * cos_b + gy * sin_b
    across = gy * cos_b - gx * sin_b
    sin_lat = gz * inv_d
    return (bearing_deg + atan2(across, along) * (180.0 / np.pi),
            atan2(sin_lat, np.sqrt(max(0.0, 1.0 - sin_lat * sin_lat))) * (180.0 / np.pi))


@njit(cache=True, inline="always")
def _pixel_thresholds(east, north, up, lon_deg, r_m, horizon_deg, cos_b, sin_b, sun_offset_deg, sun_distance_m,
                      earth_distance_m, n_bins, earth_window):
    """One pixel's Sun and Earth threshold tables (:func:`_threshold_table` of its
    :func:`_horizon_nodes`). The Earth's covers only the longitudes ``earth_window``
    (w0, w1) (see ``_BodySteps.lon_window``; all if w1 < w0), which is all that its
    steps ever look up: it stays within about 8 deg of the near side's centre, so a few
    dozen of the K nodes serve it."""
    n_az = horizon_deg.size
    cos_lon = np.cos(np.radians(lon_deg))
    sin_lon = np.sin(np.radians(lon_deg))
    sun_lam = np.empty(n_az)
    sun_delta = np.empty(n_az)
    _horizon_nodes(east, north, up, cos_lon, sin_lon, r_m, horizon_deg, cos_b, sin_b, sun_offset_deg, sun_distance_m,
                   0, sun_lam, sun_delta)
    sun_table = _threshold_table(sun_lam, sun_delta, n_bins)
    w0, w1 = earth_window
    spacing_deg = 360.0 / n_az
    # a node's longitude differs from its bearing by up to ~tan(elevation) sin(colatitude)
    # radians: widen the nodes' span until it covers the window
    reach_deg = 4.0 + 2.0 * spacing_deg
    while w1 >= w0:
        k0 = int(np.floor((w0 - reach_deg) / spacing_deg))
        n = int(np.ceil((w1 + reach_deg) / spacing_deg)) - k0 + 1
        if n >= n_az:
            break
        lam = np.empty(n)
        delta = np.empty(n)
        _horizon_nodes(east, north, up, cos_lon, sin_lon, r_m, horizon_deg, cos_b, sin_b, 0.0, earth_distance_m, k0,
                       lam, delta)
        table = _window_table(lam, delta, k0, n_az, n_bins)
        if table[0][0] <= w0 and table[0][n - 1] > w1:
            return sun_table, table
        reach_deg *= 2.0
    lam = np.empty(n_az)
    delta = np.empty(n_az)
    _horizon_nodes(east, north, up, cos_lon, sin_lon, r_m, horizon_deg, cos_b, sin_b, 0.0, earth_distance_m, 0,
                   lam, delta)
    return sun_table, _threshold_table(lam, delta, n_bins)


@njit(cache=True, inline="always")
def _slopes(lam_e, delta_e):
    """Slope of each segment of a table's nodes (0 after the last): the table builders'
    error model lets this loop vectorise."""
    slope_e = np.zeros(lam_e.size)
    for i in range(lam_e.size - 1):
        slope_e[i] = (delta_e[i + 1] - delta_e[i]) / (lam_e[i + 1] - lam_e[i])
    return slope_e


@njit(cache=True, inline="always")
def _fill_first(lam_e, first, i, j_start, j_end):
    """``first[j]`` for bins ``j_start .. j_end - 1`` (of ``first.size`` over 360 deg): the last
    node at or before the bin's start, walking on from node ``i``."""
    n_bins = first.size
    for j in range(j_start, j_end):
        edge = j * 360.0 / n_bins
        while lam_e[i + 1] <= edge:
            i += 1
        first[j] = i


# numpy's error model: a division by zero gives inf rather than raising (nodes are strictly
# increasing, so none does), which lets the slope loop vectorise
@njit(cache=True, error_model="numpy")
def _threshold_table(lam, delta, n_bins):
    """Periodic piecewise-linear threshold ``delta(lam)`` over [0, 360) deg.

    Returns node longitudes (``lam``, made increasing in place), values and slopes,
    padded with nodes of the neighbouring turns so that the first node is at or below 0
    and the last above 360; and for each of ``n_bins`` regular bins the last node at or
    before the bin's start.
    """
    _make_increasing(lam)
    n = lam.size
    pad = 4
    if lam[n - pad] - 360.0 > 0.0 or lam[pad - 1] + 360.0 <= 360.0:
        pad = n  # nodes shifted by several spacings (steep far-from-pole skylines)
    m = n + 2 * pad
    lam_e = np.empty(m)
    delta_e = np.empty(m)
    lam_e[:pad] = lam[n - pad:] - 360.0
    lam_e[pad:pad + n] = lam
    lam_e[pad + n:] = lam[:pad] + 360.0
    delta_e[:pad] = delta[n - pad:]
    delta_e[pad:pad + n] = delta
    delta_e[pad + n:] = delta[:pad]
    first = np.empty(n_bins, dtype=np.int64)
    _fill_first(lam_e, first, 0, 0, n_bins)
    return lam_e, delta_e, _slopes(lam_e, delta_e), first


@njit(cache=True, error_model="numpy")
def _window_table(lam, delta, k0, n_az, n_bins):
    """:func:`_threshold_table` of the nodes ``k0 .. k0 + lam.size - 1`` (indices modulo
    ``n_az``: see :func:`_horizon_nodes`) spanning less than a turn, valid only at
    longitudes (mod 360) between the first node and the last.

    The nodes are laid out twice, unwrapped and one turn up, so that both ends of a
    window across 0 deg are found. Each node's longitude is shifted by whole turns from
    its own, as in the whole-turn table (whose values it thus repeats bit for bit). Only
    the bins whose start lies within either copy get their ``first`` node (the others,
    never looked up, 0).
    """
    n = lam.size
    lam_e = np.empty(2 * n)
    delta_e = np.empty(2 * n)
    for i in range(n):
        turn = (k0 + i) // n_az
        lam_e[i] = lam[i] + 360.0 * turn if turn != 0 else lam[i]
        lam_e[n + i] = lam[i] + 360.0 * (turn + 1) if turn != -1 else lam[i]
        delta_e[i] = delta[i]
        delta_e[n + i] = delta[i]
    _make_increasing(lam_e[:n])
    _make_increasing(lam_e[n:])
    first = np.zeros(n_bins, dtype=np.int64)
    per_bin = n_bins / 360.0
    for i in (0, n):
        # bins starting at or beyond the copy's first node and before its last
        _fill_first(lam_e, first, i, max(0, int(np.ceil(lam_e[i] * per_bin))),
                    min(n_bins, int(np.ceil(lam_e[i + n - 1] * per_bin))))
    return lam_e, delta_e, _slopes(lam_e, delta_e), first


@njit(cache=True, inline="always")
def _margin(lam_e, delta_e, slope_e, first, lam_t, bin_t, key_t):
    """``delta(lam_t) - key_t`` in degrees: > 0 when the body is visible."""
    i = first[bin_t]
    # Bins are half a node spacing wide, so one branch-free step almost always
    # lands on the right node; the loop only runs for unusually dense nodes.
    i += lam_e[i + 1] <= lam_t
    while lam_e[i + 1] <= lam_t:
        i += 1
    return delta_e[i] + slope_e[i] * (lam_t - lam_e[i]) - key_t


# reassociation lets the sum vectorise; NaN and inf still propagate (no nnan / ninf), in any order
@njit(cache=True, parallel=True, fastmath={"reassoc"})
def _finite_rows(height_m, horizon_deg):
    """Whether each pixel's height and every one of its horizon values (float32, at most 90 deg
    in size, so that their sum cannot overflow) are finite: a pass over the whole horizon array
    (1.5 GB for a 1024^2 tile at K = 360), so on every thread."""
    valid = np.empty(height_m.size, np.bool_)
    for p in prange(height_m.size):
        # a NaN (or inf) anywhere makes the row's sum non-finite
        row = horizon_deg[p]
        total = np.float32(0.0)
        for k in range(row.size):
            total += row[k]
        valid[p] = np.isfinite(height_m[p]) and np.isfinite(total)
    return valid


class _Pixels:
    """Flattened per-pixel inputs of a window: local frames, longitudes, observer radii, horizons."""

    def __init__(self, terrain: Terrain, horizon_deg, observer_height_m, rows, cols):
        sub = terrain.window(rows or slice(None), cols or slice(None))
        self.shape = sub.shape
        self.grid = sub.grid
        horizon_deg = np.asarray(horizon_deg)
        if horizon_deg.ndim != 3 or horizon_deg.shape[:2] != self.shape:
            raise ValueError(f"horizon_deg has shape {horizon_deg.shape}, expected {self.shape} + (K,)")
        self.n_az = horizon_deg.shape[2]
        lat, lon = sub.grid.latlon()
        self.lat_deg = lat.ravel()
        self.east, self.north, self.up = (np.ascontiguousarray(v.reshape(-1, 3)) for v in local_frame(lat, lon))
        self.height_m = sub.height_m.astype(np.float64).ravel()
        self.horizon_deg = np.ascontiguousarray(horizon_deg.reshape(-1, self.n_az), dtype=np.float32)
        self.valid = _finite_rows(self.height_m, self.horizon_deg)
        self.r_m = np.where(self.valid, MOON_RADIUS_M + self.height_m + float(observer_height_m), MOON_RADIUS_M)
        self.lon_deg = np.ascontiguousarray(lon.ravel(), dtype=np.float64)
