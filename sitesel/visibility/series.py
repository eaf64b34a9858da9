"""One point's exact per-step time series, and exact gap metrics of chosen pixels."""

from __future__ import annotations

import numpy as np

from ..constants import MOON_RADIUS_M, SUN_RADIUS_M
from ..ephemeris import Track
from ..horizon import bearings_deg
from ..terrain.grid import local_frame
from ..terrain.model import Terrain
from .nodes import _Pixels


def disc_visible_fraction(u):
    """Visible area fraction of a disc whose centre is ``u`` radii above a flat horizon line."""
    u = np.clip(np.asarray(u, dtype=np.float64), -1.0, 1.0)
    return 1.0 - (np.arccos(u) - u * np.sqrt(1.0 - u * u)) / np.pi


def _true_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start indices and lengths of the runs of True in a 1-D boolean array."""
    padded = np.concatenate(([False], np.asarray(mask, dtype=bool), [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = edges[0::2], edges[1::2]
    return starts, ends - starts


def body_directions(lat_deg: float, lon_deg: float, radius_m: float, position_m: np.ndarray):
    """Exact topocentric local azimuth (deg, clockwise from local north), elevation (deg)
    and distance (m) of a body at Moon-fixed ``position_m`` (T, 3), seen from the
    point at ``radius_m`` from the Moon's centre above (lat, lon)."""
    east, north, up = local_frame(lat_deg, lon_deg)
    v = np.asarray(position_m) - radius_m * up
    distance_m = np.linalg.norm(v, axis=-1)
    elevation = np.degrees(np.arcsin(np.clip(v @ up / distance_m, -1.0, 1.0)))
    azimuth = np.degrees(np.arctan2(v @ east, v @ north)) % 360.0
    return azimuth, elevation, distance_m


def _horizon_at(bearing_deg, horizon_deg_1d):
    horizon = np.asarray(horizon_deg_1d, dtype=np.float64)
    return np.interp(bearing_deg, bearings_deg(horizon.size), horizon, period=360.0)


def point_series(lat_deg, lon_deg, ground_height_m, observer_height_m, horizon_deg_1d, track: Track,
                 n_longest: int = 5) -> dict:
    """Exact per-time-step Sun and Earth visibility at one point (used by ``sitesel site``).

    Returns per-time arrays ``sun_azimuth_deg``/``earth_azimuth_deg`` (local
    azimuth, clockwise from local north; grid north at the pole),
    ``sun_elevation_deg``/``earth_elevation_deg`` (topocentric), ``sun_disc_visible``
    (0..1) and ``earth_visible`` (bool); the summary metrics ``sun_lit_fraction``,
    ``sun_disc_fraction``, ``longest_night_h``, ``earth_visible_fraction``,
    ``longest_blackout_h``, ``longest_sunlit_h``; ``longest_nights``, the
    ``n_longest`` longest nights as dicts with ``start``, ``end`` (ISO UTC) and
    ``hours``; and ``monthly_sun_lit_fraction`` (dicts with ``month`` and
    ``sun_lit_fraction``, ``earth_visible_fraction``).
    """
    radius_m = MOON_RADIUS_M + float(ground_height_m) + float(observer_height_m)
    lon_used = 0.0 if lat_deg <= -90.0 else float(lon_deg)  # grid north at the pole
    sun_az, sun_el, sun_dist = body_directions(lat_deg, lon_used, radius_m, track.sun_m)
    earth_az, earth_el, _ = body_directions(lat_deg, lon_used, radius_m, track.earth_m)
    sun_horizon = _horizon_at(sun_az + lon_used, horizon_deg_1d)
    earth_horizon = _horizon_at(earth_az + lon_used, horizon_deg_1d)
    rho_deg = np.degrees(np.arcsin(SUN_RADIUS_M / sun_dist))
    sun_disc = disc_visible_fraction((sun_el - sun_horizon) / rho_deg)
    sun_lit = sun_el + rho_deg > sun_horizon
    earth_visible = earth_el > earth_horizon
    dt = float(track.step_hours)

    def longest(mask):
        _, lengths = _true_runs(mask)
        return float(lengths.max() * dt) if lengths.size else 0.0

    starts, lengths = _true_runs(~sun_lit)
    order = np.argsort(-lengths, kind="stable")[:n_longest]
    step = np.timedelta64(int(round(dt * 3600)), "s")
    nights = [
        {"start": str(track.times_utc[s]), "end": str(track.times_utc[s] + n * step), "hours": float(n * dt)}
        for s, n in zip(starts[order], lengths[order])
    ]
    months = track.times_utc.astype("datetime64[M]")
    monthly = []
    for month in np.unique(months):
        sel = months == month
        monthly.append({"month": str(month), "sun_lit_fraction": float(sun_lit[sel].mean()),
                        "earth_visible_fraction": float(earth_visible[sel].mean())})
    return {
        "sun_azimuth_deg": sun_az,
        "sun_elevation_deg": sun_el,
        "earth_azimuth_deg": earth_az,
        "earth_elevation_deg": earth_el,
        "sun_disc_visible": sun_disc,
        "sun_lit": sun_lit,
        "earth_visible": earth_visible,
        "sun_lit_fraction": float(sun_lit.mean()) if sun_lit.size else 0.0,
        "sun_disc_fraction": float(sun_disc.mean()) if sun_disc.size else 0.0,
        "longest_night_h": longest(~sun_lit),
        "earth_visible_fraction": float(earth_visible.mean()) if earth_visible.size else 0.0,
        "longest_blackout_h": longest(~earth_visible),
        "longest_sunlit_h": longest(sun_lit),
        "longest_nights": nights,
        "monthly_sun_lit_fraction": monthly,
    }


def gap_statistics(terrain: Terrain, horizon_deg: np.ndarray, track: Track, observer_height_m: float,
                   pixels, rows: slice | None = None, cols: slice | None = None,
                   long_night_h: float = 72.0) -> list[dict]:
    """Exact per-time-step metrics for selected pixels of a window.

    ``pixels`` is a sequence of (row, col) indices within the window
    ``rows`` x ``cols`` (whose horizons ``horizon_deg`` holds). Returns one dict
    per pixel with ``row``, ``col``, the five summary metrics of
    :func:`point_series`, ``longest_sunlit_h``, ``n_long_nights`` (nights of at
    least ``long_night_h``) and ``longest_nights``.
    """
    px = _Pixels(terrain, horizon_deg, observer_height_m, rows, cols)
    results = []
    for row, col in pixels:
        p = int(row) * px.shape[1] + int(col)
        if not px.valid[p]:
            results.append({"row": int(row), "col": int(col), "valid": False})
            continue
        series = point_series(px.lat_deg[p], px.lon_deg[p], px.height_m[p], observer_height_m,
                              px.horizon_deg[p], track, n_longest=len(track))
        long_nights = sum(1 for night in series["longest_nights"] if night["hours"] >= long_night_h - 1e-9)
        results.append({
            "row": int(row), "col": int(col), "valid": True,
            **{key: series[key] for key in ("sun_lit_fraction", "sun_disc_fraction", "longest_night_h",
                                            "earth_visible_fraction", "longest_blackout_h", "longest_sunlit_h")},
            "n_long_nights": long_nights,
            "longest_nights": series["longest_nights"][:5],
        })
    return results
