"""DEM readers and writers: every format yields the same Terrain; windows; bad input."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS

from sitesel.constants import MOON_RADIUS_M
from sitesel.errors import SiteselError, SiteselWarning
from sitesel.terrain.grid import Grid, latlon_to_xy
from sitesel.terrain.io import (
    describe_dem,
    format_description,
    jp2_supported,
    read_far_field,
    read_terrain,
    write_terrain,
)
from sitesel.terrain.pds3 import parse_pds3_label
from sitesel.terrain.region import Region, region_from_config
from sitesel.terrain.model import Terrain

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

N = 64  # pixels per side of the synthetic products
RES_M = 20.0
SAMPLE_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "shackleton_lola_200m.tif"


def synthetic_heights(n=N, res_m=RES_M):
    """Heights in metres on the pole-centred LOLA grid, multiples of 0.5 m (exact in int16 at 0.5 m/DN)."""
    grid = Grid.centred((n, n), res_m)
    x, y = grid.xy()
    h = 1500.0 * np.sin(x / 300.0) * np.cos(y / 450.0) - 0.8 * x + 0.3 * y
    return np.round(h * 2.0) / 2.0, grid


def pds3_label(image_name, *, lines, samples, sample_type, bits, unit, scaling, offset, scale="20 <m/pix>",
               centre_lat=-90, max_lat=-89.0, projection="POLAR STEREOGRAPHIC", missing=None, record_bytes=None,
               file_records=None, radius="1737.4 <km>"):
    """A LOLA-style detached label (layout of the GDR polar img/ and float_img/ labels)."""
    record_bytes = record_bytes if record_bytes is not None else samples * bits // 8
    file_records = file_records if file_records is not None else lines
    missing_line = f"    MISSING_CONSTANT      = {missing}\n" if missing is not None else ""
    return f"""PDS_VERSION_ID            = "PDS3"
RECORD_TYPE               = FIXED_LENGTH
RECORD_BYTES              = {record_bytes}
FILE_RECORDS              = {file_records}
^IMAGE                    = "{image_name}"
DATA_SET_ID               = "LRO-L-LOLA-4-GDR-V1.0"
OBJECT                    = IMAGE
    NAME                  = HEIGHT
    DESCRIPTION           = "synthetic test heights,
                             two lines"
    LINES                 = {lines}
    LINE_SAMPLES          = {samples}
    SAMPLE_TYPE           = {sample_type}
    SAMPLE_BITS           = {bits}
    UNIT                  = {unit}
    SCALING_FACTOR        = {scaling}
    OFFSET                = {offset}
{missing_line}END_OBJECT                = IMAGE
OBJECT                    = IMAGE_MAP_PROJECTION
 ^DATA_SET_MAP_PROJECTION     = "DSMAP_POLAR.CAT"
 MAP_PROJECTION_TYPE          = "{projection}"
 KEYWORD_LATITUDE_TYPE        = "PLANETOCENTRIC"
 A_AXIS_RADIUS                = {radius}
 B_AXIS_RADIUS                = {radius}
 C_AXIS_RADIUS                = {radius}
 CENTER_LATITUDE              = {centre_lat} <deg>
 CENTER_LONGITUDE             = 0 <deg>
 MAP_PROJECTION_ROTATION      = 0.0
 MAP_SCALE                    = {scale}
 MAXIMUM_LATITUDE             = {max_lat} <deg>
 MINIMUM_LATITUDE             = {-90 if centre_lat < 0 else 90} <deg>
 LINE_PROJECTION_OFFSET       = {lines / 2 - 0.5} <pix>
 SAMPLE_PROJECTION_OFFSET     = {samples / 2 - 0.5} <pix>
 WESTERNMOST_LONGITUDE        = 'N/A'
END_OBJECT                    = IMAGE_MAP_PROJECTION
END
"""


def write_img_int16(folder, h, name="LDEM_TEST", **label_kw):
    """LOLA img/ variant: int16 DN = h / 0.5, OFFSET = the sphere radius in metres."""
    dn = np.where(np.isnan(h), -32768, np.round(np.nan_to_num(h) / 0.5)).astype("<i2")
    img = Path(folder) / f"{name}.IMG"
    img.write_bytes(dn.tobytes())
    kw = {"lines": h.shape[0], "samples": h.shape[1], "sample_type": "LSB_INTEGER", "bits": 16, "unit": "METER",
          "scaling": 0.5, "offset": "1737400."}
    kw.update(label_kw)
    (Path(folder) / f"{name}.LBL").write_text(pds3_label(img.name, **kw))
    return img


def write_img_float_km(folder, h, name="LDEM_TEST_FLOAT", **label_kw):
    """LOLA float_img/ variant: float32 kilometres above 1737.4 km."""
    img = Path(folder) / f"{name}.IMG"
    img.write_bytes((h / 1000.0).astype("<f4").tobytes())
    kw = {"lines": h.shape[0], "samples": h.shape[1], "sample_type": "PC_REAL", "bits": 32, "unit": "KILOMETER",
          "scaling": 1.0, "offset": 0.0}
    kw.update(label_kw)
    (Path(folder) / f"{name}.LBL").write_text(pds3_label(img.name, **kw))
    return img


def write_geotiff(path, h, grid, crs="IAU_2015:30135", units="m", dtype="float32", nodata=None, scale=1.0):
    data = (h / 1000.0).astype(dtype) if units == "km" else (h / scale).astype(dtype)
    with rasterio.open(path, "w", driver="GTiff", dtype=dtype, count=1, width=h.shape[1], height=h.shape[0],
                       crs=CRS.from_user_input(crs) if crs else None, transform=grid.transform,
                       nodata=nodata) as ds:
        ds.write(data, 1)
        if units:
            ds.set_band_unit(1, units)
        if scale != 1.0:
            ds.scales = (scale,)
    return Path(path)


def write_jp2_with_label(folder, h, name="LDEM_TEST"):
    """LOLA jp2/ layout: a lossless int16 JP2 without georeferencing plus NAME_JP2.LBL."""
    dn = np.round(h / 0.5).astype("int16")
    jp2 = Path(folder) / f"{name}.JP2"
    with rasterio.open(jp2, "w", driver="JP2OpenJPEG", dtype="int16", count=1, width=h.shape[1],
                       height=h.shape[0], REVERSIBLE="YES", QUALITY=100) as ds:
        ds.write(dn, 1)
    label = pds3_label(f"{name}.IMG", lines=h.shape[0], samples=h.shape[1], sample_type="LSB_INTEGER", bits=16,
                       unit="METER", scaling=0.5, offset="1737400.")
    # The JP2 label wraps the image description in COMPRESSED/UNCOMPRESSED_FILE objects.
    label = label.replace('^IMAGE                    = "LDEM_TEST.IMG"\n', "").replace(
        "OBJECT                    = IMAGE\n",
        f'OBJECT = COMPRESSED_FILE\n FILE_NAME = "{name}.JP2"\n RECORD_TYPE = UNDEFINED\n'
        f'END_OBJECT = COMPRESSED_FILE\nOBJECT = UNCOMPRESSED_FILE\n FILE_NAME = "{name}.IMG"\n'
        "OBJECT                    = IMAGE\n",
    ).replace("END_OBJECT                = IMAGE\n", "END_OBJECT                = IMAGE\nEND_OBJECT = UNCOMPRESSED_FILE\n")
    (Path(folder) / f"{name}_JP2.LBL").write_text(label)
    return jp2


def write_jp2_georeferenced(path, h, grid):
    """A lossless JP2 with a GeoJP2 IAU CRS; the 0.5 m/DN scale lives in GDAL's .aux.xml."""
    with rasterio.open(path, "w", driver="JP2OpenJPEG", dtype="int16", count=1, width=h.shape[1],
                       height=h.shape[0], crs=CRS.from_user_input("IAU_2015:30135"), transform=grid.transform,
                       REVERSIBLE="YES", QUALITY=100) as ds:
        ds.write(np.round(h / 0.5).astype("int16"), 1)
        ds.scales = (0.5,)
        ds.units = ("m",)
    return Path(path)


# --------------------------------------------------------------------------- formats agree


def test_jp2_driver_is_present():
    # The lossless JP2 products need GDAL's OpenJPEG driver; the bundled rasterio GDAL has it.
    assert jp2_supported()


def test_every_format_yields_the_same_terrain(tmp_path):
    h, grid = synthetic_heights()
    files = {
        "img int16": write_img_int16(tmp_path, h),
        "float_img km": write_img_float_km(tmp_path, h),
        "label path": tmp_path / "LDEM_TEST.LBL",
        "geotiff IAU": write_geotiff(tmp_path / "iau.tif", h, grid),
        "geotiff PROJ km": write_geotiff(tmp_path / "km.tif", h, grid, crs="+proj=stere +lat_0=-90 +lon_0=0 +k=1 "
                                         "+x_0=0 +y_0=0 +R=1737400 +units=m +no_defs", units="km"),
        "geotiff int16 scaled": write_geotiff(tmp_path / "i16.tif", h, grid, dtype="int16", scale=0.5, units=None),
        "jp2 + label": write_jp2_with_label(tmp_path, h),
        "jp2 geojp2": write_jp2_georeferenced(tmp_path / "geo.jp2", h, grid),
    }
    for kind, path in files.items():
        t = read_terrain(path)
        assert t.grid == grid, kind
        assert t.height_m.dtype == np.float32
        np.testing.assert_allclose(t.height_m, h, atol=1e-3, err_msg=kind)
        assert t.provenance["sha256"] and t.provenance["path"]
        assert t.provenance["window"] == [0, N, 0, N]


def test_label_fields_parsed(tmp_path):
    h, _ = synthetic_heights()
    write_img_int16(tmp_path, h)
    lab = parse_pds3_label(tmp_path / "LDEM_TEST.LBL")
    assert (lab.lines, lab.line_samples) == (N, N)
    assert lab.dtype == np.dtype("<i2")
    assert lab.scaling_factor == 0.5 and lab.offset == MOON_RADIUS_M
    assert lab.map_scale_m == 20.0 and lab.radius_m == MOON_RADIUS_M
    assert lab.line_projection_offset == N / 2 - 0.5
    assert lab.data_path.name == "LDEM_TEST.IMG"


def test_pds3_grid_follows_lola_formula(tmp_path):
    """LOLA: x = (SAMPLE - SAMPLE_PROJECTION_OFFSET - 1) * MAP_SCALE, y = (1 + LPO - LINE) * MAP_SCALE, 1-based."""
    h, _ = synthetic_heights()
    h = h[:, :48]  # a non-square image with its own offsets
    write_img_int16(tmp_path, h)
    t = read_terrain(tmp_path / "LDEM_TEST.IMG")
    x, y = t.grid.xy()
    for line, sample in [(1, 1), (10, 30), (64, 48)]:
        assert x[line - 1, sample - 1] == pytest.approx((sample - (48 / 2 - 0.5) - 1) * RES_M)
        assert y[line - 1, sample - 1] == pytest.approx((1 + (N / 2 - 0.5) - line) * RES_M)


def test_pds3_reader_agrees_with_gdal_pds_driver(tmp_path):
    """GDAL's own PDS driver is an independent reading of the same label: same grid, same heights."""
    h, _ = synthetic_heights()
    for img in (write_img_int16(tmp_path, h[:, :40]), write_img_float_km(tmp_path, h[:50])):
        ours = read_terrain(img)
        with rasterio.open(img.with_suffix(".LBL")) as ds:
            assert ds.driver == "PDS"
            assert Grid.from_transform(ds.transform, ds.shape) == ours.grid
            gdal_m = ds.read(1).astype(np.float64) * ds.scales[0] + ds.offsets[0]
        if img.name.endswith("FLOAT.IMG"):
            gdal_m *= 1000.0
        else:
            gdal_m -= MOON_RADIUS_M  # OFFSET is the sphere radius
        np.testing.assert_allclose(ours.height_m, gdal_m, atol=1e-3)
    assert ours.grid.rowcol(0.0, 0.0) == (24.5, 31.5)  # the pole: the corner shared by the four central pixels


def test_missing_constant_and_nan_become_nan(tmp_path):
    h, grid = synthetic_heights()
    h[3, 5] = np.nan
    h[40, 7] = np.nan
    t = read_terrain(write_img_int16(tmp_path, h, missing=-32768))
    assert np.array_equal(np.isnan(t.height_m), np.isnan(h))
    # float_img with the ISIS null bit pattern as missing constant
    hk = (h / 1000.0).astype("<f4")
    hk[np.isnan(h)] = np.array(0xFF7FFFFB, dtype=np.uint32).view(np.float32)
    img = tmp_path / "F.IMG"
    img.write_bytes(hk.tobytes())
    (tmp_path / "F.LBL").write_text(pds3_label("F.IMG", lines=N, samples=N, sample_type="PC_REAL", bits=32,
                                               unit="KILOMETER", scaling=1.0, offset=0.0, missing="16#FF7FFFFB#"))
    t = read_terrain(img)
    assert np.array_equal(np.isnan(t.height_m), np.isnan(h))
    # GeoTIFF nodata value and NaN
    t = read_terrain(write_geotiff(tmp_path / "nd.tif", np.nan_to_num(h, nan=-9999.0), grid, nodata=-9999.0))
    assert np.array_equal(np.isnan(t.height_m), np.isnan(h))
    t = read_terrain(write_geotiff(tmp_path / "nan.tif", h, grid))
    assert np.array_equal(np.isnan(t.height_m), np.isnan(h))


def test_big_endian_and_radius_valued_float(tmp_path):
    """MSB integers, and a float product storing radii in km (OFFSET 1737.4 km)."""
    h, grid = synthetic_heights()
    img = tmp_path / "B.IMG"
    img.write_bytes(np.round(h / 0.5).astype(">i2").tobytes())
    (tmp_path / "B.LBL").write_text(pds3_label("B.IMG", lines=N, samples=N, sample_type="MSB_INTEGER", bits=16,
                                               unit="METER", scaling=0.5, offset=0.0, scale="0.02 <KM/PIXEL>"))
    np.testing.assert_allclose(read_terrain(img).height_m, h, atol=1e-6)
    img = tmp_path / "R.IMG"
    img.write_bytes(((h / 1000.0)).astype("<f4").tobytes())
    (tmp_path / "R.LBL").write_text(pds3_label("R.IMG", lines=N, samples=N, sample_type="PC_REAL", bits=32,
                                               unit="KILOMETER", scaling=1.0, offset=1737.4))
    t = read_terrain(img)
    assert t.grid == grid
    np.testing.assert_allclose(t.height_m, h, atol=1e-3)
    # the same without a UNIT: an OFFSET equal to the radius in km says the values are km
    label = (tmp_path / "R.LBL").read_text().replace("    UNIT                  = KILOMETER\n", "")
    (tmp_path / "R.LBL").write_text(label)
    np.testing.assert_allclose(read_terrain(img).height_m, h, atol=1e-3)


def test_attached_label_and_label_paths(tmp_path):
    """An image with its label in front (^IMAGE = record number), and opening by the .LBL / _JP2.LBL path."""
    h, grid = synthetic_heights()
    record = N * 2
    label = pds3_label("X", lines=N, samples=N, sample_type="LSB_INTEGER", bits=16, unit="METER", scaling=0.5,
                       offset="1737400.", file_records=N + 20)
    label = label.replace('^IMAGE                    = "X"', "^IMAGE = 21").replace("DESCRIPTION", "NOTE")
    head = label.encode().ljust(20 * record, b" ")
    assert len(head) == 20 * record
    img = tmp_path / "ATTACHED.IMG"
    img.write_bytes(head + np.round(h / 0.5).astype("<i2").tobytes())
    t = read_terrain(img)
    assert t.grid == grid and t.provenance["format"] == "PDS3"
    np.testing.assert_allclose(t.height_m, h, atol=1e-6)
    write_jp2_with_label(tmp_path, h)
    t = read_terrain(tmp_path / "LDEM_TEST_JP2.LBL")
    assert t.provenance["format"] == "JP2" and t.grid == grid
    np.testing.assert_allclose(t.height_m, h, atol=1e-6)


def test_label_with_north_centre_but_south_bounds_is_south(tmp_path):
    h, grid = synthetic_heights()
    img = write_img_int16(tmp_path, h, centre_lat=90, max_lat=-89.0)
    (tmp_path / "LDEM_TEST.LBL").write_text(
        (tmp_path / "LDEM_TEST.LBL").read_text().replace("MINIMUM_LATITUDE             = 90", "MINIMUM_LATITUDE = -90")
    )
    assert read_terrain(img).grid == grid


# --------------------------------------------------------------------------- regions and windows


def destination(lat_deg, lon_deg, bearing_deg, dist_m):
    """Great-circle destination point on the sphere (plain spherical trigonometry)."""
    lat1, lon1, b = map(math.radians, (lat_deg, lon_deg, bearing_deg))
    d = dist_m / MOON_RADIUS_M
    lat2 = math.asin(math.sin(lat1) * math.cos(d) + math.cos(lat1) * math.sin(d) * math.cos(b))
    lon2 = lon1 + math.atan2(math.sin(b) * math.sin(d) * math.cos(lat1), math.cos(d) - math.sin(lat1) * math.sin(lat2))
    return math.degrees(lat2), math.degrees(lon2)


@pytest.mark.parametrize("lat, lon, radius_km", [(-89.5, 30.0, 10.0), (-85.0, -120.0, 50.0), (-80.0, 10.0, 150.0)])
def test_circle_region_box_contains_the_circle(lat, lon, radius_km):
    x_min, x_max, y_min, y_max = Region(centre_lat_deg=lat, centre_lon_deg=lon, radius_km=radius_km).to_bounds_m()
    pts = [destination(lat, lon, b, radius_km * 1000.0) for b in np.arange(0.0, 360.0, 2.0)]
    x, y = latlon_to_xy([p[0] for p in pts], [p[1] for p in pts])
    assert np.all((x >= x_min) & (x <= x_max) & (y >= y_min) & (y <= y_max))
    # and it is not much larger than the circle's own extent
    assert (x_max - x_min) < 1.05 * (x.max() - x.min())


def test_region_validation_and_config():
    r = region_from_config({"x_min_m": -100, "x_max_m": 100, "y_min_m": -50, "y_max_m": 50.5})
    assert r.to_bounds_m() == (-100.0, 100.0, -50.0, 50.5)
    assert region_from_config({"centre_lat_deg": -89, "centre_lon_deg": 10, "radius_km": 5}).radius_km == 5.0
    with pytest.raises(SiteselError, match="radius_kms"):
        region_from_config({"centre_lat_deg": -89, "centre_lon_deg": 10, "radius_kms": 5})
    with pytest.raises(SiteselError, match="not both"):
        region_from_config({"centre_lat_deg": -89, "centre_lon_deg": 10, "radius_km": 5, "x_min_m": 0,
                            "x_max_m": 1, "y_min_m": 0, "y_max_m": 1})
    with pytest.raises(SiteselError, match="must be a number"):
        region_from_config({"centre_lat_deg": "south", "centre_lon_deg": 10, "radius_km": 5})
    with pytest.raises(SiteselError, match="southern"):
        Region(centre_lat_deg=45.0, centre_lon_deg=0.0, radius_km=5.0)
    with pytest.raises(SiteselError, match="centre_lon_deg = 400.0 is not a longitude"):
        region_from_config({"centre_lat_deg": -89, "centre_lon_deg": 400, "radius_km": 5})
    with pytest.raises(SiteselError, match="empty"):
        Region(x_min_m=1, x_max_m=0, y_min_m=0, y_max_m=1)


def test_window_read_matches_full_read_in_every_format(tmp_path):
    h, grid = synthetic_heights()
    region = Region(x_min_m=-330.0, x_max_m=250.0, y_min_m=-95.0, y_max_m=410.0)
    # expected window, computed by hand from the pixel edges
    c0, c1 = int(np.floor((-330.0 - grid.x0_m) / RES_M)), int(np.ceil((250.0 - grid.x0_m) / RES_M))
    r0, r1 = int(np.floor((grid.y0_m - 410.0) / RES_M)), int(np.ceil((grid.y0_m + 95.0) / RES_M))
    for path in (write_img_int16(tmp_path, h), write_img_float_km(tmp_path, h),
                 write_geotiff(tmp_path / "w.tif", h, grid), write_jp2_with_label(tmp_path, h)):
        t = read_terrain(path, region)
        assert t.provenance["window"] == [r0, r1, c0, c1]
        assert t.grid == grid.window(slice(r0, r1), slice(c0, c1))
        np.testing.assert_allclose(t.height_m, h[r0:r1, c0:c1], atol=1e-3)
        left, bottom, right, top = t.grid.bounds_m
        assert left <= -330.0 and right >= 250.0 and bottom <= -95.0 and top >= 410.0


def test_region_outside_the_file_is_an_error(tmp_path):
    h, grid = synthetic_heights()
    path = write_geotiff(tmp_path / "w.tif", h, grid)
    with pytest.raises(SiteselError, match="outside"):
        read_terrain(path, Region(centre_lat_deg=-80.0, centre_lon_deg=0.0, radius_km=5.0))
    with pytest.warns(UserWarning, match="clipped"):
        t = read_terrain(path, Region(x_min_m=0.0, x_max_m=5000.0, y_min_m=0.0, y_max_m=100.0))
    assert t.grid.bounds_m[2] == grid.bounds_m[2]


def test_window_of_a_large_image_reads_only_the_window(tmp_path):
    """A 20000 x 20000 int16 image (a sparse 800 MB file): the window costs about its own size."""
    n = 20000
    img = tmp_path / "BIG.IMG"
    with open(img, "wb") as f:
        f.truncate(n * n * 2)
    (tmp_path / "BIG.LBL").write_text(pds3_label("BIG.IMG", lines=n, samples=n, sample_type="LSB_INTEGER", bits=16,
                                                 unit="METER", scaling=0.5, offset="1737400."))
    region = Region(x_min_m=-5000.0, x_max_m=5000.0, y_min_m=-5000.0, y_max_m=5000.0)
    tracemalloc.start()
    t = read_terrain(img, region)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert t.shape == (500, 500)
    assert np.all(t.height_m == 0.0)
    assert peak < 20 * t.height_m.nbytes  # float64 working copy + masks, never the 800 MB image
    assert t.provenance["sha256_scope"] == "head+tail+size"


# --------------------------------------------------------------------------- bad input


def test_label_not_matching_file_size(tmp_path):
    h, _ = synthetic_heights()
    img = write_img_int16(tmp_path, h)
    (tmp_path / "LDEM_TEST.LBL").write_text(pds3_label(img.name, lines=N, samples=N - 1, sample_type="LSB_INTEGER",
                                                       bits=16, unit="METER", scaling=0.5, offset=0))
    with pytest.raises(SiteselError, match="does not match"):
        read_terrain(img)
    (tmp_path / "LDEM_TEST.LBL").write_text(pds3_label(img.name, lines=N, samples=N, sample_type="LSB_INTEGER",
                                                       bits=16, unit="METER", scaling=0.5, offset=0, file_records=N + 1))
    with pytest.raises(SiteselError, match="record structure"):
        read_terrain(img)


def test_truncated_and_corrupt_files(tmp_path):
    h, grid = synthetic_heights()
    img = write_img_int16(tmp_path, h)
    img.write_bytes(img.read_bytes()[:1000])
    with pytest.raises(SiteselError, match="truncated"):
        read_terrain(img)
    tif = write_geotiff(tmp_path / "c.tif", h, grid)
    raw = tif.read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SiteselError, match="truncated or corrupt"):
        read_terrain(tmp_path / "cut.tif")
    (tmp_path / "junk.tif").write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    with pytest.raises(SiteselError, match="truncated or corrupt"):
        read_terrain(tmp_path / "junk.tif")


@pytest.mark.parametrize(
    "crs, message",
    [
        ("IAU_2015:30130", "north-polar"),  # Moon north polar stereographic
        ("IAU_2015:30100", "not polar stereographic"),  # lunar lat/lon (equatorial cylindrical)
        ("+proj=eqc +R=1737400 +units=m +no_defs", "not polar stereographic"),
        ("EPSG:3031", "Earth"),  # Antarctic polar stereographic on WGS84
        ("EPSG:4326", "Earth"),
        ("+proj=stere +lat_0=-90 +lon_0=45 +k=1 +R=1737400 +units=m", "other projection parameters"),
        ("+proj=stere +lat_0=-90 +lon_0=0 +k=1 +R=1737400 +units=km", "map units 'km'; sitesel reads metres"),
        (None, "has no CRS; if it is on the LOLA south polar stereographic grid, set it, e.g. gdal_edit.py"),
    ],
)
def test_wrong_crs_is_rejected_naming_what_was_found(tmp_path, crs, message):
    h, grid = synthetic_heights()
    path = write_geotiff(tmp_path / "x.tif", h, grid, crs=crs)
    with pytest.raises(SiteselError, match=message) as err:
        read_terrain(path)
    assert any(hint in str(err.value) for hint in ("expected", "south-polar", "gdal_edit.py -a_srs", "gdalwarp"))
    assert "\n" not in str(err.value)


def test_a_km_crs_error_is_the_only_line_on_stderr(tmp_path):
    """PROJ looks up unit names in its proj.db; without sitesel pointing it at rasterio's bundled
    copy it printed "Cannot find proj.db" before the one-line error (in a fresh process: the
    fix sets PROJ_DATA once)."""
    import subprocess
    import sys

    h, grid = synthetic_heights()
    path = write_geotiff(tmp_path / "km.tif", h, grid, crs="+proj=stere +lat_0=-90 +lon_0=0 +k=1 +R=1737400 +units=km")
    env = {k: v for k, v in os.environ.items() if k not in ("PROJ_DATA", "PROJ_LIB")}
    out = subprocess.run([sys.executable, "-m", "sitesel.cli", "info", str(path)], capture_output=True, text=True,
                         env=env)
    assert out.returncode != 0
    assert out.stderr.count("\n") == 1 and "map units 'km'" in out.stderr, out.stderr


def test_wrong_pds3_projection_is_rejected(tmp_path):
    h, _ = synthetic_heights()
    img = write_img_int16(tmp_path, h, centre_lat=90, max_lat=89.0)
    with pytest.raises(SiteselError, match="north-polar"):
        read_terrain(img)
    img = write_img_int16(tmp_path, h, projection="EQUIRECTANGULAR")
    with pytest.raises(SiteselError, match="equatorial"):
        read_terrain(img)
    img = write_img_int16(tmp_path, h, radius="3396.19 <km>")
    with pytest.raises(SiteselError, match="not the lunar sphere"):
        read_terrain(img)


def test_non_dem_files(tmp_path):
    rgb = tmp_path / "photo.png"
    with rasterio.open(rgb, "w", driver="PNG", dtype="uint8", count=3, width=8, height=8) as ds:
        ds.write(np.zeros((3, 8, 8), dtype="uint8"))
    with pytest.raises(SiteselError, match="not a DEM"):
        read_terrain(rgb)
    rgb_tif = tmp_path / "rgb.tif"
    with rasterio.open(rgb_tif, "w", driver="GTiff", dtype="uint8", count=3, width=8, height=8) as ds:
        ds.write(np.zeros((3, 8, 8), dtype="uint8"))
    with pytest.raises(SiteselError, match="not a DEM"):
        read_terrain(rgb_tif)
    with pytest.raises(SiteselError, match="does not exist"):
        read_terrain(tmp_path / "missing.tif")


# --------------------------------------------------------------------------- writing, info, far field


def test_write_terrain_round_trip_atomic_and_deterministic(tmp_path):
    h, grid = synthetic_heights(300)
    h[0, 0] = np.nan
    t = Terrain(h, grid, {"generator": "test", "seed": 1})
    a = write_terrain(tmp_path / "a.tif", t)
    b = write_terrain(tmp_path / "sub" / "b.tif", t)
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "sub"]  # no temporary file left
    back = read_terrain(a)
    assert back.grid == grid
    np.testing.assert_array_equal(back.height_m, t.height_m)


def test_describe_dem(tmp_path):
    h, grid = synthetic_heights()
    h[:4, :] = np.nan
    d = describe_dem(write_geotiff(tmp_path / "d.tif", h, grid), strip_rows=7)
    assert d["format"] == "GeoTIFF" and d["size_px"] == [N, N] and d["resolution_m"] == RES_M
    assert d["nodata_fraction"] == pytest.approx(4 / N)
    assert d["min_height_m"] == pytest.approx(np.nanmin(h)) and d["max_height_m"] == pytest.approx(np.nanmax(h))
    assert d["pole_inside"] is True
    corner = math.hypot(N / 2 * RES_M, N / 2 * RES_M)
    assert d["lat_range_deg"][0] == -90.0
    assert d["lat_range_deg"][1] == pytest.approx(math.degrees(2 * math.atan(corner / (2 * MOON_RADIUS_M))) - 90)
    assert "pole inside  yes" in format_description(d)
    assert json.loads(json.dumps(d)) == d  # `sitesel info --json`
    d = describe_dem(write_img_float_km(tmp_path, h))
    assert d["units_found"] == "KILOMETER" and "km->m" in d["units_applied"]


def test_far_field_is_a_block_mean_around_the_near_grid(tmp_path):
    h, grid = synthetic_heights(128, 80.0)
    h[5, 5] = np.nan
    path = write_geotiff(tmp_path / "far.tif", h, grid)
    near = Terrain(np.zeros((10, 10), np.float32), Grid.centred((10, 10), 5.0, 300.0, -200.0))
    far = read_far_field(path, near, radius_m=2000.0, max_size_px=30)
    f = far.provenance["decimation"]
    r0, _, c0, _ = far.provenance["window"]
    nl, nb, nr, nt = near.grid.bounds_m
    cols = math.ceil((nr + 2000.0 - grid.x0_m) / 80.0) - math.floor((nl - 2000.0 - grid.x0_m) / 80.0)
    rows = math.ceil((grid.y0_m - nb + 2000.0) / 80.0) - math.floor((grid.y0_m - nt - 2000.0) / 80.0)
    assert f == math.ceil(max(rows, cols) / 30) == 2
    # plain loop reference of the block mean
    ref = np.empty(far.shape)
    for i in range(far.shape[0]):
        for j in range(far.shape[1]):
            block = h[r0 + i * f: r0 + (i + 1) * f, c0 + j * f: c0 + (j + 1) * f]
            ref[i, j] = np.nanmean(block)
    np.testing.assert_allclose(far.height_m, ref, rtol=1e-6, atol=1e-3)
    assert far.grid.resolution_m == 160.0
    left, bottom, right, top = far.grid.bounds_m
    assert left <= nl - 2000.0 and right >= nr + 2000.0
    assert bottom <= nb - 2000.0 and top >= nt + 2000.0


@pytest.mark.skipif(not SAMPLE_DATA.exists(), reason="shared sample data not present")
def test_real_lola_sample():
    t = read_terrain(SAMPLE_DATA)
    row, col = t.grid.rowcol(0.0, 0.0)
    assert abs(row - 116) < 1.5 and abs(col - 152) < 1.5  # the README's pole position
    # Shackleton (21 km across, about 4 km deep) fits in a 12 km radius around its catalogued centre
    w = read_terrain(SAMPLE_DATA, Region(centre_lat_deg=-89.67, centre_lon_deg=129.78, radius_km=12.0))
    assert w.shape[0] <= 2 * 12_000 / 200 + 2 and np.isfinite(w.height_m).all()
    r, c = (np.array(w.shape) - 1) / 2
    floor = w.height_m[int(r) - 5: int(r) + 6, int(c) - 5: int(c) + 6]
    assert np.nanmax(w.height_m) - np.nanmean(floor) > 3000.0


def test_4000_window_of_a_30400_float_product_stays_under_1_gb_resident(tmp_path):
    """DESIGN/issue 4: a 4000 x 4000 window of a 30400 x 30400 float32 file (3.7 GB, sparse here)."""
    import subprocess
    import sys

    n = 30400
    img = tmp_path / "LDEM_80S_20M_FLOAT.IMG"
    with open(img, "wb") as f:
        f.truncate(n * n * 4)
    (tmp_path / "LDEM_80S_20M_FLOAT.LBL").write_text(pds3_label(img.name, lines=n, samples=n, sample_type="PC_REAL",
                                                                bits=32, unit="KILOMETER", scaling=1.0, offset=0.0))
    code = f"""
from sitesel.terrain.io import read_terrain
from sitesel.terrain.region import Region
t = read_terrain({str(img)!r}, Region(x_min_m=-40000.0, x_max_m=40000.0, y_min_m=-40000.0, y_max_m=40000.0))
assert t.shape == (4000, 4000), t.shape
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) * 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak_bytes = int(out.stdout.split()[-1])
    assert peak_bytes < 1024**3


def test_a_far_field_off_the_dem_names_the_far_field(tmp_path):
    h, grid = synthetic_heights(32, 80.0)
    path = write_geotiff(tmp_path / "far.tif", h, grid)
    near = Terrain(np.zeros((10, 10), np.float32), Grid.centred((10, 10), 5.0, 500e3, 0.0))
    with pytest.raises(SiteselError, match=r"^the far field's area .* is outside .*far\.tif .*; give a far field "
                                           r"\(\[dem\] far_field, --far-field\) around the DEM$"):
        read_far_field(path, near, radius_m=2000.0)


def test_own_far_field_is_the_rest_of_the_file_or_none(tmp_path):
    from sitesel.terrain.io import OWN_FAR_FIELD_PX, read_own_far_field

    h, grid = synthetic_heights(96, 80.0)
    path = write_geotiff(tmp_path / "dem.tif", h, grid)
    whole = read_terrain(path)
    assert read_own_far_field(path, whole, radius_m=150e3) is None  # the near field is all of the file
    near = whole.window(slice(40, 56), slice(40, 56))
    far = read_own_far_field(path, near, radius_m=150e3)
    assert far.grid.bounds_m == whole.grid.bounds_m and max(far.shape) <= OWN_FAR_FIELD_PX
    np.testing.assert_array_equal(far.height_m, whole.height_m)  # 96 px a side: no block averaging needed


def test_heights_stored_as_radii_are_refused_and_kilometres_read_as_metres_warned(tmp_path):
    h, grid = synthetic_heights(64, 100.0)  # 6.4 km across, 3 km of relief
    radii = write_geotiff(tmp_path / "radii.tif", h + MOON_RADIUS_M, grid)
    with pytest.raises(SiteselError, match=r"heights reach 1,7\d\d,\d{3} m, beyond any on the Moon .* subtract 1737400"):
        read_terrain(radii)
    km = write_geotiff(tmp_path / "km.tif", h / 1000.0, grid, units=None)  # kilometres, with no unit given
    with pytest.warns(SiteselWarning, match=r"heights span only \d\.\d\d m over \d+ km; if the file stores kilometres"):
        read_terrain(km)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_terrain(write_geotiff(tmp_path / "m.tif", h, grid))  # metres: no warning
        read_terrain(write_geotiff(tmp_path / "flat.tif", 0.0 * h, grid))  # a flat test plane: none either
