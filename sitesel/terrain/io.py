"""Reading and writing DEMs on the LOLA south polar stereographic grid.

Every reader returns a :class:`~sitesel.terrain.model.Terrain` with heights in
metres above the 1737.4 km sphere (converted on read, DESIGN.md section 2) and
NaN for nodata. A :class:`Region` limits the read to a window, so a multi-GB
product is never loaded whole.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from ..constants import MOON_RADIUS_M, SOUTH_POLAR_STEREO_PROJ
from ..errors import SiteselError, SiteselWarning
from .checksum import file_sha256
from .crs import _crs_label, _raster_units, _unit_scale_to_m, check_south_polar_crs
from .grid import Grid
from .model import Terrain
from .pds3 import Pds3Label, check_pds3_file, check_pds3_projection, find_label, parse_pds3_label
from .region import Region, _window_for_bounds


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

    # rasterio 1.4's wheels point PROJ at their bundled proj.db in a way GDAL's own PROJ context
    # misses: opening a CRS in other units (km) then prints "Cannot find proj.db" to stderr
    if "PROJ_DATA" not in os.environ and "PROJ_LIB" not in os.environ:
        bundled = Path(rasterio.__file__).parent / "proj_data"
        if (bundled / "proj.db").is_file():
            os.environ["PROJ_DATA"] = str(bundled)
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
    if path.is_dir():
        raise SiteselError(f"{path} is a folder, not a DEM file; give the path of the DEM file itself")
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
        grid = src.grid.window(rows, cols)
        check_plausible_heights(height, grid, src.path)
        return Terrain(height, grid, _provenance(src, rows, cols))


#: Heights beyond this (m) are on no part of the Moon (about -9 to +11 km about the 1737.4 km sphere).
MAX_PLAUSIBLE_HEIGHT_M = 25e3


def check_plausible_heights(height_m: np.ndarray, grid: Grid, path) -> None:
    """Raise :class:`SiteselError` if heights lie beyond any on the Moon (a file of radii), and
    warn if they span only a few metres over kilometres (a file of kilometres read as metres)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all NaN: no heights, reported elsewhere
        low, high = float(np.nanmin(height_m)), float(np.nanmax(height_m))
    if not np.isfinite(low):
        return
    reach_m = max(abs(low), abs(high))
    if reach_m > MAX_PLAUSIBLE_HEIGHT_M:
        raise SiteselError(
            f"{path}: heights reach {reach_m:,.0f} m, beyond any on the Moon (-9 to +11 km about "
            "the 1737.4 km sphere); if the file stores radii, subtract 1737400 m: sitesel reads heights above the "
            "sphere")
    extent_m = max(height_m.shape) * grid.resolution_m
    if 0.0 < high - low < 25.0 and extent_m >= 5e3:
        warnings.warn(
            f"{path}: heights span only {high - low:.2f} m over {extent_m / 1e3:.0f} km; if the file stores "
            "kilometres without saying so, give its band the unit 'km' (sitesel reads metres when none is set)",
            SiteselWarning, stacklevel=3)


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


#: Largest side (px) of the far field a ``[region]`` run takes from its own DEM when it has no
#: ``[dem] far_field``: about 400 m pixels over 150 km around a region, as the far-field
#: benchmark's (there a 768^2 far field took the 2048^2 horizon from 72 s to 105-109 s, about half as much again).
OWN_FAR_FIELD_PX = 768


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
            rows, cols = _window_for_bounds(src.grid, bounds, src.path, what="the far field's area (the DEM and the "
                                            "search distance around it)",
                                            fix="give a far field ([dem] far_field, --far-field) around the DEM")
        side = max(rows.stop - rows.start, cols.stop - cols.start)
        factor = max(1, int(np.ceil(side / max_size_px)))
        rows = _whole_blocks(rows, factor, src.grid.shape[0])
        cols = _whole_blocks(cols, factor, src.grid.shape[1])
        height = src.read_height_m(rows, cols) if factor == 1 else _block_mean(src, rows, cols, factor)
        base = src.grid.window(rows, cols)
        grid = Grid(base.x0_m, base.y0_m, base.resolution_m * factor, height.shape)
        return Terrain(height, grid, _provenance(src, rows, cols, decimation=factor, role="far_field"))


def read_own_far_field(path, near: Terrain, radius_m: float) -> Terrain | None:
    """The far field a ``[region]`` run without ``[dem] far_field`` takes from its own DEM
    ``path``: :func:`read_far_field` of it around ``near`` (the region and its halo), at most
    ``OWN_FAR_FIELD_PX`` a side; None if ``near`` already holds all of the file there."""
    far = read_far_field(path, near, radius_m, max_size_px=OWN_FAR_FIELD_PX)
    (left, bottom, right, top), inner = far.grid.bounds_m, near.grid.bounds_m
    if left < inner[0] - 1.0 or bottom < inner[1] - 1.0 or right > inner[2] + 1.0 or top > inner[3] + 1.0:
        return far
    return None


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
