"""PDS3 labels of LOLA gridded products (LRO-L-LOLA-4-GDR): parsing and consistency checks."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..constants import MOON_RADIUS_M
from ..errors import SiteselError
from .crs import _LENGTH_UNITS_M
from .grid import Grid


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
