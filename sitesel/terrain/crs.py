"""Checks that a raster is on the LOLA south polar stereographic grid, and length units to metres."""

from __future__ import annotations

import re

import numpy as np

from ..constants import MOON_RADIUS_M, SOUTH_POLAR_STEREO_PROJ
from ..errors import SiteselError


#: Metres per unit for the length unit names found in labels and GeoTIFF metadata.
_LENGTH_UNITS_M = {
    **dict.fromkeys(("m", "meter", "meters", "metre", "metres"), 1.0),
    **dict.fromkeys(("km", "kilometer", "kilometers", "kilometre", "kilometres"), 1000.0),
}


def _proj_params(crs) -> dict:
    """PROJ parameters of a rasterio CRS (empty dict when it has none)."""
    if crs is None:
        return {}
    try:
        return dict(crs.to_dict())
    except Exception:  # noqa: BLE001 - a CRS PROJ cannot express is simply not ours
        return {}


def _crs_label(crs) -> str:
    """The CRS's name (from its WKT) and PROJ string, for error messages and `sitesel info`."""
    if crs is None:
        return "no CRS"
    proj4 = crs.to_proj4().replace("=True", "")  # rasterio spells bare PROJ flags as "+no_defs=True"
    match = re.match(r'(?:PROJ|GEOG)C(?:RS|S)\["([^"]*)"', crs.to_wkt())
    name = match.group(1) if match else None
    return f'"{name}" ({proj4})' if name and name != "unknown" else proj4


def check_south_polar_crs(crs, path) -> None:
    """Raise :class:`SiteselError` unless ``crs`` is the LOLA south polar stereographic grid."""
    p = _proj_params(crs)
    expected = f"expected the lunar south polar stereographic grid ({SOUTH_POLAR_STEREO_PROJ})"
    if not p:
        raise SiteselError(f"{path}: the DEM has no CRS; if it is on the LOLA south polar stereographic grid, "
                           f"set it, e.g. gdal_edit.py -a_srs '{SOUTH_POLAR_STEREO_PROJ}' {path}")
    found = _crs_label(crs)
    radius = p.get("R", p.get("a"))
    if p.get("b") not in (None, radius) or p.get("rf") not in (None, 0) or "ellps" in p or "datum" in p:
        radius = None
    if radius is None or not np.isclose(float(radius), MOON_RADIUS_M, atol=1.0):
        body = "an Earth CRS" if radius is None or float(radius) > 6e6 else "not the 1737.4 km lunar sphere"
        raise SiteselError(f"{path}: CRS {found} is {body}; {expected}")
    if p.get("proj") != "stere":
        raise SiteselError(f"{path}: CRS {found} is not polar stereographic; {expected}")
    lat_0 = float(p.get("lat_0", 0.0))
    if np.isclose(lat_0, 90.0):
        raise SiteselError(f"{path}: CRS {found} is a north-polar product; sitesel needs a south-polar DEM ({expected})")
    if p.get("units", "m") != "m":
        raise SiteselError(f"{path}: CRS {found} has map units {p['units']!r}; sitesel reads metres. Reproject, e.g. "
                           f"gdalwarp -t_srs '{SOUTH_POLAR_STEREO_PROJ}' {path} out.tif")
    k = float(p.get("k", p.get("k_0", 1.0)))
    ok = (
        np.isclose(lat_0, -90.0)
        and np.isclose(float(p.get("lat_ts", -90.0)), -90.0)
        and np.isclose(float(p.get("lon_0", 0.0)), 0.0)
        and np.isclose(k, 1.0)
        and np.isclose(float(p.get("x_0", 0.0)), 0.0)
        and np.isclose(float(p.get("y_0", 0.0)), 0.0)
    )
    if not ok:
        raise SiteselError(f"{path}: CRS {found} has other projection parameters; {expected}")


# --------------------------------------------------------------------------- units


def _unit_scale_to_m(units: str | None, path) -> float:
    """Metres per stored height unit (None means metres)."""
    if units is None:
        return 1.0
    scale = _LENGTH_UNITS_M.get(str(units).strip().lower())
    if scale is None:
        raise SiteselError(f"{path}: height unit {units!r} is not understood; expected metres or kilometres")
    return scale


def _raster_units(ds) -> str | None:
    """Height unit declared by a raster (band unit type, then 'units' metadata)."""
    band_unit = ds.units[0] if ds.units else None
    if band_unit:
        return band_unit
    for tags in (ds.tags(1), ds.tags()):
        for key in ("units", "UNITS", "unit", "UNIT"):
            if tags.get(key):
                return tags[key]
    return None
