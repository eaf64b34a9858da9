"""One point on a DEM: horizon, Sun and Earth statistics and slope (``sitesel site``)."""

from __future__ import annotations

import warnings

import numpy as np

from .config import resolve_period
from .ephemeris import body_track, covered_end, validate_time_range
from .errors import SiteselError, SiteselWarning
from .horizon import bearings_deg, horizon_map, search_reach_m, short_reach_warning
from .surface import footprint_size_px, slope_roughness
from .terrain.grid import bearing_to_local_azimuth_deg, latlon_to_xy, wrap_longitude_deg
from .terrain.io import open_dem, read_far_field, read_terrain
from .terrain.region import Region


def site_report(lat_deg: float, lon_deg: float, dem_path, *, observer_height_m: float = 2.0,
                period: dict | None = None, n_azimuths: int = 360, max_distance_m: float = 150e3,
                baseline_m: float = 20.0, far_field_path=None, quiet: bool = True) -> tuple[dict, dict]:
    """Summary (JSON-ready dict, DESIGN.md section 3) and time series for one point.

    The DEM is read only within ``max_distance_m`` of the point; beyond it, and
    beyond the DEM's edge, terrain comes from ``far_field_path`` if given (a wider,
    coarser DEM, as ``[dem] far_field`` in a run). The horizon is the exhaustive
    ray-march (the reference kernel): one pixel is cheap. Returns ``(summary,
    series)``; ``series`` holds the per-step arrays. Every input is checked before the
    ephemeris is computed (with a progress bar on stderr unless ``quiet``).
    """
    if not -90.0 <= lat_deg < 0.0:
        raise SiteselError(f"latitude {lat_deg} is not in the southern hemisphere; give degrees in [-90, 0)")
    if not -360.0 <= lon_deg <= 360.0:
        raise SiteselError(f"LAT {lat_deg:g} LON {lon_deg:g} is not a point on the Moon: give LON in -180..180 "
                           "(or 0..360) degrees")
    # one name per point: east-positive longitude in [-180, 180) (DESIGN.md section 2), and 0 at the
    # pole, whose azimuths are then grid bearings, as its summary says
    at_pole = bool(np.hypot(*latlon_to_xy(lat_deg, lon_deg)) < 1e-6)
    lon_deg = 0.0 if at_pole else float(wrap_longitude_deg(lon_deg))
    period = {"start": "2027-01-01", "step_hours": 1.0, **(period or {})}
    start, end, step_hours = resolve_period(period)
    validate_time_range(start, end, step_hours)

    x_m, y_m = latlon_to_xy(lat_deg, lon_deg)
    with open_dem(dem_path) as src:
        if not src.grid.contains(x_m, y_m):
            left, bottom, right, top = src.grid.bounds_m
            raise SiteselError(
                f"point {lat_deg} {lon_deg} (x {x_m / 1e3:.1f} km, y {y_m / 1e3:.1f} km) is outside {dem_path} "
                f"(x {left / 1e3:.1f}..{right / 1e3:.1f} km, y {bottom / 1e3:.1f}..{top / 1e3:.1f} km); "
                "pick a point the DEM covers"
            )
    region = Region(centre_lat_deg=lat_deg, centre_lon_deg=lon_deg, radius_km=max_distance_m / 1e3)
    with warnings.catch_warnings():
        # The search radius reaching past a small DEM is normal here: the horizon uses what there is.
        warnings.filterwarnings("ignore", message="region extends beyond")
        terrain = read_terrain(dem_path, region=region)
    far_field = None if far_field_path is None else read_far_field(far_field_path, terrain, max_distance_m)
    row_f, col_f = terrain.grid.rowcol(x_m, y_m)
    row, col = int(np.clip(np.rint(row_f), 0, terrain.shape[0] - 1)), int(np.clip(np.rint(col_f), 0, terrain.shape[1] - 1))
    ground_m = float(terrain.height_m[row, col])
    if not np.isfinite(ground_m):
        raise SiteselError(f"the DEM has no data at {lat_deg} {lon_deg}; pick a point with valid heights")
    reach_m = search_reach_m((x_m, y_m, x_m, y_m), terrain, far_field)
    warning = short_reach_warning(reach_m, max_distance_m, far_field, "the point")
    if warning:
        warnings.warn(warning, SiteselWarning, stacklevel=2)

    rows, cols = slice(row, row + 1), slice(col, col + 1)
    horizon_deg = horizon_map(terrain, n_azimuths, observer_height_m, max_distance_m, rows=rows, cols=cols,
                              method="raymarch", far_field=far_field)[0, 0]
    # Slope needs only the footprint: a small window around the pixel.
    pad = footprint_size_px(terrain.resolution_m, baseline_m) // 2 + 1
    window = terrain.window(slice(max(row - pad, 0), row + pad + 1), slice(max(col - pad, 0), col + pad + 1))
    slope_deg, _ = slope_roughness(window, baseline_m=baseline_m)
    slope_here = float(slope_deg[row - max(row - pad, 0), col - max(col - pad, 0)])

    from .visibility import point_series

    track = body_track(start, end, step_hours, quiet=quiet)
    series = point_series(lat_deg, lon_deg, ground_m, observer_height_m, horizon_deg, track)
    azimuth_deg = bearing_to_local_azimuth_deg(bearings_deg(n_azimuths), lon_deg)
    order = np.argsort(azimuth_deg)
    series["times_utc"] = track.times_utc
    summary = {
        "lat": float(lat_deg),
        "lon": float(lon_deg),
        "x_m": float(x_m),
        "y_m": float(y_m),
        "height_m": ground_m,
        "slope_deg": slope_here if np.isfinite(slope_here) else None,
        "azimuth_deg": [round(float(a), 4) for a in azimuth_deg[order]],
        "horizon_deg": [round(float(h), 4) for h in horizon_deg[order]],
        "observer_height_m": float(observer_height_m),
        "start": start,
        "end": covered_end(end, track),
        "step_hours": step_hours,
        "pixel": {"row": row, "col": col, "resolution_m": terrain.resolution_m},
        "terrain_reach_km": reach_m / 1e3,
        "azimuth_reference": "grid north (the point is the pole)" if at_pole else "local north",
    }
    for key in ("sun_lit_fraction", "sun_disc_fraction", "longest_night_h", "earth_visible_fraction",
                "longest_blackout_h"):
        summary[key] = float(series[key])
    for key in ("longest_nights", "monthly_sun_lit_fraction"):
        if key in series:
            summary[key] = series[key]
    return summary, series
