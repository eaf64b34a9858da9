"""Files of the output directory: GeoTIFF layers, ranked sites, JSON.

Every write is atomic: the content goes to a hidden temporary file in the
target's directory, is flushed to disk, and is then renamed over the target
with :func:`os.replace`. A failure part-way leaves neither a partial target
nor the temporary file. Identical inputs give byte-identical files (no
timestamps are written anywhere; ``manifest.json`` alone carries timings).

Number formatting of ``sites.csv`` and ``sites.geojson`` is fixed per column
(see :func:`decimals_for`), so the files are reproducible and diff cleanly.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import json
import math
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .constants import MOON_RADIUS_M, SOUTH_POLAR_STEREO_PROJ
from .errors import SiteselError
from .scoring import TERM_PREFIX
from .terrain.grid import Grid, local_azimuth_to_bearing_deg, scale_factor, xy_to_latlon

#: Leading columns of sites.csv, in this order (required).
LEAD_COLUMNS = ("rank", "lat", "lon", "x_m", "y_m", "score")

#: Metric columns, in this order, when present.
METRIC_COLUMNS = (
    "height_m",
    "slope_deg",
    "roughness_m",
    "sun_lit_fraction",
    "sun_disc_fraction",
    "longest_night_h",
    "earth_visible_fraction",
    "longest_blackout_h",
    "psr_distance_m",
)

#: Columns a run adds after the metrics, in this order, when present: the other visibility layers,
#: where the site's values come from, then how it ranked. Each metric's profile term
#: (``term_<metric>``) follows them, in the metrics' order.
DETAIL_COLUMNS = (
    "longest_sunlit_h",
    "n_long_nights",
    "psr",
    "visibility_exact",
    "terrain_reach_km",
    "row",
    "col",
    "feasible",
    "score_centre",
)

#: Trailing columns of sites.csv (required): the landing ellipse.
ELLIPSE_COLUMNS = ("ellipse_semi_major_m", "ellipse_semi_minor_m", "ellipse_azimuth_deg")

#: Ellipse columns placed after the required ones when present.
OPTIONAL_ELLIPSE_COLUMNS = ("ellipse_bearing_deg",)

#: Vertices of the landing-ellipse polygon in sites.geojson.
ELLIPSE_VERTICES = 64


# --------------------------------------------------------------------------- atomic files


@contextmanager
def _atomic_target(path):
    """Yield a temporary path next to ``path``; on success fsync and rename it onto ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``; returns ``path``."""
    path = Path(path)
    with _atomic_target(path) as tmp:
        with open(tmp, "xb") as f:
            f.write(data)
    return path


def write_text(path, text: str) -> Path:
    """Atomically write UTF-8 ``text`` (Unix newlines) to ``path``; returns ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def check_writable(out_dir, hint: str = "choose another with --out") -> Path:
    """Create ``out_dir`` if needed and prove a file can be written there.

    Raises :class:`SiteselError` (ending with ``hint``) before any long computation starts.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SiteselError(f"output directory '{out}' is a file, not a directory; {hint}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".sitesel-write-test.{os.getpid()}.{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SiteselError(f"output directory '{out}' is not writable: {reason}; {hint}") from None
    return out


def check_out_dir_is_ours(out_dir) -> None:
    """Raise :class:`SiteselError` if ``out_dir`` holds files sitesel did not write: a run
    replaces its outputs (``layers/`` and ``plots/`` whole), so it writes only into a new or
    empty folder, one with a ``manifest.json`` (which a finished run writes last), or one with
    only the checkpoints of an interrupted run."""
    out = Path(out_dir)
    if not out.is_dir() or (out / "manifest.json").is_file():
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name != ".tiles" and not p.name.startswith(_STAGING_PREFIX))
    if foreign:
        shown = ", ".join(f"'{name}'" for name in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise SiteselError(f"output directory '{out}' holds files sitesel did not write ({shown}), which a run "
                           "would replace; give a new or empty folder with --out")


@contextmanager
def staged_outputs(out_dir):
    """Yield a fresh staging folder inside ``out_dir``; when the block ends without an
    error, move everything in it into ``out_dir``, each folder replacing the one of its
    name as a whole (so no file of an earlier run is left beside the new ones), each
    file by an atomic rename. On an error (Ctrl-C included) the staging folder is
    removed and ``out_dir`` keeps the earlier run's outputs untouched. Other files in
    ``out_dir`` (e.g. ``.tiles``) are left alone. A staging folder left by a process
    that was killed is removed by the next run."""
    out_dir = Path(out_dir)
    for stale in out_dir.glob(f"{_STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = out_dir / f"{_STAGING_PREFIX}{os.getpid()}.{secrets.token_hex(4)}"
    staging.mkdir(parents=True)
    try:
        yield staging
        # the manifest last: its presence marks a complete set
        for entry in sorted(staging.iterdir(), key=lambda e: (e.name == "manifest.json", e.name)):
            target = out_dir / entry.name
            if target.is_dir() and not target.is_symlink():
                replaced = staging / f".replaced.{entry.name}"
                target.rename(replaced)
                try:
                    entry.rename(target)
                except BaseException:
                    replaced.rename(target)
                    raise
            else:
                os.replace(entry, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


#: Name prefix of the staging folders of :func:`staged_outputs`.
_STAGING_PREFIX = ".sitesel-staging."


@contextmanager
def removed_if_failed(folder):
    """A block that may create ``folder`` (and its missing parents): if the block fails, the
    folders it made are removed again where they hold no file (a finished tile or a partial
    download stays, to resume)."""
    folder = Path(folder)
    made = next((p for p in [*reversed(folder.parents), folder] if not p.exists()), None)
    try:
        yield
    except BaseException:
        if made is not None:
            remove_empty_dirs(made)
        raise


def remove_empty_dirs(root) -> None:
    """Remove ``root`` and the directories below it that hold no file, deepest first; a
    directory that holds a file (a finished tile, say) stays, with its parents."""
    root = Path(root)
    if not root.is_dir():
        return
    for path in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir()
    with contextlib.suppress(OSError):
        root.rmdir()


# --------------------------------------------------------------------------- JSON


def jsonable(obj):
    """A copy of ``obj`` made of plain JSON types.

    numpy scalars and arrays become numbers and lists, paths and dates become
    strings (ISO 8601), and non-finite floats become ``null``.
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def dumps_json(obj) -> str:
    """Deterministic JSON text: sorted keys, indent 2, trailing newline."""
    return json.dumps(jsonable(obj), sort_keys=True, indent=2, allow_nan=False) + "\n"


def write_json(path, obj) -> Path:
    """Atomically write ``obj`` as deterministic JSON (see :func:`dumps_json`)."""
    return write_text(path, dumps_json(obj))


# --------------------------------------------------------------------------- layers


def _crs():
    from rasterio.crs import CRS

    return CRS.from_proj4(SOUTH_POLAR_STEREO_PROJ)


def write_layer(path, array, grid: Grid, *, units: str, description: str, nodata=None, tags: dict | None = None):
    """Atomically write one raster layer as a GeoTIFF on the LOLA polar grid.

    Parameters
    ----------
    path : path-like
        Target ``.tif``.
    array : ndarray, shape ``grid.shape``
        float (written as float32, NaN = nodata) or uint8/bool (written as uint8).
    grid : Grid
        Geometry; the CRS is always the south polar stereographic sphere.
    units, description : str
        Stored as dataset tags ``UNITS``/``DESCRIPTION`` and as the band's unit
        type and description.
    nodata : number, optional
        Nodata value; NaN for float layers unless given, none for uint8.
    tags : dict, optional
        Extra dataset tags (e.g. the method used); values are stored as strings.

    Layers larger than 512 pixels along either side are tiled 256 x 256. The
    file is DEFLATE-compressed with a predictor and holds no timestamp, so equal
    inputs give byte-identical files.
    """
    import rasterio

    array = np.asarray(array)
    if array.shape != tuple(grid.shape):
        raise ValueError(f"layer shape {array.shape} does not match grid shape {tuple(grid.shape)}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype.kind == "f":
        array = array.astype(np.float32, copy=False)
        nodata = np.nan if nodata is None else nodata
    elif array.dtype != np.uint8:
        raise TypeError(f"layers are float32 or uint8, not {array.dtype}")
    rows, cols = array.shape
    profile = {
        "driver": "GTiff",
        "width": cols,
        "height": rows,
        "count": 1,
        "dtype": array.dtype.name,
        "crs": _crs(),
        "transform": grid.transform,
        "nodata": nodata,
        "compress": "deflate",
        # floating-point predictor for float32, horizontal differencing for uint8
        "predictor": 3 if array.dtype == np.float32 else 2,
        # after the predictor, deflate's fastest level: four 2048^2 layers took 0.30 s at 30.8 MB,
        # against 0.65 s at 29.8 MB at the default level 6
        "zlevel": 1,
        "BIGTIFF": "IF_SAFER",
        # tiles are compressed in parallel and written in order: the same bytes
        "NUM_THREADS": "ALL_CPUS",
    }
    if max(rows, cols) > 512:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    all_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    all_tags.update(UNITS=units, DESCRIPTION=description)
    path = Path(path)
    with _atomic_target(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(array, 1)
            dst.set_band_description(1, description)
            dst.set_band_unit(1, units)
            dst.update_tags(**all_tags)
    return path


def read_layer(path):
    """Read a single-band layer: ``(array, grid, tags)``.

    Float layers come back as float32 with NaN for nodata; ``tags`` are the
    dataset tags (``UNITS``, ``DESCRIPTION``, ...).
    """
    import rasterio

    with rasterio.open(path) as src:
        array = src.read(1)
        grid = Grid.from_transform(src.transform, src.shape)
        tags = src.tags()
        nodata = src.nodata
    if array.dtype.kind == "f" and nodata is not None and not np.isnan(nodata):
        array = np.where(array == nodata, np.float32(np.nan), array)
    return array, grid, tags


# --------------------------------------------------------------------------- sites


def decimals_for(column: str) -> int:
    """Decimal places written for a float column of the sites files.

    lat/lon 6 (0.03 m on the ground), ``*_deg`` 4, metres (``*_m``) 3,
    hours (``*_h``) 3, ``*_km``/``*_km2`` 4, counts (``n_*``) 0; anything else,
    including scores and the normalised ``term_*`` values, 6.
    """
    if column in ("lat", "lon") or column.startswith(("term_", "score")):
        return 6
    if column.startswith("n_"):
        return 0
    for suffix, decimals in (("_deg", 4), ("_m", 3), ("_h", 3), ("_km", 4), ("_km2", 4)):
        if column.endswith(suffix):
            return decimals
    return 6


def _round_value(column, value):
    """A site value as a plain Python scalar, floats rounded per column (NaN -> None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if decimals_for(column) == 0:  # a count: a whole number in the CSV and the GeoJSON
            return round(value)
        return round(value, decimals_for(column)) + 0.0  # + 0.0 turns -0.0 into 0.0
    if value is None or isinstance(value, (bool, int, str)):
        return value
    raise TypeError(f"site column '{column}' holds a {type(value).__name__}; sites must be flat dicts of scalars")


def term_columns(keys) -> list[str]:
    """The profile-term columns among ``keys``: the metrics' terms in their order, then any others sorted."""
    terms = {k for k in keys if k.startswith(TERM_PREFIX)}
    known = [TERM_PREFIX + m for m in METRIC_COLUMNS if TERM_PREFIX + m in terms]
    return known + sorted(terms - set(known))


def site_columns(sites: list[dict]) -> list[str]:
    """Column order: LEAD, known metrics, the run's details (``DETAIL_COLUMNS``), the profile
    terms (:func:`term_columns`), other keys sorted, then the ellipse columns."""
    # with no site, the header still names the lead, metric and ellipse columns
    keys = set().union(*sites) if sites else set(METRIC_COLUMNS)
    for required in LEAD_COLUMNS + ELLIPSE_COLUMNS:
        if sites and required not in keys:
            raise ValueError(f"sites lack the required column '{required}'")
    trailing = list(ELLIPSE_COLUMNS) + [c for c in OPTIONAL_ELLIPSE_COLUMNS if c in keys]
    ordered = list(LEAD_COLUMNS) + [c for c in METRIC_COLUMNS + DETAIL_COLUMNS if c in keys] + term_columns(keys)
    others = sorted(keys - set(ordered) - set(trailing))
    return ordered + others + trailing


def _csv_cell(column, value):
    value = _round_value(column, value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.{decimals_for(column)}f}"
    return str(value)


def sites_csv_text(sites: list[dict]) -> str:
    """The text of sites.csv (see :func:`write_sites_csv`)."""
    columns = site_columns(sites)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for site in sites:
        writer.writerow([_csv_cell(c, site.get(c)) for c in columns])
    return buffer.getvalue()


def write_sites_csv(path, sites: list[dict]) -> Path:
    """Atomically write the ranked sites as CSV.

    One row per site in the given order; columns ``rank, lat, lon, x_m, y_m,
    score``, the metrics, the run's details and profile terms (see
    :func:`site_columns`), any other keys (sorted), then the ellipse columns.
    Floats use fixed decimals per column (:func:`decimals_for`); missing and
    non-finite values are empty cells.
    """
    return write_text(path, sites_csv_text(sites))


def ellipse_xy_m(x_m, y_m, lon_deg, semi_major_m, semi_minor_m, azimuth_deg, n=ELLIPSE_VERTICES):
    """Map coordinates (x, y arrays of ``n`` vertices, metres) of a landing ellipse.

    The semi-axes are ground metres; on the conformal polar stereographic map
    they are scaled by the point scale factor at the centre. ``azimuth_deg``
    is the LOCAL azimuth of the major axis (clockwise from local north), i.e.
    the grid bearing ``azimuth_deg + lon_deg``. Vertices go counterclockwise
    on the map, starting at the major-axis end.
    """
    lat_deg, _ = xy_to_latlon(x_m, y_m)
    k = float(scale_factor(lat_deg))
    bearing = np.radians(float(local_azimuth_to_bearing_deg(azimuth_deg, lon_deg)))
    major = np.array([np.sin(bearing), np.cos(bearing)])  # bearing is clockwise from +y
    minor = np.array([-major[1], major[0]])  # 90 deg counterclockwise of the major axis
    t = 2.0 * np.pi * np.arange(n) / n
    a = k * float(semi_major_m) * np.cos(t)
    b = k * float(semi_minor_m) * np.sin(t)
    return float(x_m) + a * major[0] + b * minor[0], float(y_m) + a * major[1] + b * minor[1]


def _ellipse_ring(site):
    """Closed lon/lat ring (counterclockwise in lon/lat, RFC 7946) of a site's ellipse."""
    x, y = ellipse_xy_m(
        site["x_m"], site["y_m"], site["lon"],
        site["ellipse_semi_major_m"], site["ellipse_semi_minor_m"], site["ellipse_azimuth_deg"],
    )
    lat, lon = xy_to_latlon(x, y)
    # keep the ring continuous across the antimeridian: longitudes relative to the centre
    lon = float(site["lon"]) + (lon - float(site["lon"]) + 180.0) % 360.0 - 180.0
    signed_area = np.sum(lon * np.roll(lat, -1) - np.roll(lon, -1) * lat)
    if signed_area < 0:
        lon, lat = lon[::-1], lat[::-1]
    ring = [[_round_value("lon", a), _round_value("lat", b)] for a, b in zip(lon, lat)]
    return ring + [ring[0]]


def sites_geojson(sites: list[dict]) -> dict:
    """The sites.geojson object (see :func:`write_sites_geojson`)."""
    features = []
    for site in sites:
        properties = {c: _round_value(c, site[c]) for c in site_columns([site])}
        point = [_round_value("lon", site["lon"]), _round_value("lat", site["lat"])]
        features.append({
            "type": "Feature",
            "id": f"site-{site['rank']}",
            "geometry": {"type": "Point", "coordinates": point},
            "properties": {"kind": "site", **properties},
        })
        features.append({
            "type": "Feature",
            "id": f"ellipse-{site['rank']}",
            "geometry": {"type": "Polygon", "coordinates": [_ellipse_ring(site)]},
            "properties": {
                "kind": "landing_ellipse",
                **{c: properties[c] for c in ("rank",) + ELLIPSE_COLUMNS},
            },
        })
    return {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "IAU_2015:30100"}},
        "properties": {
            "body": "Moon",
            "coordinates": "planetocentric longitude (east-positive) and latitude, degrees",
            "reference": f"Moon 2015 sphere, radius {MOON_RADIUS_M:.0f} m (IAU_2015:30100), not Earth's WGS 84",
            "ellipse_azimuth": "local azimuth of the major axis, clockwise from local north",
        },
        "features": features,
    }


def write_sites_geojson(path, sites: list[dict]) -> Path:
    """Atomically write the ranked sites as a GeoJSON FeatureCollection.

    Per site: a Point at (lon, lat) with every site column as properties, and
    the landing ellipse as a Polygon of 64 vertices (computed on the map by
    :func:`ellipse_xy_m`, converted to lon/lat). Coordinates are on the Moon
    2015 sphere, stated in the top-level ``crs`` and ``properties`` members.
    """
    return write_json(path, sites_geojson(sites))

