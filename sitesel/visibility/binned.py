"""Time-independent fractions: the track binned by longitude, with cumulative key tables."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..constants import SUN_RADIUS_M
from ..ephemeris import Track
from ..terrain.model import Terrain
from .nodes import _bearing_cos_sin, _margin, _pixel_thresholds, _Pixels
from .track import _BodySteps


#: Longitude bin widths (Sun, Earth) and key grid step of the time-independent
#: (binned) fractions, degrees. The Earth librates within ~16 deg of longitude and
#: its latitude moves with its longitude, so its bins are narrower.
_BINNED_LAM_DEG = {"sun": 0.5, "earth": 0.05}


_BINNED_KEY_DEG = 0.005


@njit(cache=True)
def _cdf_tables(lam, key, radius, want_disc, lam_width, k0, dk, n_grid):
    """Per non-empty longitude bin: mean longitude, and on the key grid
    ``k0 + g * dk`` the number of steps with ``key < grid`` and (Sun) the sum of
    the visible disc fraction if the threshold were at the grid value."""
    n_lam = int(np.ceil(360.0 / lam_width))
    count = np.zeros(n_lam, dtype=np.int64)
    lam_sum = np.zeros(n_lam)
    for t in range(lam.size):
        j = min(int(lam[t] / lam_width), n_lam - 1)
        count[j] += 1
        lam_sum[j] += lam[t]
    index = np.full(n_lam, -1, dtype=np.int64)
    n_used = 0
    for j in range(n_lam):
        if count[j] > 0:
            index[j] = n_used
            n_used += 1
    lam_mean = np.empty(n_used)
    for j in range(n_lam):
        if index[j] >= 0:
            lam_mean[index[j]] = lam_sum[j] / count[j]
    below = np.zeros((n_used, n_grid + 1))
    disc = np.zeros((n_used, n_grid + 1))
    for t in range(lam.size):
        b = index[min(int(lam[t] / lam_width), n_lam - 1)]
        # key < grid for every grid point above key: a +1 step, summed below.
        g = max(0, min(int(np.floor((key[t] - k0) / dk)) + 1, n_grid))
        below[b, g] += 1.0
        if want_disc:
            # Visible disc fraction rises from 0 at margin 0 to 1 at margin 2 * radius.
            g_full = max(0, min(int(np.ceil((key[t] + 2.0 * radius[t] - k0) / dk)), n_grid))
            disc[b, g_full] += 1.0
            for gg in range(g, g_full):
                u = (k0 + gg * dk - key[t]) / radius[t] - 1.0
                u = min(1.0, max(-1.0, u))
                frac = 1.0 - (np.arccos(u) - u * np.sqrt(1.0 - u * u)) / np.pi
                disc[b, gg] += frac
                disc[b, gg + 1] -= frac
    for b in range(n_used):
        for g in range(1, n_grid + 1):
            below[b, g] += below[b, g - 1]
            disc[b, g] += disc[b, g - 1]
    return lam_mean, below[:, :n_grid].astype(np.float32), disc[:, :n_grid].astype(np.float32)


def _binned_tables(steps: _BodySteps, name: str):
    """``steps``, and the tables :func:`_binned_sum` reads: its per-longitude-bin mean
    longitudes, their threshold-table bins, the key grid's start, the cumulative key tables
    (see :func:`_cdf_tables`), and their last columns (each bin's step count and disc sum)
    in float64."""
    pad = 2.0 * steps.max_radius_deg + 2 * _BINNED_KEY_DEG
    k0 = float(steps.key_deg.min()) - pad
    n_grid = int(np.ceil((float(steps.key_deg.max()) + pad - k0) / _BINNED_KEY_DEG)) + 1
    lam_mean, below, disc = _cdf_tables(steps.lam_deg, steps.key_deg, steps.radius_deg, name == "sun",
                                        _BINNED_LAM_DEG[name], k0, _BINNED_KEY_DEG, n_grid)
    # each bin's threshold-table bin, as a step's (no division per pixel)
    lam_bin = steps.bin_of(lam_mean)
    last = tuple(np.ascontiguousarray(table[:, -1], dtype=np.float64) for table in (below, disc))
    return steps, (lam_mean, lam_bin, k0, below, disc) + last


class BinnedTrack:
    """A track reduced, once, to per-longitude-bin cumulative tables for
    :func:`visibility_fractions` (whose cost then does not depend on the number
    of time steps). Build it once per run and reuse it for every tile."""

    def __init__(self, track: Track, n_azimuths: int):
        self.n_steps = len(track)
        self.n_azimuths = int(n_azimuths)
        self.bodies = {
            name: _binned_tables(_BodySteps(position, radius_m, 2 * self.n_azimuths), name)
            for name, position, radius_m in (("sun", track.sun_m, SUN_RADIUS_M), ("earth", track.earth_m, 0.0))
        }


@njit(cache=True, inline="always")
def _table_at(table, b, x):
    """Row ``b`` of a cumulative table at fractional grid position ``x``, 0 < x < last."""
    g = int(x)
    return table[b, g] + (x - g) * (table[b, g + 1] - table[b, g])


@njit(cache=True)
def _binned_sum(lam_e, delta_e, slope_e, first, tables, dk, want_count, want_disc):
    """(steps visible, sum of the visible disc fraction) of one threshold table over the binned
    track (``tables``: see :func:`_binned_tables`); each is 0 unless wanted."""
    lam_mean, lam_bin, k0, below, disc, below_last, disc_last = tables
    n_vis = 0.0
    disc_sum = 0.0
    inv_dk = 1.0 / dk
    last = below.shape[1] - 1
    for b in range(lam_mean.size):
        tau = _margin(lam_e, delta_e, slope_e, first, lam_mean[b], lam_bin[b], 0.0)
        x = (tau - k0) * inv_dk
        # Off the key grid the tables hold their first column, 0 (the grid starts below every
        # key), or their last, read from small arrays of their own: most bins are off the grid
        # (the body always or never visible there), and the far end of each table row cost a
        # cache miss (1-6% of the fractions' time, measured with benchmarks/ab_revisions.py).
        if x <= 0.0:
            continue
        if x >= last:
            if want_count:
                n_vis += below_last[b]
            if want_disc:
                disc_sum += disc_last[b]
            continue
        if want_count:
            n_vis += _table_at(below, b, x)
        if want_disc:
            disc_sum += _table_at(disc, b, x)
    return n_vis, disc_sum


@njit(cache=True, parallel=True)
def _fractions_kernel(east, north, up, lon_deg, r_m, horizon_deg, valid, s_rad_mean, s_dist, e_dist, n_bins,
                      e_window, s_tables, e_tables, dk, out):
    """out columns: sun steps lit, disc sum, earth steps visible (NaN where invalid)."""
    n_pix, n_az = horizon_deg.shape
    cos_b, sin_b = _bearing_cos_sin(n_az)
    for p in prange(n_pix):
        if not valid[p]:
            out[p, 0] = np.nan
            out[p, 1] = np.nan
            out[p, 2] = np.nan
            continue
        sun_table, earth_table = _pixel_thresholds(east[p], north[p], up[p], lon_deg[p], r_m[p], horizon_deg[p],
                                                   cos_b, sin_b, s_rad_mean, s_dist, e_dist, n_bins, e_window)
        n_lit, disc = _binned_sum(*sun_table, s_tables, dk, True, True)
        n_vis = _binned_sum(*earth_table, e_tables, dk, True, False)[0]
        out[p, 0] = n_lit
        out[p, 1] = disc
        out[p, 2] = n_vis


def visibility_fractions(terrain: Terrain, horizon_deg: np.ndarray, track, observer_height_m: float,
                         rows: slice | None = None, cols: slice | None = None) -> dict[str, np.ndarray]:
    """``sun_lit_fraction``, ``sun_disc_fraction`` and ``earth_visible_fraction`` at a
    cost independent of the number of time steps.

    Same arguments and conventions as :func:`visibility_layers`; ``track`` is a
    :class:`~sitesel.ephemeris.Track` or, better when called per tile, a
    :class:`BinnedTrack` built once. The time steps are grouped into bins of
    the body's Moon-fixed longitude (0.5 deg for the Sun, 0.05 deg for the
    Earth), and each bin keeps the cumulative distribution of the step keys on
    a 0.005-deg grid; a pixel's threshold is evaluated once per bin (at the
    bin's mean longitude) and looked up in its distribution. Cost per pixel:
    O(K + number of bins) (about 1000), for any span. The approximations over
    :func:`visibility_layers` are the threshold's variation within a bin (at
    most slope * bin / 2, first-order symmetric) and the linear interpolation
    of step counts on the key grid: at most 0.27 percentage points on the
    rugged test horizons (asserted < 0.5 in tests/test_visibility.py) and
    0.36 on the 400 x 400 px synthetic demo terrain, over spans of a month or more.
    Over shorter spans at fine steps a bin holds the steps of one pass of the body,
    whose count is not averaged: two weeks at 0.5 h missed the sunlit fraction by up to
    1.6 points at steep skylines (the disc fraction, a smooth function of the margin,
    stayed within 0.04 points); use :func:`visibility_layers` there.
    """
    binned = track if isinstance(track, BinnedTrack) else None
    px = _Pixels(terrain, horizon_deg, observer_height_m, rows, cols)
    if binned is None or binned.n_azimuths != px.n_az:
        binned = BinnedTrack(track, px.n_az)
    sun, s_tables = binned.bodies["sun"]
    earth, e_tables = binned.bodies["earth"]
    out = np.empty((px.horizon_deg.shape[0], 3))
    _fractions_kernel(px.east, px.north, px.up, px.lon_deg, px.r_m, px.horizon_deg, px.valid, sun.mean_radius_deg,
                      sun.mean_distance_m, earth.mean_distance_m, 2 * px.n_az, earth.lon_window, s_tables, e_tables,
                      _BINNED_KEY_DEG, out)
    n_steps = max(binned.n_steps, 1)
    layers = {"sun_lit_fraction": out[:, 0] / n_steps, "sun_disc_fraction": out[:, 1] / n_steps,
              "earth_visible_fraction": out[:, 2] / n_steps}
    return {name: value.reshape(px.shape).astype(np.float32) for name, value in layers.items()}
