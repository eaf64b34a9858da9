"""Output files: GeoTIFF layers, sites CSV/GeoJSON, JSON, report and manifest (DESIGN.md section 3)."""

import csv
import hashlib
import io
import json
import math
import time

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.warp import transform

from sitesel import outputs, report
from sitesel.constants import MOON_RADIUS_M, SOUTH_POLAR_STEREO_PROJ
from sitesel.errors import SiteselError
from sitesel.terrain.grid import Grid, latlon_to_xy

R = MOON_RADIUS_M


def _layer(shape=(40, 50), seed=0):
    rng = np.random.default_rng(seed)
    values = rng.random(shape).astype(np.float32) * 90.0
    values[3, 4] = np.nan
    return values


def _site(rank, lat, lon, *, semi_major_m=15_000.0, semi_minor_m=7_500.0, azimuth_deg=30.0, **extra):
    x, y = latlon_to_xy(lat, lon)
    site = {
        "rank": rank,
        "lat": lat,
        "lon": lon,
        "x_m": float(x),
        "y_m": float(y),
        "score": 0.9 - 0.1 * rank,
        "slope_deg": 3.25,
        "sun_lit_fraction": 0.8123456789,
        "longest_night_h": 96.5,
        "earth_visible_fraction": np.float32(0.55),
        "longest_blackout_h": 200.0,
        "psr_distance_m": 2500.0,
        "ellipse_semi_major_m": semi_major_m,
        "ellipse_semi_minor_m": semi_minor_m,
        "ellipse_azimuth_deg": azimuth_deg,
    }
    site.update(extra)
    return site


def _arc_m(lat1, lon1, lat2, lon2):
    """Great-circle distance on the reference sphere (plain spherical law of haversines)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dlat, dlon = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dlat / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dlon / 2) ** 2
    return 2 * R * math.asin(math.sqrt(h))


# --------------------------------------------------------------------------- layers


def test_float_layer_round_trip(tmp_path):
    grid = Grid.centred((40, 50), 240.0, 1_000.0, -2_000.0)
    values = _layer()
    path = outputs.write_layer(tmp_path / "slope_deg.tif", values, grid, units="deg", description="slope",
                               tags={"method": "plane fit"})
    array, grid_back, tags = outputs.read_layer(path)
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, values)  # NaN positions compare equal
    assert grid_back == grid
    assert tags["UNITS"] == "deg" and tags["DESCRIPTION"] == "slope" and tags["method"] == "plane fit"
    with rasterio.open(path) as src:
        # GeoTIFF keys store the projection as variant B (lat_ts = -90): the same map, checked through PROJ
        lon = np.array([0.0, 45.0, 137.3, -100.0])
        lat = np.array([-89.9, -89.0, -85.0, -80.5])
        x, y = transform(CRS.from_proj4("+proj=longlat +R=1737400 +no_defs"), src.crs, lon, lat)
        expected_x, expected_y = latlon_to_xy(lat, lon)
        np.testing.assert_allclose(x, expected_x, atol=1e-6)
        np.testing.assert_allclose(y, expected_y, atol=1e-6)
        x2, y2 = transform(CRS.from_proj4(SOUTH_POLAR_STEREO_PROJ), src.crs, expected_x, expected_y)
        np.testing.assert_allclose(x2, expected_x, atol=1e-6)
        np.testing.assert_allclose(y2, expected_y, atol=1e-6)
        assert src.transform == grid.transform
        assert np.isnan(src.nodata)
        assert src.descriptions == ("slope",) and src.units == ("deg",)
        assert src.profile["compress"] == "deflate"
        assert not src.profile.get("tiled", False)  # small layers are stripped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slope_deg.tif"]  # no temp or sidecar files


def test_uint8_and_large_layers(tmp_path):
    grid = Grid.centred((600, 520), 20.0)
    psr = np.zeros(grid.shape, dtype=bool)
    psr[100:200, 300:400] = True
    path = outputs.write_layer(tmp_path / "psr.tif", psr, grid, units="1", description="psr")
    array, _, _ = outputs.read_layer(path)
    assert array.dtype == np.uint8
    np.testing.assert_array_equal(array, psr.astype(np.uint8))
    with rasterio.open(path) as src:
        assert src.nodata is None
        assert src.profile["tiled"] and src.block_shapes == [(256, 256)]
    with pytest.raises(ValueError, match="does not match grid shape"):
        outputs.write_layer(tmp_path / "bad.tif", psr[:10], grid, units="1", description="x")
    with pytest.raises(TypeError):
        outputs.write_layer(tmp_path / "bad.tif", psr.astype(np.int32), grid, units="1", description="x")


def test_layer_bytes_identical_on_repeat(tmp_path):
    grid = Grid.centred((40, 50), 240.0)
    values = _layer()
    a = outputs.write_layer(tmp_path / "a.tif", values, grid, units="h", description="night")
    time.sleep(1.1)  # a DateTime tag (1 s resolution) would now differ
    b = outputs.write_layer(tmp_path / "b.tif", values, grid, units="h", description="night")
    assert a.read_bytes() == b.read_bytes()
    with rasterio.open(a) as src:
        assert not any("DATETIME" in key.upper() for key in src.tags())


def test_failed_layer_write_leaves_nothing(tmp_path, monkeypatch):
    grid = Grid.centred((40, 50), 240.0)
    target = tmp_path / "score.tif"

    def broken_write(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(rasterio.io.DatasetWriter, "write", broken_write)
    with pytest.raises(OSError, match="disk full"):
        outputs.write_layer(target, _layer(), grid, units="1", description="score")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    target = outputs.write_text(tmp_path / "report.md", "old\n")

    def broken_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(outputs.os, "replace", broken_replace)
    with pytest.raises(OSError, match="rename failed"):
        outputs.write_text(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


# --------------------------------------------------------------------------- sites


def test_sites_csv_columns_formatting_and_determinism(tmp_path):
    sites = [
        _site(1, -89.45, 137.3, term_slope_deg=0.783, row=5, col=7, psr=0),
        _site(2, -88.9, -45.0, term_slope_deg=0.5, row=9, col=2, psr=1, longest_night_h=float("nan")),
    ]
    path = outputs.write_sites_csv(tmp_path / "sites.csv", sites)
    text = path.read_text()
    assert outputs.write_sites_csv(tmp_path / "again.csv", sites).read_text() == text
    assert "\r" not in text
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0]
    assert header[:6] == ["rank", "lat", "lon", "x_m", "y_m", "score"]
    assert header[-3:] == ["ellipse_semi_major_m", "ellipse_semi_minor_m", "ellipse_azimuth_deg"]
    assert header.index("slope_deg") < header.index("sun_lit_fraction") < header.index("psr_distance_m")
    assert len(header) == len(set(header)) == len(sites[0])
    first = dict(zip(header, rows[1]))
    assert first["rank"] == "1"
    assert first["lat"] == "-89.450000" and first["lon"] == "137.300000"  # 6 decimals
    assert first["sun_lit_fraction"] == "0.812346"
    assert first["earth_visible_fraction"] == "0.550000"  # numpy float32 rounded like a float
    assert first["x_m"] == f"{sites[0]['x_m']:.3f}"
    assert first["row"] == "5" and first["psr"] == "0"
    assert first["term_slope_deg"] == "0.783000"  # normalised terms keep 6 decimals whatever their suffix
    second = dict(zip(header, rows[2]))
    assert second["longest_night_h"] == ""  # NaN is an empty cell
    for site, row in zip(sites, rows[1:]):
        for column, cell in zip(header, row):
            if cell and isinstance(site[column], (float, np.floating)):
                assert float(cell) == pytest.approx(float(site[column]), abs=10.0 ** -outputs.decimals_for(column))


def test_sites_require_core_columns(tmp_path):
    site = _site(1, -89.0, 0.0)
    del site["ellipse_azimuth_deg"]
    with pytest.raises(ValueError, match="ellipse_azimuth_deg"):
        outputs.write_sites_csv(tmp_path / "sites.csv", [site])
    # with no site the header still names every metric
    header = outputs.write_sites_csv(tmp_path / "empty.csv", []).read_text().strip().split(",")
    assert header == [*outputs.LEAD_COLUMNS, *outputs.METRIC_COLUMNS, *outputs.ELLIPSE_COLUMNS]


def test_counts_are_whole_numbers_in_the_sites_files(tmp_path):
    site = {**_site(1, -89.0, 0.0), "n_long_nights": np.float32(3.0)}
    row = dict(zip(*csv.reader(io.StringIO(outputs.sites_csv_text([site])))))
    assert row["n_long_nights"] == "3"
    geojson = json.loads(outputs.write_sites_geojson(tmp_path / "s.geojson", [site]).read_text())
    assert geojson["features"][0]["properties"]["n_long_nights"] == 3


def test_point_label_names_hemispheres():
    from sitesel.plots import point_label

    assert point_label(-89.5381, -151.4219) == "89.538 S 151.422 W"
    assert point_label(-89.5, 208.5781) == "89.500 S 151.422 W"  # east-positive beyond 180 wraps
    assert point_label(-88.0, 30.0, decimals=1) == "88.0 S 30.0 E"


def _ring_xy(feature):
    ring = np.asarray(feature["geometry"]["coordinates"][0])
    x, y = latlon_to_xy(ring[:, 1], ring[:, 0])
    return ring, x, y


@pytest.mark.parametrize("lat, lon, azimuth_deg", [(-89.45, 137.3, 30.0), (-81.0, 25.0, 0.0), (-85.0, -100.0, 90.0)])
def test_geojson_ellipse_vertices_lie_on_the_ellipse(tmp_path, lat, lon, azimuth_deg):
    a, b = 15_000.0, 7_500.0
    site = _site(1, lat, lon, semi_major_m=a, semi_minor_m=b, azimuth_deg=azimuth_deg)
    path = outputs.write_sites_geojson(tmp_path / "sites.geojson", [site])
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection"
    assert data["crs"]["properties"]["name"] == "IAU_2015:30100"
    assert "Moon" in data["properties"]["reference"]
    point, ellipse = data["features"]
    assert point["geometry"] == {"type": "Point", "coordinates": [lon, lat]}
    assert point["properties"]["rank"] == 1 and point["properties"]["slope_deg"] == 3.25
    ring, x, y = _ring_xy(ellipse)
    assert ring.shape == (65, 2) and np.array_equal(ring[0], ring[-1])
    # RFC 7946: exterior ring counterclockwise in lon/lat
    shoelace = np.sum(ring[:-1, 0] * ring[1:, 1] - ring[1:, 0] * ring[:-1, 1])
    assert shoelace > 0

    # Independent geometry: local north at a south-polar point is the radial direction away from the pole,
    # local east is 90 deg clockwise of it on the map; the major axis is at local azimuth az from north.
    north = np.array([site["x_m"], site["y_m"]]) / math.hypot(site["x_m"], site["y_m"])
    east = np.array([north[1], -north[0]])
    az = math.radians(azimuth_deg)
    major = math.cos(az) * north + math.sin(az) * east
    minor = np.array([-major[1], major[0]])
    k = 2.0 / (1.0 - math.sin(math.radians(lat)))  # polar stereographic scale factor
    d = np.stack([x - site["x_m"], y - site["y_m"]], axis=-1)[:-1]
    u, v = d @ major / (k * a), d @ minor / (k * b)
    np.testing.assert_allclose(u**2 + v**2, 1.0, atol=2e-4)  # vertices rounded to 1e-6 deg
    # 64 vertices evenly spaced in the ellipse parameter, the first at the major-axis end
    angles = np.unwrap(np.arctan2(v, u))
    np.testing.assert_allclose(np.diff(angles), 2 * np.pi / 64, atol=1e-3)
    assert u[0] == pytest.approx(1.0, abs=1e-3)
    # On the ground the major-axis ends are a from the centre along the great circle
    for i in (0, 32):
        assert _arc_m(lat, lon, ring[i, 1], ring[i, 0]) == pytest.approx(a, rel=2e-3)
    for i in (16, 48):
        assert _arc_m(lat, lon, ring[i, 1], ring[i, 0]) == pytest.approx(b, rel=2e-3)


def test_geojson_ring_continuous_across_antimeridian_and_deterministic(tmp_path):
    sites = [_site(1, -88.0, 179.95, azimuth_deg=0.0), _site(2, -87.0, -179.9)]
    text = outputs.write_sites_geojson(tmp_path / "a.geojson", sites).read_text()
    assert outputs.write_sites_geojson(tmp_path / "b.geojson", sites).read_text() == text
    features = json.loads(text)["features"]
    assert [f["id"] for f in features] == ["site-1", "ellipse-1", "site-2", "ellipse-2"]
    for feature in features[1::2]:
        lons = np.asarray(feature["geometry"]["coordinates"][0])[:, 0]
        assert np.max(np.abs(np.diff(lons))) < 5.0


# --------------------------------------------------------------------------- JSON, checksums, writability


def test_write_json(tmp_path):
    obj = {"b": np.float64(1.5), "a": [np.int64(3), float("nan")], "c": {"z": np.arange(2), "y": tmp_path}}
    path = outputs.write_json(tmp_path / "m.json", obj)
    text = path.read_text()
    assert text.endswith("}\n") and text.index('"a"') < text.index('"b"') < text.index('"c"')
    assert json.loads(text) == {"a": [3, None], "b": 1.5, "c": {"y": str(tmp_path), "z": [0, 1]}}


def test_check_writable(tmp_path):
    out = outputs.check_writable(tmp_path / "new" / "out")
    assert out.is_dir() and list(out.iterdir()) == []
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SiteselError, match=r"output directory '.*file/out' is not writable"):
        outputs.check_writable(blocker / "out")


# --------------------------------------------------------------------------- report and manifest


def test_report_tables_and_figures(tmp_path):
    sites = [
        _site(1, -89.45, -137.31, term_psr_distance_m=0.75, term_slope_deg=0.783, term_sun_lit_fraction=0.81),
        _site(2, -88.9, 45.0, term_psr_distance_m=0.0, term_slope_deg=0.5, term_sun_lit_fraction=0.7,
              psr_distance_m=float("nan")),
    ]
    run = {
        "dem": {"path": "dems/LDEM_85S_20M.IMG", "sha256": "ab" * 32},
        "period": {"start": "2027-01-01", "end": "2028-01-01", "step_hours": 1.0},
        "observer_height_m": 2.0,
        "profile": "ilrs",
        "custom": 7,
    }
    figures = [("Profile score", "plots/score.png"), ("Horizon of site 1", "plots/horizon_site01.png")]
    kwargs = dict(run=run, sites=sites, figures=figures, layers_summary={"psr_area_km2": 1234.5678})
    path = report.write_report(tmp_path / "report.md", **kwargs)
    text = path.read_text()
    assert report.write_report(tmp_path / "again.md", **kwargs).read_text() == text
    lines = text.splitlines()
    assert "| 1 | -89.4500 | -137.3100 | 0.800 | 3.2 | 81.2 | 96.5 | 55.0 | 200.0 | 2.50 |" in lines
    assert "| 2 | -88.9000 | 45.0000 | 0.700 | 3.2 | 81.2 | 96.5 | 55.0 | 200.0 | - |" in lines
    assert "## How each site scored on each term" in lines
    # terms in the pipeline's metric order (not alphabetical)
    assert "| rank | score | slope_deg | sun_lit_fraction | psr_distance_m |" in lines
    assert "| 1 | 0.800 | 0.783 | 0.810 | 0.750 |" in lines
    assert "ab" * 32 in text and "2027-01-01" in text and "ilrs" in text and "custom" in text
    assert "numpy" in text and "rasterio" in text
    assert "1234.57 km^2" in text
    assert "![Profile score](plots/score.png)" in lines
    assert "![Horizon of site 1](plots/horizon_site01.png)" in lines


def test_manifest_checksums_and_versions(tmp_path):
    dem = tmp_path / "dem.img"
    dem.write_bytes(b"\x00\x01" * 5000)
    config = {"time": {"start": "2027-01-01"}, "observer": {"height_m": 2.0}}
    manifest = report.build_manifest(inputs=[dem], config=config, timings={"horizon": 1.23456},
                                     extra={"run": {"profile": "ilrs"}})
    (entry,) = manifest["inputs"]
    assert entry == {"path": str(dem), "sha256": hashlib.sha256(dem.read_bytes()).hexdigest(), "sha256_scope": "full",
                     "size_bytes": 10000}
    assert manifest["config"] == config
    assert manifest["timings"] == {"horizon": 1.235}  # seconds, to the ms
    assert manifest["run"] == {"profile": "ilrs"}
    for name in ("python", "numpy", "scipy", "numba", "rasterio", "skyfield", "matplotlib", "sitesel"):
        assert manifest["versions"][name]
    assert manifest["platform"]["system"]
    json.loads(outputs.write_json(tmp_path / "manifest.json", manifest).read_text())
    with pytest.raises(ValueError, match="clash"):
        report.build_manifest(inputs=[], config={}, timings={}, extra={"config": 1})


def test_sites_csv_orders_a_runs_columns_by_what_they_hold():
    """Metrics, then the run's details (other visibility layers, where the values come from, how
    the site ranked), then the profile terms in the metrics' order, then unknown keys, then the ellipse."""
    site = {**_site(1, -89.0, 0.0), "row": 3, "col": 4, "feasible": 1, "score_centre": 0.5, "psr": 0,
            "visibility_exact": 1.0, "longest_sunlit_h": 10.0, "n_long_nights": 2, "terrain_reach_km": 5.0,
            "term_sun_lit_fraction": 0.4, "term_slope_deg": 0.9, "term_custom": 0.1, "zz_extra": 1.0}
    header = next(csv.reader(io.StringIO(outputs.sites_csv_text([site]))))
    metrics = [c for c in outputs.METRIC_COLUMNS if c in site]
    lead = len(outputs.LEAD_COLUMNS)
    assert header[:lead] == list(outputs.LEAD_COLUMNS)
    assert header[lead:lead + len(metrics)] == metrics
    details = header[lead + len(metrics):lead + len(metrics) + len(outputs.DETAIL_COLUMNS)]
    assert details == list(outputs.DETAIL_COLUMNS)
    rest = header[lead + len(metrics) + len(details):]
    assert rest[:4] == ["term_slope_deg", "term_sun_lit_fraction", "term_custom", "zz_extra"]
    assert rest[4:] == [c for c in (*outputs.ELLIPSE_COLUMNS, *outputs.OPTIONAL_ELLIPSE_COLUMNS) if c in site]
