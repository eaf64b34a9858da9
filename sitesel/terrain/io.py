"""Reading and writing DEMs on the LOLA south polar stereographic grid.

Every reader returns a :class:`~sitesel.terrain.model.Terrain` with heights in
metres above the 1737.4 km sphere (converted on read, DESIGN.md section 2) and
NaN for nodata. A :class:`Region` limits the read to a window, so a multi-GB
product is never loaded whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..constants import MOON_RADIUS_M, SOUTH_POLAR_STEREO_PROJ
from ..errors import SiteselError
from .grid import Grid, latlon_to_xy, scale_factor
from .model import Terrain

#: Files larger than this get a partial checksum (see :func:`file_sha256`).
FULL_HASH_LIMIT_BYTES = 128 * 1024**2
#: Bytes hashed at each end of a large file for the partial checksum.
PARTIAL_HASH_CHUNK_BYTES = 1024**2

#: Metres per unit for the length unit names found in labels and GeoTIFF metadata.
_LENGTH_UNITS_M = {
    **dict.fromkeys(("m", "meter", "meters", "metre", "metres"), 1.0),
    **dict.fromkeys(("km", "kilometer", "kilometers", "kilometre", "kilometres"), 1000.0),
}


# --------------------------------------------------------------------------- regions


@dataclass(frozen=True)
class Region:
    """Part of a DEM to read: a circle (centre latitude/longitude, radius) or map bounds.

    Give either ``centre_lat_deg``, ``centre_lon_deg`` and ``radius_km`` (ground
    distance), or all of ``x_min_m``, ``x_max_m``, ``y_min_m``, ``y_max_m``
    (map metres on the LOLA south polar stereographic grid).
    """

    centre_lat_deg: float | None = None
    centre_lon_deg: float | None = None
    radius_km: float | None = None
    x_min_m: float | None = None
    x_max_m: float | None = None
    y_min_m: float | None = None
    y_max_m: float | None = None

    def __post_init__(self):
        circle = (self.centre_lat_deg, self.centre_lon_deg, self.radius_km)
        box = (self.x_min_m, self.x_max_m, self.y_min_m, self.y_max_m)
        has_circle = any(v is not None for v in circle)
        has_box = any(v is not None for v in box)
        if has_circle == has_box:
            raise SiteselError(
                "region: give either centre_lat_deg/centre_lon_deg/radius_km or "
                "x_min_m/x_max_m/y_min_m/y_max_m, not both or neither"
            )
        if has_circle:
            if any(v is None for v in circle):
                raise SiteselError("region: centre_lat_deg, centre_lon_deg and radius_km must all be given")
            if not -90.0 <= self.centre_lat_deg < 0.0:
                raise SiteselError(
                    f"region: centre_lat_deg = {self.centre_lat_deg} is not in the southern hemisphere; "
                    "use a latitude in [-90, 0)"
                )
            if not self.radius_km > 0.0:
                raise SiteselError(f"region: radius_km = {self.radius_km} must be positive")
        else:
            if any(v is None for v in box):
                raise SiteselError("region: x_min_m, x_max_m, y_min_m and y_max_m must all be given")
            if not (self.x_min_m < self.x_max_m and self.y_min_m < self.y_max_m):
                raise SiteselError(
                    f"region: empty bounds x [{self.x_min_m}, {self.x_max_m}], y [{self.y_min_m}, {self.y_max_m}]; "
                    "need x_min_m < x_max_m and y_min_m < y_max_m"
                )

    def to_bounds_m(self) -> tuple[float, float, float, float]:
        """Map bounds ``(x_min_m, x_max_m, y_min_m, y_max_m)`` on the LOLA grid.

        A circle becomes the map box that contains it: the ground radius is
        scaled by the largest projection scale factor on the circle (at its
        point furthest from the pole), so the box never cuts the circle off.
        """
        if self.radius_km is None:
            return (float(self.x_min_m), float(self.x_max_m), float(self.y_min_m), float(self.y_max_m))
        x, y = latlon_to_xy(self.centre_lat_deg, self.centre_lon_deg)
        radius_m = self.radius_km * 1000.0
        lat_far = min(self.centre_lat_deg + np.degrees(radius_m / MOON_RADIUS_M), 0.0)
        half = radius_m * float(scale_factor(lat_far))
        return (float(x - half), float(x + half), float(y - half), float(y + half))


_REGION_KEYS = set(Region.__dataclass_fields__)


def region_from_config(table: dict) -> Region:
    """Build a :class:`Region` from a config ``[region]`` table; unknown keys are errors."""
    if not isinstance(table, dict):
        raise SiteselError(f"[region] must be a table, got {type(table).__name__}")
    unknown = sorted(set(table) - _REGION_KEYS)
    if unknown:
        raise SiteselError(
            f"[region]: unknown key {unknown[0]!r}; allowed keys are " + ", ".join(sorted(_REGION_KEYS))
        )
    values = {}
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SiteselError(f"[region] {key} = {value!r} must be a number")
        values[key] = float(value)
    return Region(**values)


def _window_for_bounds(grid: Grid, bounds_m, path) -> tuple[slice, slice]:
    """Row/column slices of ``grid`` that cover ``bounds_m`` (rounded outward, clipped)."""
    x_min, x_max, y_min, y_max = bounds_m
    left, bottom, right, top = grid.bounds_m
    if x_max <= left or x_min >= right or y_max <= bottom or y_min >= top:
        raise SiteselError(
            f"region x [{x_min:.0f}, {x_max:.0f}] m, y [{y_min:.0f}, {y_max:.0f}] m is outside {path} "
            f"(x [{left:.0f}, {right:.0f}] m, y [{bottom:.0f}, {top:.0f}] m); choose a region inside the DEM"
        )
    res = grid.resolution_m
    c0 = int(np.floor((x_min - grid.x0_m) / res + 1e-9))
    c1 = int(np.ceil((x_max - grid.x0_m) / res - 1e-9))
    r0 = int(np.floor((grid.y0_m - y_max) / res + 1e-9))
    r1 = int(np.ceil((grid.y0_m - y_min) / res - 1e-9))
    rows, cols = grid.shape
    clipped = (max(r0, 0), min(r1, rows), max(c0, 0), min(c1, cols))
    if clipped != (r0, r1, c0, c1):
        warnings.warn(f"region extends beyond {path}; it was clipped to the DEM", stacklevel=3)
    return slice(clipped[0], clipped[1]), slice(clipped[2], clipped[3])


# --------------------------------------------------------------------------- checksums

_HASH_CACHE: dict[tuple, tuple[str, str]] = {}


def file_sha256(path) -> tuple[str, str]:
    """SHA-256 of a file and its scope, cached by (path, size, mtime).

    Files up to ``FULL_HASH_LIMIT_BYTES`` are hashed whole (scope ``"full"``).
    Larger files (the 3.7 GB products) would take tens of seconds per read, so
    only the first and last ``PARTIAL_HASH_CHUNK_BYTES`` and the size are hashed
    (scope ``"head+tail+size"``): enough to tell products and truncations
    apart; ``sitesel fetch`` verifies downloads in full.
    """
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _HASH_CACHE:
        return _HASH_CACHE[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if st.st_size <= FULL_HASH_LIMIT_BYTES:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
            scope = "full"
        else:
            h.update(f.read(PARTIAL_HASH_CHUNK_BYTES))
            f.seek(st.st_size - PARTIAL_HASH_CHUNK_BYTES)
            h.update(f.read(PARTIAL_HASH_CHUNK_BYTES))
            h.update(str(st.st_size).encode())
            scope = "head+tail+size"
    _HASH_CACHE[key] = (h.hexdigest(), scope)
    return _HASH_CACHE[key]


# --------------------------------------------------------------------------- CRS checks


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
    k = float(p.get("k", p.get("k_0", 1.0)))
    ok = (
        np.isclose(lat_0, -90.0)
        and np.isclose(float(p.get("lat_ts", -90.0)), -90.0)
        and np.isclose(float(p.get("lon_0", 0.0)), 0.0)
        and np.isclose(k, 1.0)
        and np.isclose(float(p.get("x_0", 0.0)), 0.0)
        and np.isclose(float(p.get("y_0", 0.0)), 0.0)
        and p.get("units", "m") == "m"
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


# --------------------------------------------------------------------------- PDS3 labels

_PDS3_DTYPES = {
    "LSB_INTEGER": "<i", "PC_INTEGER": "<i", "VAX_INTEGER": "<i",
    "MSB_INTEGER": ">i", "SUN_INTEGER": ">i", "MAC_INTEGER": ">i", "INTEGER": ">i",
    "LSB_UNSIGNED_INTEGER": "<u", "PC_UNSIGNED_INTEGER": "<u", "VAX_UNSIGNED_INTEGER": "<u",
    "MSB_UNSIGNED_INTEGER": ">u", "SUN_UNSIGNED_INTEGER": ">u", "MAC_UNSIGNED_INTEGER": ">u",
    "UNSIGNED_INTEGER": ">u",
    "PC_REAL": "<f", "IEEE_REAL": ">f", "REAL": ">f", "FLOAT": ">f", "SUN_REAL": ">f", "MAC_REAL": ">f",
}
_PDS3_MISSING_KEYS = ("MISSING_CONSTANT", "MISSING", "NULL", "CORE_NULL", "INVALID_CONSTANT", "CORE_MISSING")


@dataclass(frozen=True)
class Pds3Label:
    """The parts of a PDS3 image label that define a LOLA-style DEM.

    ``offset``/``scaling_factor`` give ``value = DN * scaling_factor + offset`` in
    ``unit``; ``image_offset_bytes`` is where the image starts in ``data_path``.
    """

    label_path: Path
    data_path: Path | None
    lines: int
    line_samples: int
    dtype: np.dtype
    scaling_factor: float
    offset: float
    unit: str | None
    missing_values: tuple
    image_offset_bytes: int
    record_type: str | None
    record_bytes: int | None
    file_records: int | None
    map_projection_type: str
    center_latitude_deg: float
    center_longitude_deg: float
    radius_m: float
    map_scale_m: float
    line_projection_offset: float
    sample_projection_offset: float
    maximum_latitude_deg: float | None
    minimum_latitude_deg: float | None

    @property
    def image_bytes(self) -> int:
        return self.lines * self.line_samples * self.dtype.itemsize

    def grid(self) -> Grid:
        """The pixel-registered grid: pixel (0-based row r, col c) centre is at
        ``x = (c - SAMPLE_PROJECTION_OFFSET) * MAP_SCALE``,
        ``y = (LINE_PROJECTION_OFFSET - r) * MAP_SCALE`` (LOLA's 1-based formulas)."""
        s = self.map_scale_m
        return Grid(
            x0_m=-(self.sample_projection_offset + 0.5) * s,
            y0_m=(self.line_projection_offset + 0.5) * s,
            resolution_m=s,
            shape=(self.lines, self.line_samples),
        )


def _find_object(module, name):
    """First PVL object/group called ``name`` anywhere in ``module`` (depth first)."""
    for key, value in module.items():
        if hasattr(value, "items"):
            if key == name:
                return value
            found = _find_object(value, name)
            if found is not None:
                return found
    return None


def _quantity(value, default_unit=None):
    """(float value, unit string or None) of a PVL number or quantity."""
    units = getattr(value, "units", None)
    raw = getattr(value, "value", value)
    return float(raw), (str(units) if units is not None else default_unit)


def _label_number(obj, key, path, default_unit=None, required=True):
    if obj is None or key not in obj:
        if required:
            raise SiteselError(f"{path}: PDS3 label has no {key}; it does not describe a map-projected DEM")
        return None, None
    try:
        return _quantity(obj[key], default_unit)
    except (TypeError, ValueError) as exc:
        raise SiteselError(f"{path}: PDS3 label value {key} = {obj[key]!r} is not a number") from exc


def _length_to_m(value, unit, path, key) -> float:
    """A label length (``<km>``, ``<m/pix>``, ``<KM/PIXEL>``...; PDS default km) in metres."""
    scale = _LENGTH_UNITS_M.get((unit or "km").strip().lower().split("/")[0])
    if scale is None:
        raise SiteselError(f"{path}: unit <{unit}> of {key} is not understood; expected m or km")
    return value * scale


def _missing_values(image, dtype: np.dtype) -> tuple:
    values = []
    for key in _PDS3_MISSING_KEYS:
        if key not in image:
            continue
        v = image[key]
        v = getattr(v, "value", v)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if dtype.kind == "f" and isinstance(v, int) and dtype.itemsize == 4 and v > 2**24:
            # PDS hex constants (16#FF7FFFFB#) give the float's bit pattern.
            v = float(np.array(v & 0xFFFFFFFF, dtype=np.uint32).view(np.float32))
        values.append(float(v))
    return tuple(values)


def _resolve_sibling(folder: Path, name: str) -> Path | None:
    """``folder/name`` matched case-insensitively (PDS names are upper case, mirrors vary)."""
    exact = folder / name
    if exact.exists():
        return exact
    lower = name.lower()
    for p in folder.iterdir():
        if p.name.lower() == lower:
            return p
    return None


def _read_label_text(path: Path) -> str:
    """The label text of a detached .LBL, or the attached label at the start of an image file."""
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    text = head.decode("latin-1")
    end = re.search(r"^\s*END\s*$", text, flags=re.MULTILINE)
    if end is None:
        if len(head) == (1 << 20):
            raise SiteselError(f"{path}: no END statement in the first MiB; not a PDS3 label")
        return text
    return text[: end.end()]


_LABEL_CACHE: dict[tuple, Pds3Label] = {}


def parse_pds3_label(label_path, data_path=None) -> Pds3Label:
    """Parse a PDS3 label (detached .LBL or attached) with :mod:`pvl`.

    ``data_path`` overrides the file named by the ``^IMAGE`` pointer (used for a
    JP2 whose ``_JP2.LBL`` describes the uncompressed image). Results are cached
    by (path, size, mtime): pvl takes tens of ms per label and tiles re-read it.
    """
    label_path = Path(label_path)
    st = label_path.stat()
    key = (str(label_path.resolve()), st.st_size, st.st_mtime_ns, str(data_path))
    if key not in _LABEL_CACHE:
        _LABEL_CACHE[key] = _parse_pds3_label(label_path, data_path)
    return _LABEL_CACHE[key]


def _parse_pds3_label(label_path: Path, data_path) -> Pds3Label:
    with warnings.catch_warnings():
        # pvl 1.x warns about its own deprecated Units class when it is imported.
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        import pvl

    try:
        module = pvl.loads(_read_label_text(label_path))
    except (pvl.exceptions.LexerError, pvl.exceptions.ParseError, ValueError) as exc:
        raise SiteselError(f"{label_path}: not a readable PDS3 label ({str(exc).splitlines()[0][:120]})") from exc
    image = _find_object(module, "IMAGE")
    proj = _find_object(module, "IMAGE_MAP_PROJECTION")
    if image is None:
        raise SiteselError(f"{label_path}: PDS3 label has no IMAGE object; it does not describe a DEM")
    if proj is None:
        raise SiteselError(f"{label_path}: PDS3 label has no IMAGE_MAP_PROJECTION; it is not a map-projected DEM")

    bands = int(image.get("BANDS", 1))
    if bands != 1:
        raise SiteselError(f"{label_path}: image has {bands} bands; a DEM has one band of heights")
    for key in ("LINE_PREFIX_BYTES", "LINE_SUFFIX_BYTES"):
        if int(image.get(key, 0)) != 0:
            raise SiteselError(f"{label_path}: {key} is not supported; convert the product to GeoTIFF first")
    sample_type = str(image.get("SAMPLE_TYPE", "")).upper()
    sample_bits = int(image.get("SAMPLE_BITS", 0))
    if sample_type not in _PDS3_DTYPES or sample_bits not in (8, 16, 32, 64):
        raise SiteselError(
            f"{label_path}: SAMPLE_TYPE {sample_type or '?'} with SAMPLE_BITS {sample_bits} is not a supported "
            "DEM sample format (integer or IEEE/PC real)"
        )
    dtype = np.dtype(f"{_PDS3_DTYPES[sample_type]}{sample_bits // 8}")

    rec_bytes = module.get("RECORD_BYTES")
    rec_bytes = int(getattr(rec_bytes, "value", rec_bytes)) if rec_bytes is not None else None
    file_records = module.get("FILE_RECORDS")
    file_records = int(file_records) if file_records is not None else None
    pointer = module.get("^IMAGE")
    pointed_file, image_offset = None, 0
    if isinstance(pointer, (list, tuple)):
        pointed_file, pointer = str(pointer[0]), pointer[1]
    if isinstance(pointer, str):
        pointed_file = pointer
    elif pointer is not None:
        start, unit = _quantity(pointer)
        if unit and unit.upper() == "BYTES":
            image_offset = int(start) - 1
        else:
            if rec_bytes is None:
                raise SiteselError(f"{label_path}: ^IMAGE points to a record but RECORD_BYTES is missing")
            image_offset = (int(start) - 1) * rec_bytes
    elif pointed_file is None:
        # A _JP2.LBL names its compressed file instead of pointing to an image.
        compressed = _find_object(module, "COMPRESSED_FILE")
        if compressed is not None and "FILE_NAME" in compressed:
            pointed_file = str(compressed["FILE_NAME"])
    if data_path is None:
        if pointed_file is not None:
            data_path = _resolve_sibling(label_path.parent, pointed_file)
            if data_path is None:
                raise SiteselError(
                    f"{label_path}: image file {pointed_file} named by ^IMAGE is missing; put it beside the label"
                )
        else:
            data_path = label_path  # attached label
    unit = image.get("UNIT")
    unit = str(unit) if unit is not None else None
    scaling, sf_unit = _quantity(image.get("SCALING_FACTOR", 1.0))
    offset, off_unit = _quantity(image.get("OFFSET", 0.0))
    unit = unit or off_unit or sf_unit

    ptype = str(proj.get("MAP_PROJECTION_TYPE", "")).upper()
    lat_c, _ = _label_number(proj, "CENTER_LATITUDE", label_path)
    lon_c, _ = _label_number(proj, "CENTER_LONGITUDE", label_path, required=False)
    radius, r_unit = _label_number(proj, "A_AXIS_RADIUS", label_path, default_unit="km")
    scale, s_unit = _label_number(proj, "MAP_SCALE", label_path, default_unit="km/pixel")
    lpo, _ = _label_number(proj, "LINE_PROJECTION_OFFSET", label_path)
    spo, _ = _label_number(proj, "SAMPLE_PROJECTION_OFFSET", label_path)
    max_lat, _ = _label_number(proj, "MAXIMUM_LATITUDE", label_path, required=False)
    min_lat, _ = _label_number(proj, "MINIMUM_LATITUDE", label_path, required=False)
    rotation, _ = _label_number(proj, "MAP_PROJECTION_ROTATION", label_path, required=False)
    if rotation not in (None, 0.0):
        raise SiteselError(f"{label_path}: MAP_PROJECTION_ROTATION = {rotation} is not supported; expected 0")
    lines, _ = _label_number(image, "LINES", label_path)
    samples, _ = _label_number(image, "LINE_SAMPLES", label_path)
    return Pds3Label(
        label_path=label_path,
        data_path=Path(data_path),
        lines=int(lines),
        line_samples=int(samples),
        dtype=dtype,
        scaling_factor=scaling,
        offset=offset,
        unit=unit,
        missing_values=_missing_values(image, dtype),
        image_offset_bytes=image_offset,
        record_type=str(module.get("RECORD_TYPE")) if module.get("RECORD_TYPE") is not None else None,
        record_bytes=rec_bytes,
        file_records=file_records,
        map_projection_type=ptype,
        center_latitude_deg=lat_c,
        center_longitude_deg=0.0 if lon_c is None else lon_c,
        radius_m=_length_to_m(radius, r_unit, label_path, "A_AXIS_RADIUS"),
        map_scale_m=_length_to_m(scale, s_unit, label_path, "MAP_SCALE"),
        line_projection_offset=lpo,
        sample_projection_offset=spo,
        maximum_latitude_deg=max_lat,
        minimum_latitude_deg=min_lat,
    )


def check_pds3_projection(label: Pds3Label) -> None:
    """Raise :class:`SiteselError` unless the label's projection is the LOLA south polar grid.

    A south-polar product whose label says ``CENTER_LATITUDE = 90`` but whose
    latitude bounds are both south is accepted as south-polar (a known label slip).
    """
    path = label.label_path
    expected = "expected a south polar stereographic map on the 1737.4 km sphere (LOLA polar products)"
    if "POLAR" not in label.map_projection_type or "STEREOGRAPHIC" not in label.map_projection_type:
        kind = "an equatorial/cylindrical map" if "POLAR" not in label.map_projection_type else "not stereographic"
        raise SiteselError(f"{path}: MAP_PROJECTION_TYPE {label.map_projection_type!r} is {kind}; {expected}")
    if not np.isclose(label.radius_m, MOON_RADIUS_M, atol=1.0):
        raise SiteselError(f"{path}: A_AXIS_RADIUS {label.radius_m / 1000:g} km is not the lunar sphere; {expected}")
    lat_bounds = [v for v in (label.maximum_latitude_deg, label.minimum_latitude_deg) if v is not None]
    southern = np.isclose(label.center_latitude_deg, -90.0) or (
        np.isclose(label.center_latitude_deg, 90.0) and lat_bounds and all(v <= 0 for v in lat_bounds)
    )
    if np.isclose(label.center_latitude_deg, 90.0) and not southern:
        raise SiteselError(f"{path}: a north-polar product (CENTER_LATITUDE = 90); sitesel needs a south-polar DEM")
    if not southern:
        raise SiteselError(f"{path}: CENTER_LATITUDE = {label.center_latitude_deg} is not a polar map; {expected}")
    if not np.isclose(label.center_longitude_deg % 360.0, 0.0):
        raise SiteselError(f"{path}: CENTER_LONGITUDE = {label.center_longitude_deg} must be 0; {expected}")


def check_pds3_file(label: Pds3Label) -> None:
    """Check the image file against the label: size and record structure."""
    path = label.data_path
    size = path.stat().st_size
    need = label.image_offset_bytes + label.image_bytes
    detached = path != label.label_path
    if size < need:
        raise SiteselError(
            f"{path}: file is {size} bytes but its label needs {need} "
            f"({label.lines} x {label.line_samples} x {label.dtype.itemsize} B); it is truncated or the wrong file"
        )
    if detached and size != need:
        raise SiteselError(
            f"{path}: file is {size} bytes but its label {label.label_path.name} describes {need}; "
            "the label does not match this file"
        )
    if (
        detached
        and (label.record_type or "").upper() == "FIXED_LENGTH"
        and label.record_bytes is not None
        and label.file_records is not None
        and label.record_bytes * label.file_records != size
    ):
        raise SiteselError(
            f"{path}: label record structure ({label.file_records} records x {label.record_bytes} B) "
            f"does not match the file size {size} B"
        )


def find_label(path: Path) -> Path | None:
    """The detached PDS3 label of an image or JP2 (``X.LBL`` or ``X_JP2.LBL``), if any."""
    stem = path.stem
    for name in (f"{stem}.lbl", f"{stem}_jp2.lbl"):
        found = _resolve_sibling(path.parent, name)
        if found is not None and found != path:
            return found
    return None


# --------------------------------------------------------------------------- sources


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(32)
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "GeoTIFF"
    if head[4:8] == b"jP  " or head[:4] == b"\xff\x4f\xff\x51":
        return "JP2"
    if head.lstrip().upper().startswith(b"PDS_VERSION_ID"):
        return "PDS3-label"
    return "raw"


class _Source:
    """An open DEM file: grid, units and windowed reads of converted heights."""

    def __init__(self, path, fmt, grid, crs_text, units_found, scale, offset, to_m, missing, read_raw, close):
        self.path = path
        self.format = fmt
        self.grid = grid
        self.crs_text = crs_text
        self.units_found = units_found
        self.scale = scale
        self.offset = offset
        self.to_m = to_m
        self.missing = missing
        self._read_raw = read_raw
        self._close = close
        # Stored values that are radii (an OFFSET of ~1737.4 km) become heights above the sphere.
        self.radius_offset_m = MOON_RADIUS_M if abs(offset * to_m) > 1e6 else 0.0

    @property
    def units_applied(self) -> str:
        parts = []
        if self.scale != 1.0 or self.offset != 0.0:
            parts.append(f"x{self.scale:g}{self.offset:+g}")
        parts.append("km->m" if self.to_m == 1000.0 else "m")
        if self.radius_offset_m:
            parts.append("-1737400 m (radius->height)")
        return " ".join(parts)

    def read_height_m(self, rows: slice, cols: slice) -> np.ndarray:
        """Heights (float32 metres above the sphere, NaN nodata) of a window.

        Works in float32 in place, so a window costs about twice its own size:
        the scale and the offsets are combined first, in float64, so that a
        radius offset (1737.4 km) cancels exactly instead of rounding in float32.
        """
        raw = self._read_raw(rows, cols)
        bad = np.zeros(raw.shape, dtype=bool)
        if np.ma.isMaskedArray(raw):
            bad |= np.ma.getmaskarray(raw)
            raw = raw.data
        for v in self.missing:
            bad |= raw == v
        h = raw.astype(np.float32, copy=False)
        if raw.dtype.kind == "f":
            # ISIS/PDS special pixels sit near -3.4e38 whatever the label says.
            bad |= ~np.isfinite(h)
            bad |= h < -1e30
            bad |= h > 1e30
        h[bad] = np.nan
        factor = self.scale * self.to_m
        shift = self.offset * self.to_m - self.radius_offset_m
        if factor != 1.0:
            h *= factor
        if shift != 0.0:
            h += shift
        return h

    def close(self):
        self._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _open_pds3(label: Pds3Label, fmt: str) -> _Source:
    check_pds3_projection(label)
    check_pds3_file(label)
    f = open(label.data_path, "rb")  # noqa: SIM115 - closed by _Source.close()
    row_bytes = label.line_samples * label.dtype.itemsize

    def read_raw(rows, cols):
        # One positioned read per row: only the window's bytes are read, and
        # resident memory is the window itself (a memory map would also keep
        # the pages the kernel maps around each fault).
        out = np.empty((rows.stop - rows.start, cols.stop - cols.start), dtype=label.dtype)
        start = label.image_offset_bytes + cols.start * label.dtype.itemsize
        if out.shape[1] == label.line_samples:
            f.seek(start + rows.start * row_bytes)
            got = f.readinto(memoryview(out).cast("B"))
            if got != out.nbytes:
                raise SiteselError(f"{label.data_path}: short read; the file is truncated")
            return out
        for i, r in enumerate(range(rows.start, rows.stop)):
            f.seek(start + r * row_bytes)
            if f.readinto(memoryview(out[i]).cast("B")) != out.shape[1] * label.dtype.itemsize:
                raise SiteselError(f"{label.data_path}: short read; the file is truncated")
        return out

    unit = label.unit
    if unit is None and np.isclose(label.offset, MOON_RADIUS_M / 1000.0):
        unit = "km"  # no UNIT, but an OFFSET equal to the radius in km: the values are km
    to_m = _unit_scale_to_m(unit, label.label_path)
    return _Source(
        label.data_path, fmt, label.grid(), f"PDS3 label {label.label_path.name}: {label.map_projection_type}, "
        f"centre {label.center_latitude_deg:g}/{label.center_longitude_deg:g} deg, R {label.radius_m:.0f} m",
        label.unit, label.scaling_factor, label.offset, to_m, label.missing_values, read_raw, f.close,
    )


def jp2_supported() -> bool:
    """True if the installed GDAL reads lossless JPEG 2000 (the JP2OpenJPEG driver)."""
    import rasterio

    with rasterio.Env() as env:
        return "JP2OpenJPEG" in env.drivers()


def _open_rasterio(path: Path, fmt: str) -> _Source:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
    from rasterio.windows import Window

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(path)
    except RasterioIOError as exc:
        if fmt == "JP2" and not jp2_supported():
            raise SiteselError(
                f"{path}: this GDAL build has no JPEG 2000 driver (JP2OpenJPEG); "
                "use the product's IMG variant or install rasterio wheels that bundle OpenJPEG"
            ) from exc
        raise SiteselError(f"{path}: cannot be read as a {fmt} ({_first_line(exc)}); it is truncated or corrupt") from exc
    try:
        if ds.count != 1 or ds.dtypes[0] not in ("int8", "int16", "uint16", "int32", "uint32", "float32", "float64"):
            raise SiteselError(
                f"{path}: not a DEM ({ds.count} band(s) of {ds.dtypes[0]}); "
                "expected one band of heights on the lunar south polar stereographic grid"
            )
        label_path = find_label(path) if fmt == "JP2" else None
        label = parse_pds3_label(label_path, data_path=path) if label_path is not None else None
        if ds.crs is not None or label is None:
            check_south_polar_crs(ds.crs, path)
            try:
                grid = Grid.from_transform(ds.transform, ds.shape)
            except ValueError as exc:
                raise SiteselError(f"{path}: {exc}; expected a north-up grid with square pixels") from exc
            crs_text = _crs_label(ds.crs)
        else:
            check_pds3_projection(label)
            grid = label.grid()
            crs_text = f"from PDS3 label {label.label_path.name}"
        if grid.shape != tuple(ds.shape):
            raise SiteselError(f"{path}: image is {ds.shape} but its label {label_path.name} says {grid.shape}")
        if label is not None:
            units, scale, offset, missing = label.unit, label.scaling_factor, label.offset, label.missing_values
        else:
            units = _raster_units(ds)
            scale = ds.scales[0] if ds.scales else 1.0
            offset = ds.offsets[0] if ds.offsets else 0.0
            missing = () if ds.nodata is None or np.isnan(ds.nodata) else (float(ds.nodata),)
        to_m = _unit_scale_to_m(units, path)
    except BaseException:
        ds.close()
        raise

    def read_raw(rows, cols):
        window = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
        try:
            return ds.read(1, window=window, masked=ds.nodata is not None)
        except RasterioIOError as exc:
            raise SiteselError(f"{path}: read failed ({_first_line(exc)}); the file is truncated or corrupt") from exc

    return _Source(path, fmt, grid, crs_text, units, scale, offset, to_m, missing, read_raw, ds.close)


def _first_line(exc) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def open_dem(path) -> _Source:
    """Open a DEM for windowed reads (a context manager; see :func:`read_terrain`)."""
    path = Path(path)
    if not path.is_file():
        raise SiteselError(f"DEM file {path} does not exist")
    kind = _sniff(path)
    if kind in ("GeoTIFF", "JP2"):
        return _open_rasterio(path, kind)
    if kind == "PDS3-label":
        # A detached .LBL, or an image with an attached label.
        label = parse_pds3_label(path)
        fmt = "PDS3" if label.data_path == path else "PDS3 IMG+LBL"
        if label.data_path != path and _sniff(label.data_path) == "JP2":
            return _open_rasterio(label.data_path, "JP2")
        return _open_pds3(label, fmt)
    label_path = find_label(path)
    if label_path is not None:
        return _open_pds3(parse_pds3_label(label_path, data_path=path), "PDS3 IMG+LBL")
    raise SiteselError(
        f"{path}: not a DEM format sitesel reads (no GeoTIFF/JP2 header and no PDS3 .LBL beside it); "
        "expected a GeoTIFF, a JP2 or a PDS3 .IMG with its .LBL"
    )


# --------------------------------------------------------------------------- public API


def _provenance(src: _Source, rows: slice, cols: slice, **extra) -> dict:
    sha, scope = file_sha256(src.path)
    prov = {
        "path": str(src.path),
        "sha256": sha,
        "sha256_scope": scope,
        "format": src.format,
        "window": [rows.start, rows.stop, cols.start, cols.stop],
        "units_found": src.units_found,
        "units_applied": src.units_applied,
    }
    prov.update(extra)
    return prov


def read_terrain(path, region: Region | None = None) -> Terrain:
    """Read a DEM (GeoTIFF, JP2 or PDS3 IMG+LBL) into a :class:`Terrain`.

    Parameters
    ----------
    path : str or Path
        The DEM file (for PDS3, the .IMG or its .LBL).
    region : Region, optional
        Read only the window covering this region (rounded outward to whole
        pixels and clipped to the file); the rest of the file is not read
        (rasterio windows, or one positioned read per row for PDS3).

    Returns
    -------
    Terrain
        Heights in metres above the 1737.4 km sphere (float32, NaN = nodata) on
        the file's grid. ``provenance`` holds ``path``, ``sha256`` (see
        :func:`file_sha256` for its scope), ``format``, ``window``
        (``[row0, row1, col0, col1]`` in the file) and the units found/applied.
    """
    with open_dem(path) as src:
        if region is not None:
            rows, cols = _window_for_bounds(src.grid, region.to_bounds_m(), src.path)
        else:
            rows, cols = slice(0, src.grid.shape[0]), slice(0, src.grid.shape[1])
        height = src.read_height_m(rows, cols)
        return Terrain(height, src.grid.window(rows, cols), _provenance(src, rows, cols))


def _block_mean(src: _Source, rows: slice, cols: slice, factor: int, strip_rows: int = 512) -> np.ndarray:
    """NaN-aware mean of ``factor`` x ``factor`` blocks, read strip by strip to bound memory."""
    n_r = (rows.stop - rows.start) // factor
    n_c = (cols.stop - cols.start) // factor
    out = np.empty((n_r, n_c), dtype=np.float32)
    step = max(1, strip_rows // factor)
    for i in range(0, n_r, step):
        j = min(n_r, i + step)
        r0 = rows.start + i * factor
        strip = src.read_height_m(slice(r0, rows.start + j * factor), slice(cols.start, cols.start + n_c * factor))
        blocks = strip.reshape(j - i, factor, n_c, factor)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out[i:j] = np.nanmean(blocks, axis=(1, 3))
    return out


def _whole_blocks(s: slice, factor: int, size: int) -> slice:
    """``s`` widened (or, at the file edge, shortened) to a whole number of blocks."""
    n = -(-(s.stop - s.start) // factor) * factor
    if s.start + n > size:
        n -= factor
    return slice(s.start, s.start + n)


def read_far_field(path, near: Terrain, radius_m: float, max_size_px: int = 4096) -> Terrain:
    """A coarser, wider DEM window around ``near`` for the distant horizon.

    Reads the window of ``path`` that covers ``near``'s bounds widened by
    ``radius_m`` on every side (clipped to the file), and averages it in
    ``f`` x ``f`` blocks, the smallest integer ``f`` that keeps both sides at most
    ``max_size_px``. Block averaging keeps the far grid pixel-registered on the
    file's own grid. Mountains 100+ km from the pole set its horizon, so a
    high-resolution local DEM needs this wider product to see them.
    """
    left, bottom, right, top = near.grid.bounds_m
    bounds = (left - radius_m, right + radius_m, bottom - radius_m, top + radius_m)
    with open_dem(path) as src:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # clipping the far field to the file is expected
            rows, cols = _window_for_bounds(src.grid, bounds, src.path)
        side = max(rows.stop - rows.start, cols.stop - cols.start)
        factor = max(1, int(np.ceil(side / max_size_px)))
        rows = _whole_blocks(rows, factor, src.grid.shape[0])
        cols = _whole_blocks(cols, factor, src.grid.shape[1])
        height = src.read_height_m(rows, cols) if factor == 1 else _block_mean(src, rows, cols, factor)
        base = src.grid.window(rows, cols)
        grid = Grid(base.x0_m, base.y0_m, base.resolution_m * factor, height.shape)
        return Terrain(height, grid, _provenance(src, rows, cols, decimation=factor, role="far_field"))


def describe_dem(path, strip_rows: int = 1024) -> dict:
    """Summary of a DEM for ``sitesel info`` (streams the file in row strips).

    Keys: ``format``, ``crs``, ``units_found``, ``units_applied``, ``size_px``
    [rows, cols], ``resolution_m``, ``extent_m`` {x_min, x_max, y_min, y_max},
    ``lat_range_deg`` [southmost, northmost] over the grid's outer bounds,
    ``pole_inside``, ``nodata_fraction``, ``min_height_m``, ``max_height_m``.
    """
    from .grid import xy_to_latlon

    with open_dem(path) as src:
        g = src.grid
        rows, cols = g.shape
        n_bad, lo, hi = 0, np.inf, -np.inf
        for r0 in range(0, rows, strip_rows):
            h = src.read_height_m(slice(r0, min(rows, r0 + strip_rows)), slice(0, cols))
            ok = np.isfinite(h)
            n_bad += int(h.size - ok.sum())
            if ok.any():
                lo, hi = min(lo, float(h[ok].min())), max(hi, float(h[ok].max()))
        left, bottom, right, top = g.bounds_m
        pole_inside = bool(left <= 0.0 <= right and bottom <= 0.0 <= top)
        # Nearest point of the box to the pole, and its farthest corner.
        nx, ny = min(max(0.0, left), right), min(max(0.0, bottom), top)
        far = max(np.hypot(x, y) for x in (left, right) for y in (bottom, top))
        lat_near, _ = xy_to_latlon(nx, ny)
        lat_far, _ = xy_to_latlon(far, 0.0)
        return {
            "format": src.format,
            "crs": src.crs_text,
            "units_found": src.units_found,
            "units_applied": src.units_applied,
            "size_px": [rows, cols],
            "resolution_m": g.resolution_m,
            "extent_m": {"x_min": left, "x_max": right, "y_min": bottom, "y_max": top},
            "lat_range_deg": [float(lat_near), float(lat_far)],
            "pole_inside": pole_inside,
            "nodata_fraction": n_bad / float(rows * cols),
            "min_height_m": lo if np.isfinite(lo) else None,
            "max_height_m": hi if np.isfinite(hi) else None,
        }


def format_description(d: dict) -> str:
    """A two-column human table of :func:`describe_dem`'s result."""
    e = d["extent_m"]

    def height(v):
        return "n/a" if v is None else f"{v:.1f} m"

    rows = [
        ("format", d["format"]),
        ("CRS", d["crs"]),
        ("units", f"found {d['units_found'] or 'none (metres assumed)'}; applied {d['units_applied']}"),
        ("size", f"{d['size_px'][0]} x {d['size_px'][1]} px"),
        ("resolution", f"{d['resolution_m']:g} m/px"),
        ("extent x", f"{e['x_min'] / 1000:.3f} .. {e['x_max'] / 1000:.3f} km"),
        ("extent y", f"{e['y_min'] / 1000:.3f} .. {e['y_max'] / 1000:.3f} km"),
        ("latitude", f"{d['lat_range_deg'][0]:.4f} .. {d['lat_range_deg'][1]:.4f} deg"),
        ("pole inside", "yes" if d["pole_inside"] else "no"),
        ("nodata", f"{100 * d['nodata_fraction']:.2f} %"),
        ("height", f"{height(d['min_height_m'])} .. {height(d['max_height_m'])}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def read_terrain_with_halo(path, region: Region, halo_m: float) -> tuple[Terrain, tuple[slice, slice]]:
    """Read ``region`` plus ``halo_m`` of surrounding terrain (clipped to the file).

    Returns the terrain and the (rows, cols) window of ``region`` inside it:
    the halo shades the region's edge pixels and supports their footprints.
    A region reaching beyond the file is clipped with a warning.
    """
    x_min, x_max, y_min, y_max = region.to_bounds_m()
    outer = Region(x_min_m=x_min - halo_m, x_max_m=x_max + halo_m, y_min_m=y_min - halo_m, y_max_m=y_max + halo_m)
    with warnings.catch_warnings():
        # Only the region itself being clipped is worth a warning, not its halo.
        warnings.simplefilter("ignore")
        terrain = read_terrain(path, outer)
    return terrain, _window_for_bounds(terrain.grid, (x_min, x_max, y_min, y_max), path)


def write_terrain(path, terrain: Terrain) -> Path:
    """Write ``terrain`` as a float32 GeoTIFF (metres, NaN nodata) on the LOLA CRS.

    The write is atomic (a temporary file in the same folder, then
    ``os.replace``) and deterministic: equal terrain gives byte-identical files.
    """
    import rasterio
    from rasterio.crs import CRS

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    rows, cols = terrain.shape
    blocked = rows >= 256 and cols >= 256
    profile = {
        "driver": "GTiff",
        "dtype": "float32",
        "count": 1,
        "height": rows,
        "width": cols,
        "crs": CRS.from_proj4(SOUTH_POLAR_STEREO_PROJ),
        "transform": terrain.grid.transform,
        "nodata": float("nan"),
        "compress": "deflate",
        "predictor": 3,
        "tiled": blocked,
    }
    if blocked:
        profile.update(blockxsize=256, blockysize=256)
    tags = {
        "units": "m",
        "reference_radius_m": f"{MOON_RADIUS_M:.0f}",
        "provenance": json.dumps(terrain.provenance, sort_keys=True, default=str),
    }
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(np.asarray(terrain.height_m, dtype=np.float32), 1)
            dst.update_tags(**tags)
            dst.set_band_unit(1, "m")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
