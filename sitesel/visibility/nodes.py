"""A pixel's horizon as visibility thresholds on the Sun's and Earth's Moon-fixed longitude.

See the package docstring (:mod:`sitesel.visibility`) for the construction and its error bound.
"""

from __future__ import annotations

import numpy as np
from numba import njit

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
def _horizon_nodes(east, north, up, cos_lon, sin_lon, r_m, horizon_deg, cos_b, sin_b,
                   sun_offset_deg, sun_distance_m, earth_distance_m, sun_lam, sun_delta, earth_lam, earth_delta):
    """Horizon curves of one pixel as Moon-fixed (longitude, latitude) nodes, degrees.

    Node k is where the body's centre is, seen from the Moon's centre at its
    mean distance, when it sits at the horizon bearing ``b_k`` and elevation
    ``horizon_k - offset`` seen from ``r_m * up`` (offset: the Sun's mean
    semi-diameter; 0 for the Earth). Longitudes are unwrapped around ``b_k``
    (the bearing seen from the pole); latitudes are the thresholds. The loop
    has no branch and no libm call (within 3e-6 deg of them), so it vectorises.
    """
    n = horizon_deg.size
    to_rad = np.pi / 180.0
    cos_off = np.cos(sun_offset_deg * to_rad)
    sin_off = np.sin(sun_offset_deg * to_rad)
    e0, e1, e2 = east[0], east[1], east[2]
    n0, n1, n2 = north[0], north[1], north[2]
    u0, u1, u2 = up[0], up[1], up[2]
    spacing_deg = 360.0 / n
    inv_earth = 1.0 / earth_distance_m
    inv_sun = 1.0 / sun_distance_m
    for k in range(n):
        # Local azimuth b_k - lon by angle subtraction (no trig per node).
        sa = sin_b[k] * cos_lon - cos_b[k] * sin_lon
        ca = cos_b[k] * cos_lon + sin_b[k] * sin_lon
        hx = sa * e0 + ca * n0
        hy = sa * e1 + ca * n1
        hz = sa * e2 + ca * n2
        se = sin_small(horizon_deg[k] * to_rad)
        ce = np.sqrt(1.0 - se * se)
        earth_lam[k], earth_delta[k] = _node(hx, hy, hz, u0, u1, u2, r_m, ce, se, earth_distance_m, inv_earth,
                                             cos_b[k], sin_b[k], k * spacing_deg)
        sun_lam[k], sun_delta[k] = _node(hx, hy, hz, u0, u1, u2, r_m, ce * cos_off + se * sin_off,
                                         se * cos_off - ce * sin_off, sun_distance_m, inv_sun, cos_b[k], sin_b[k],
                                         k * spacing_deg)
    for k in range(1, n):  # guard against a non-monotone curve (skyline steeper than ~1/colatitude)
        if earth_lam[k] <= earth_lam[k - 1]:
            earth_lam[k] = earth_lam[k - 1] + 1e-9
        if sun_lam[k] <= sun_lam[k - 1]:
            sun_lam[k] = sun_lam[k - 1] + 1e-9


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
                      earth_distance_m, n_bins):
    """One pixel's Sun and Earth threshold tables (:func:`_threshold_table` of its
    :func:`_horizon_nodes`)."""
    n_az = horizon_deg.size
    sun_lam = np.empty(n_az)
    sun_delta = np.empty(n_az)
    earth_lam = np.empty(n_az)
    earth_delta = np.empty(n_az)
    _horizon_nodes(east, north, up, np.cos(np.radians(lon_deg)), np.sin(np.radians(lon_deg)), r_m, horizon_deg,
                   cos_b, sin_b, sun_offset_deg, sun_distance_m, earth_distance_m, sun_lam, sun_delta, earth_lam,
                   earth_delta)
    return _threshold_table(sun_lam, sun_delta, n_bins), _threshold_table(earth_lam, earth_delta, n_bins)


# numpy's error model: a division by zero gives inf rather than raising (nodes are strictly
# increasing, so none does), which lets the slope loop vectorise
@njit(cache=True, error_model="numpy")
def _threshold_table(lam, delta, n_bins):
    """Periodic piecewise-linear threshold ``delta(lam)`` over [0, 360) deg.

    Returns node longitudes, values and slopes, padded with nodes of the
    neighbouring turns so that the first node is at or below 0 and the last
    above 360; and for each of ``n_bins`` regular bins the last node at or
    before the bin's start.
    """
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
    slope_e = np.zeros(m)
    for i in range(m - 1):
        slope_e[i] = (delta_e[i + 1] - delta_e[i]) / (lam_e[i + 1] - lam_e[i])
    first = np.empty(n_bins, dtype=np.int64)
    i = 0
    for j in range(n_bins):
        edge = j * 360.0 / n_bins
        while lam_e[i + 1] <= edge:
            i += 1
        first[j] = i
    return lam_e, delta_e, slope_e, first


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
        # a NaN (or inf) anywhere makes the row's sum non-finite: no horizon-sized temporary
        self.valid = np.isfinite(self.height_m) & np.isfinite(self.horizon_deg.sum(axis=1, dtype=np.float64))
        self.r_m = np.where(self.valid, MOON_RADIUS_M + self.height_m + float(observer_height_m), MOON_RADIUS_M)
        self.lon_deg = np.ascontiguousarray(lon.ravel(), dtype=np.float64)
