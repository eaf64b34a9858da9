"""The `sitesel` command: end to end on a reduced demo, and every input error path."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine

from sitesel.cli import main
from sitesel.terrain.io import read_terrain, write_terrain
from sitesel.terrain.synthetic import synthetic_south_pole

LAYERS = [
    "slope_deg", "roughness_m", "sun_lit_fraction", "sun_disc_fraction", "earth_visible_fraction",
    "longest_night_h", "longest_blackout_h", "psr", "psr_distance_m", "feasible", "score",
]
SMALL_DEMO = ["--size", "64", "--resolution-m", "400", "--step-hours", "12", "--quiet"]


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
        raise SystemExit(0)
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sitesel: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    with pytest.raises(SystemExit) as info:
        main(["demo", "--out", str(out), *SMALL_DEMO])
        raise SystemExit(0)
    assert info.value.code == 0
    return out


@pytest.fixture(scope="module")
def small_dem(tmp_path_factory):
    path = tmp_path_factory.mktemp("dem") / "small.tif"
    write_terrain(path, synthetic_south_pole(size=64, resolution_m=400.0, seed=3))
    return path


def test_demo_writes_every_design_output(demo_dir):
    for name in LAYERS:
        with rasterio.open(demo_dir / "layers" / f"{name}.tif") as ds:
            assert ds.shape == (64, 64)
            assert "stere" in ds.crs.to_proj4()
            assert ds.tags().get("method"), name  # every layer says how it was made
    for name in ("sites.csv", "sites.geojson", "report.md", "manifest.json", "dem.tif", "far_field.tif"):
        assert (demo_dir / name).stat().st_size > 0
    assert (demo_dir / "plots" / "score.png").is_file()
    assert list((demo_dir / "plots").glob("horizon_site*.png"))
    sites = json.loads((demo_dir / "sites.geojson").read_text())
    assert sites["type"] == "FeatureCollection" and sites["features"]
    manifest = json.loads((demo_dir / "manifest.json").read_text())
    assert "timings" in manifest and "versions" in manifest
    # the demo's DEMs are written with the outputs and listed at their final paths, with their checksums
    assert [entry["path"] for entry in manifest["inputs"]] == [str(demo_dir / name) for name in ("dem.tif",
                                                                                               "far_field.tif")]
    for entry in manifest["inputs"]:
        assert entry["sha256"] == hashlib.sha256(open(entry["path"], "rb").read()).hexdigest()
    timings = manifest["timings"]
    assert timings["total"] >= timings["outputs"] + timings["horizon_visibility"]
    report = (demo_dir / "report.md").read_text()
    assert "plots/score.png" in report
    # No temporary or partial files left behind.
    leftovers = [p for p in demo_dir.rglob("*") if p.name.endswith((".tmp", ".part"))]
    assert leftovers == []


def test_demo_is_reproducible_and_resumes(demo_dir, tmp_path, capsys):
    out = tmp_path / "again"
    code, _, err = run_cli(["demo", "--out", out, *SMALL_DEMO], capsys)
    assert code == 0, err
    for path in sorted(demo_dir.rglob("*")):
        if path.is_file() and path.name != "manifest.json" and ".tiles" not in path.parts:
            twin = out / path.relative_to(demo_dir)
            assert twin.read_bytes() == path.read_bytes(), path.name
    # A rerun with --resume reuses the checkpointed tiles and gives the same layers.
    code, _, err = run_cli(["demo", "--out", out, *SMALL_DEMO, "--resume"], capsys)
    assert code == 0, err
    assert (out / "layers" / "score.tif").read_bytes() == (demo_dir / "layers" / "score.tif").read_bytes()
    assert (out / "report.md").read_bytes() == (demo_dir / "report.md").read_bytes()
    # the manifest says the tiles were reused
    assert json.loads((out / "manifest.json").read_text())["tiles"] == {"total": 1, "resumed": 1}
    assert json.loads((demo_dir / "manifest.json").read_text())["tiles"] == {"total": 1, "resumed": 0}


def test_site_with_the_demos_far_field_sees_what_the_map_saw(demo_dir, capsys):
    import csv

    best = next(csv.DictReader((demo_dir / "sites.csv").open()))
    common = ["site", best["lat"], best["lon"], "--dem", demo_dir / "dem.tif", "--azimuths", "180", "--step-hours",
              "12", "--json"]
    code, out, err = run_cli([*common, "--far-field", demo_dir / "far_field.tif"], capsys)
    assert code == 0, err
    with_far = json.loads(out)
    # the same horizon as the map's, but ray-marched at the site's exact position
    assert abs(with_far["sun_lit_fraction"] - float(best["sun_lit_fraction"])) < 0.01
    assert abs(with_far["earth_visible_fraction"] - float(best["earth_visible_fraction"])) < 0.01
    code, out, err = run_cli(common, capsys)
    assert code == 0, err
    # without it, the terrain beyond the DEM is a bare sphere at the site's own height
    assert json.loads(out)["horizon_deg"] != with_far["horizon_deg"]


def test_site_json(small_dem, capsys):
    code, out, err = run_cli(["site", "-89.9", "45", "--dem", small_dem, "--json", "--step-hours", "24",
                              "--azimuths", "72"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    for key in ("lat", "lon", "x_m", "y_m", "height_m", "slope_deg", "azimuth_deg", "horizon_deg",
                "sun_lit_fraction", "sun_disc_fraction", "longest_night_h", "earth_visible_fraction",
                "longest_blackout_h", "observer_height_m", "start", "end", "step_hours"):
        assert key in summary, key
    assert len(summary["azimuth_deg"]) == len(summary["horizon_deg"]) == 72
    # "lit" is any part of the disc up, so the visible share of the disc is at most the lit share
    assert 0.0 <= summary["sun_disc_fraction"] <= summary["sun_lit_fraction"] <= 1.0
    # how far the search runs on the DEM: to its nearer edge along x or y (it is 25.6 km wide, centred on the pole)
    assert summary["terrain_reach_km"] == pytest.approx(12.8 - abs(summary["x_m"]) / 1e3, abs=1e-6)
    assert "the DEM reaches only 10.6 km beyond the point" in err  # 10.66 km, rounded down
    span_h = (np.datetime64(summary["end"]) - np.datetime64(summary["start"])) / np.timedelta64(1, "h")
    assert 0.0 <= summary["longest_night_h"] <= span_h and 0.0 <= summary["longest_blackout_h"] <= span_h


def test_site_reports_longitudes_in_plus_minus_180_and_grid_bearings_at_the_pole(small_dem, capsys):
    common = ["--dem", small_dem, "--json", "--step-hours", "48", "--azimuths", "72"]
    code, out, err = run_cli(["site", "-89.9", "225", *common], capsys)
    assert code == 0, err
    east = json.loads(out)
    code, out, err = run_cli(["site", "-89.9", "-135", *common], capsys)
    assert code == 0, err
    assert east["lon"] == -135.0 and json.loads(out) == east
    code, out, err = run_cli(["site", "-90", "123", *common], capsys)
    assert code == 0, err
    pole = json.loads(out)
    assert pole["lon"] == 0.0 and pole["azimuth_reference"].startswith("grid north")
    assert pole["azimuth_deg"][:2] == [0.0, 5.0]  # grid bearings, not bearings turned by 123 deg


def test_site_gives_a_mesa_at_its_local_azimuth_off_the_pole(tmp_path, capsys):
    """At 89.5 S 100 E local north is grid bearing 100: a 500 m mesa 3 km away at grid bearing 30 lies
    at local azimuth 290, where the horizon mask must show it (a longitude sign error puts it at 130)."""
    from sitesel.terrain import Grid, Terrain, latlon_to_xy

    x, y = latlon_to_xy(-89.5, 100.0)
    grid = Grid.centred((161, 161), 100.0, float(x), float(y))
    gx, gy = grid.xy()
    bearing = np.radians(30.0)
    mesa = np.hypot(gx - (x + 3000.0 * np.sin(bearing)), gy - (y + 3000.0 * np.cos(bearing))) < 800.0
    path = tmp_path / "mesa.tif"
    write_terrain(path, Terrain(np.where(mesa, 500.0, 0.0).astype(np.float32), grid))
    code, out, err = run_cli(["site", "-89.5", "100", "--dem", path, "--json", "--step-hours", "240",
                              "--azimuths", "360"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    azimuth = np.radians(summary["azimuth_deg"])
    high = np.array(summary["horizon_deg"]) > 2.0  # the mesa rises ~9 deg; bare ground stays below 0
    assert 20 < high.sum() < 40  # it spans about 2 asin(0.8 / 3) = 31 deg
    centre = np.degrees(np.arctan2(np.sin(azimuth[high]).mean(), np.cos(azimuth[high]).mean())) % 360.0
    assert centre == pytest.approx(290.0, abs=1.0)


def test_site_plot(small_dem, tmp_path, capsys):
    png = tmp_path / "mask.png"
    code, _, err = run_cli(["site", "-89.8", "100", "--dem", small_dem, "--step-hours", "24", "--azimuths", "72",
                            "--plot", png], capsys)
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--plot", "{file}/mask.png"], ["output directory", "is a file, not a directory; choose another --plot path"]),
        (["--plot", "{tmp}/mask.pdf"], ["must name a .png file"]),
        (["--plot", "{tmp}/new/mask.png", "--azimuths", "7201"], []),  # click's own range error, exit 2
    ],
)
def test_site_plot_path_is_checked_before_any_work(small_dem, tmp_path, capsys, args, fragments):
    (tmp_path / "afile").write_text("")
    args = [a.format(file=tmp_path / "afile", tmp=tmp_path) for a in args]
    code, _, err = run_cli(["site", "-89.8", "100", "--dem", small_dem, *args], capsys)
    if fragments:
        assert_one_line_error(code, err, *fragments)
    assert code == 2 and "Traceback" not in err
    assert not list(tmp_path.rglob("*.png"))


def test_site_rejects_a_point_off_the_moon(small_dem, capsys):
    code, _, err = run_cli(["site", "-89.5", "400", "--dem", small_dem], capsys)
    assert_one_line_error(code, err, "LAT -89.5 LON 400 is not a point on the Moon")


def test_point_outside_dem(small_dem, capsys):
    code, _, err = run_cli(["site", "-80", "0", "--dem", small_dem], capsys)
    assert_one_line_error(code, err, "point -80.0 0.0", "is outside")


def test_reversed_dates(small_dem, capsys):
    code, _, err = run_cli(["site", "-89.9", "0", "--dem", small_dem, "--start", "2028-01-01",
                            "--end", "2027-01-01"], capsys)
    assert_one_line_error(code, err)


def test_dates_outside_ephemeris(small_dem, capsys):
    code, _, err = run_cli(["site", "-89.9", "0", "--dem", small_dem, "--start", "2060-01-01"], capsys)
    assert_one_line_error(code, err, "2050")


def test_a_failed_run_leaves_no_output_directory_behind(small_dem, tmp_path, capsys):
    cfg = tmp_path / "late.toml"
    cfg.write_text(f'[dem]\npath = "{small_dem}"\n[time]\nstart = "2049-06-01"\nend = "2051-06-01"\n')
    code, _, err = run_cli(["run", cfg, "--out", tmp_path / "out", "--quiet"], capsys)
    assert_one_line_error(code, err, "2050")
    code, _, err = run_cli(["demo", "--out", tmp_path / "demo", "--years", "40", *SMALL_DEMO], capsys)
    assert_one_line_error(code, err, "2050")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.toml"]


def test_a_run_stopped_inside_keeps_only_its_finished_tiles(small_dem, tmp_path, capsys, monkeypatch):
    from sitesel import pipeline
    from sitesel.errors import SiteselError

    def stop_after(n_tiles):
        def compute(terrain, config, *, tile_dir, **kwargs):
            (tile_dir / "key").mkdir(parents=True)
            for i in range(n_tiles):
                (tile_dir / "key" / f"tile{i}.npz").write_bytes(b"done")
            raise SiteselError("stopped")
        return compute

    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[dem]\npath = "{small_dem}"\n')
    monkeypatch.setattr(pipeline, "compute", stop_after(0))
    code, _, err = run_cli(["run", cfg, "--out", tmp_path / "out", "--quiet"], capsys)
    assert_one_line_error(code, err, "stopped")
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(pipeline, "compute", stop_after(1))
    code, _, err = run_cli(["run", cfg, "--out", tmp_path / "out", "--quiet"], capsys)
    assert_one_line_error(code, err, "stopped")
    assert [p.name for p in (tmp_path / "out").rglob("*") if p.is_file()] == ["tile0.npz"]
    # a directory that was there before is left alone, even empty
    (tmp_path / "mine").mkdir()
    monkeypatch.setattr(pipeline, "compute", stop_after(0))
    run_cli(["run", cfg, "--out", tmp_path / "mine", "--quiet"], capsys)
    assert (tmp_path / "mine").is_dir()


def test_wrong_crs(tmp_path, capsys):
    path = tmp_path / "earth.tif"
    with rasterio.open(path, "w", driver="GTiff", height=8, width=8, count=1, dtype="float32",
                       crs=CRS.from_epsg(4326), transform=Affine(1.0, 0.0, 0.0, 0.0, -1.0, 10.0)) as ds:
        ds.write(np.zeros((1, 8, 8), dtype=np.float32))
    code, _, err = run_cli(["info", path], capsys)
    assert_one_line_error(code, err)
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[dem]\npath = "{path}"\n')
    code, _, err = run_cli(["run", cfg, "--out", tmp_path / "out", "--quiet"], capsys)
    assert_one_line_error(code, err)
    assert not (tmp_path / "out" / "layers").exists()


def test_config_unknown_key_and_wrong_type(small_dem, tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'[dem]\npath = "{small_dem}"\n[horizon]\nazimuth = 90\n')
    code, _, err = run_cli(["run", cfg, "--quiet"], capsys)
    assert_one_line_error(code, err, "horizon.azimuth")
    cfg.write_text(f'[dem]\npath = "{small_dem}"\n[time]\nstep_hours = "hourly"\n')
    code, _, err = run_cli(["run", cfg, "--quiet"], capsys)
    assert_one_line_error(code, err, "time.step_hours")


def test_unwritable_output_dir(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    code, _, err = run_cli(["demo", "--out", blocker / "out", *SMALL_DEMO], capsys)
    assert_one_line_error(code, err)


def test_run_with_region_and_nan_holes(tmp_path, capsys):
    terrain = synthetic_south_pole(size=64, resolution_m=400.0, seed=5)
    terrain.height_m[20:26, 30:38] = np.nan
    dem = tmp_path / "holes.tif"
    write_terrain(dem, terrain)
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        f'[dem]\npath = "{dem.name}"\n[region]\ncentre_lat_deg = -90.0\ncentre_lon_deg = 0.0\nradius_km = 10\n'
        '[time]\nstep_hours = 24\n[horizon]\nazimuths = 36\n'
    )
    out = tmp_path / "out"
    code, _, err = run_cli(["run", cfg, "--out", out, "--quiet"], capsys)
    assert code == 0, err
    with rasterio.open(out / "layers" / "sun_lit_fraction.tif") as ds:
        lit = ds.read(1)
    with rasterio.open(out / "layers" / "feasible.tif") as ds:
        feasible = ds.read(1)
    with rasterio.open(out / "layers" / "slope_deg.tif") as ds:
        slope = ds.read(1)
    holes = ~np.isfinite(slope)
    assert holes.any()
    with rasterio.open(out / "layers" / "psr.tif") as ds:
        assert ds.nodata == 255
        psr = ds.read(1)
    no_height = psr == 255  # the DEM's own holes; slope is NaN around them too (its footprint reaches them)
    assert no_height.any() and np.all(holes[no_height])
    assert set(np.unique(psr[~no_height])) <= {0, 1}
    # Holes are nodata (255 in the 0/1 layers) and never feasible; pixels away from the holes keep finite values.
    np.testing.assert_array_equal(feasible == 255, no_height)
    assert np.all(feasible[~np.isfinite(lit) & ~no_height] == 0)
    assert np.isfinite(lit).mean() > 0.8
    # the run says how much of the area has no height, in one warning line
    warning = [line for line in err.splitlines() if "has no height" in line]
    assert len(warning) == 1 and warning[0].startswith("sitesel: warning: ")
    assert f"{100 * no_height.mean():.2f}% of the area to analyse has no height" in warning[0]
    # and the report and manifest keep what it said
    report = (out / "report.md").read_text()
    assert "## Warnings" in report and f"- {warning[0].removeprefix('sitesel: warning: ')}" in report
    assert json.loads((out / "manifest.json").read_text())["run"]["warnings"] == [
        line.removeprefix("sitesel: warning: ") for line in err.splitlines()]


def test_a_region_run_searches_the_rest_of_the_dem(tmp_path, capsys):
    # the halo is only the near field: the DEM beyond it, coarser, is the far field, so the region's
    # layers are the whole-DEM run's (before, horizons ended at the halo: sun-lit fractions 0.05 off on
    # average, up to 0.29)
    write_terrain(tmp_path / "wide.tif", synthetic_south_pole(size=160, resolution_m=400.0, seed=3))
    base = ('[dem]\npath = "wide.tif"\n[time]\nstart = "2027-01-01"\nend = "2027-03-01"\nstep_hours = 12.0\n'
            '[horizon]\nazimuths = 36\n')
    (tmp_path / "whole.toml").write_text(base)
    (tmp_path / "region.toml").write_text(
        base + "[region]\ncentre_lat_deg = -89.9\ncentre_lon_deg = 0.0\nradius_km = 3\n")
    errors = {}
    for name in ("whole", "region"):
        code, _, errors[name] = run_cli(["run", tmp_path / f"{name}.toml", "--out", tmp_path / name, "--quiet"], capsys)
        assert code == 0, errors[name]
    with rasterio.open(tmp_path / "region" / "layers" / "sun_lit_fraction.tif") as ds:
        region = ds.read(1)
        corner = ds.xy(0, 0)
    with rasterio.open(tmp_path / "whole" / "layers" / "sun_lit_fraction.tif") as ds:
        row, col = ds.index(*corner)
        whole = ds.read(1)[row:row + region.shape[0], col:col + region.shape[1]]
    assert region.shape == (16, 16)
    assert np.abs(region - whole).mean() < 0.002 and np.abs(region - whole).max() < 0.03
    # both say in one line how far their search runs on supplied terrain (the DEM is 64 km wide)
    assert errors["whole"].strip() == (
        "sitesel: warning: the DEM reaches only 0.0 km beyond the analysed area on its nearest side, less than "
        "the 150 km horizon search: terrain farther out is taken to continue at each observer's own ground height, "
        "so horizons toward the edge miss distant massifs; add a wider, coarser product as [dem] far_field "
        "(site: --far-field), e.g. LDEM_80S_80M")
    assert errors["region"].strip().startswith("sitesel: warning: the DEM and its far field reach only 25.6 km beyond")
    # and the report names the sites whose search ends early, from terrain_reach_km in sites.csv
    report = (tmp_path / "region" / "report.md").read_text()
    sites = json.loads((tmp_path / "region" / "sites.geojson").read_text())["features"]
    reach = sites[0]["properties"]["terrain_reach_km"]
    assert 25.6 <= reach < 32.0 and f"horizon search to sites 1 ({reach:.1f} km)" in report

def test_run_on_an_area_without_any_height_is_refused(tmp_path, capsys):
    terrain = synthetic_south_pole(size=64, resolution_m=400.0, seed=5)
    terrain.height_m[:] = np.nan
    write_terrain(tmp_path / "empty.tif", terrain)
    cfg = tmp_path / "run.toml"
    cfg.write_text('[dem]\npath = "empty.tif"\n[time]\nstep_hours = 24\n[horizon]\nazimuths = 36\n')
    code, _, err = run_cli(["run", cfg, "--out", tmp_path / "out", "--quiet"], capsys)
    assert_one_line_error(code, err, "no heights (all nodata)")


def test_huge_dem_without_region_is_refused(small_dem, tmp_path, capsys, monkeypatch):
    import sitesel.cli

    monkeypatch.setattr(sitesel.cli, "MAX_WHOLE_DEM_PX", 32 * 32)
    cfg = tmp_path / "whole.toml"
    cfg.write_text(f'[dem]\npath = "{small_dem}"\n')
    code, _, err = run_cli(["run", cfg, "--out", tmp_path / "out", "--quiet"], capsys)
    assert_one_line_error(code, err, "64 x 64 px", "[region]")
    assert not (tmp_path / "out").exists()


def test_run_with_two_heights_and_years(small_dem, tmp_path, capsys):
    cfg = tmp_path / "heights.toml"
    cfg.write_text(f'[dem]\npath = "{small_dem}"\n[observer]\nheight_m = [0.0, 10.0]\n'
                   '[time]\nstep_hours = 48\n[horizon]\nazimuths = 36\n')
    out = tmp_path / "out"
    code, _, err = run_cli(["run", cfg, "--out", out, "--years", "2", "--quiet"], capsys)
    assert code == 0, err
    for height in ("h0m", "h10m"):
        for name in ("sun_lit_fraction", "longest_night_h", "psr", "psr_distance_m"):
            assert (out / "layers" / height / f"{name}.tif").is_file()
    assert (out / "layers" / "h0m" / "sun_lit_fraction.tif").read_bytes() != (
        out / "layers" / "h10m" / "sun_lit_fraction.tif").read_bytes()
    report = (out / "report.md").read_text()
    assert "Observer heights compared" in report
    manifest = json.loads((out / "manifest.json").read_text())
    # 2 Julian years of 365.25 days end at 2028-12-31T12:00, within the 366th 48 h step: the span covered runs to
    # that step's end
    assert manifest["run"]["period"]["end"] == "2029-01-02T00:00:00" and manifest["run"]["period"]["steps"] == 366


def test_run_without_any_site_says_which_constraint_binds(small_dem, tmp_path, capsys):
    cfg = tmp_path / "strict.toml"
    cfg.write_text(f'[dem]\npath = "{small_dem}"\n[time]\nstep_hours = 48\n[horizon]\nazimuths = 36\n'
                   '[profile]\nname = "strict"\n[profile.constraints]\nmin_sun_lit_fraction = 0.999\n'
                   'max_slope_deg = 2.0\n[profile.weights]\nslope_deg = 1.0\n')
    out = tmp_path / "out"
    code, stdout, err = run_cli(["run", cfg, "--out", out], capsys)
    assert code == 0, err
    assert "No site met every hard constraint: pixels in the profile region meeting each hard constraint: " in stdout
    assert "min_sun_lit_fraction" in stdout and "max_slope_deg" in stdout
    report = (out / "report.md").read_text()
    assert "No site met every hard constraint of the profile." in report
    assert "Pixels in the profile region meeting each hard constraint" in report


def test_a_demo_rerun_stopped_while_writing_leaves_the_earlier_dem(tmp_path, capsys, monkeypatch):
    import sitesel.outputs

    out = tmp_path / "demo"
    code, _, err = run_cli(["demo", "--out", out, *SMALL_DEMO], capsys)
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in (out / "dem.tif", out / "far_field.tif", out / "sites.csv")}

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sitesel.outputs, "write_sites_csv", stopped)  # after the DEMs and layers are staged
    code, _, err = run_cli(["demo", "--out", out, *SMALL_DEMO[:-1], "--seed", "5", "--quiet"], capsys)
    assert code == 130 and err.strip() == "sitesel: interrupted"
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not list(out.glob(".sitesel-staging*"))


def test_a_demo_stopped_in_a_new_folder_leaves_nothing(tmp_path, capsys, monkeypatch):
    import sitesel.pipeline

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sitesel.pipeline, "compute", stopped)
    out = tmp_path / "demo"
    code, _, err = run_cli(["demo", "--out", out, *SMALL_DEMO], capsys)
    assert code == 130 and err.strip() == "sitesel: interrupted"
    assert not out.exists()  # neither dem.tif nor far_field.tif stays behind


@pytest.mark.parametrize("args, fragment", [
    (["site", "-89.5", "0", "--dem", "x.tif", "--height-m", "nan"],
     "Invalid value for '--height-m': 'nan' is not a finite number"),
    (["site", "nan", "0", "--dem", "x.tif"], "Invalid value for 'LAT': 'nan' is not a finite number"),
    (["demo", "--resolution-m", "nan"], "Invalid value for '--resolution-m'"),
    (["run", "x.toml", "--years", "nan"], "Invalid value for '--years'"),
    (["synth", "x.tif", "--resolution-m", "inf"], "Invalid value for '--resolution-m'"),
    (["synth", "x.tif", "--seed", "-1"], "Invalid value for '--seed': -1 is not in the range x>=0"),
    (["demo", "--seed", "-1"], "Invalid value for '--seed'"),
    (["demo", "--bogus"], "No such option '--bogus'"),
    (["run", "x.toml", "--out", ""], "Invalid value for '--out': is empty; give a folder"),
    (["site", "abc", "0", "--dem", "x.tif"], "Invalid value for 'LAT': 'abc' is not a valid float."),
])
def test_bad_options_are_one_line_errors(args, fragment, capsys):
    # nan passes every bound (it compares false), so it is refused by name; click's usage errors are one line too
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, fragment, f"(see 'sitesel {args[0]} --help')")


def test_a_baseline_wider_than_the_terrain_is_refused(small_dem, tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[dem]\npath = "{small_dem}"\n[surface]\nbaseline_m = 1e9\n[time]\nstep_hours = 48\n')
    code, _, err = run_cli(["run", cfg, "--out", tmp_path / "out"], capsys)
    assert_one_line_error(code, err, "surface.baseline_m = 1e+09 m spans", "more than the 64 x 64 px of terrain read")
    assert not (tmp_path / "out").exists()


def test_a_folder_a_non_utf8_config_and_a_bad_scheduler_address_are_one_line_errors(small_dem, tmp_path, capsys):
    code, _, err = run_cli(["info", tmp_path], capsys)
    assert_one_line_error(code, err, f"{tmp_path} is a folder, not a DEM file")
    cfg = tmp_path / "latin1.toml"
    cfg.write_bytes(b"\xff\xfe[dem]\n")
    code, _, err = run_cli(["run", cfg], capsys)
    assert_one_line_error(code, err, "is not UTF-8 text")
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[dem]\npath = "{small_dem}"\n[time]\nstep_hours = 48\n')
    code, _, err = run_cli(["run", cfg, "--out", tmp_path / "out", "--scheduler", "garbage"], capsys)
    assert_one_line_error(code, err, "cannot reach the Dask scheduler at garbage", "tcp://host:port")


def test_a_profile_file_is_recorded_with_its_checksum_and_values(small_dem, tmp_path, capsys):
    from importlib import resources

    text = (resources.files("sitesel") / "profiles" / "default.toml").read_text().replace(
        "max_slope_deg = 10.0", "max_slope_deg = 12.5")
    prof = tmp_path / "mine.toml"
    prof.write_text(text)
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[dem]\npath = "{small_dem}"\n[time]\nstep_hours = 48\n[horizon]\nazimuths = 36\n')
    out = tmp_path / "out"
    code, _, err = run_cli(["run", cfg, "--out", out, "--quiet", "--profile", prof], capsys)
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    recorded = manifest["run"]["profile"]
    # an edited copy keeps the preset's name, so its file, checksum and values are what identify it
    assert recorded["name"] == "default" and recorded["source"] == str(prof)
    assert recorded["source_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert recorded["constraints"]["max_slope_deg"] == 12.5 and recorded["landing"]["percentile"] == 5.0
    assert all(Path(entry["path"]).is_absolute() for entry in manifest["inputs"])
    assert f"source: {prof}" in (out / "report.md").read_text()


def test_a_stopped_dask_run_closes_its_client_and_quiets_its_workers(small_dem, tmp_path, capsys, monkeypatch):
    import logging

    import sitesel.cli
    import sitesel.pipeline

    closed = []

    class FakeClient:
        def close(self):
            closed.append(True)

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sitesel.cli, "_dask_client", lambda workers, scheduler: FakeClient())
    monkeypatch.setattr(sitesel.pipeline, "compute", stopped)
    logger = logging.getLogger("distributed")
    monkeypatch.setattr(logger, "level", logging.WARNING)
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[dem]\npath = "{small_dem}"\n[time]\nstep_hours = 48\n')
    code, _, err = run_cli(["run", cfg, "--out", tmp_path / "out", "--workers", "2"], capsys)
    assert code == 130 and err.strip().endswith("sitesel: interrupted")
    assert closed == [True] and logger.level == logging.ERROR


def test_gaps_never_exceed_the_span_the_output_states(small_dem, capsys):
    # 25 h at 24 h steps: two steps, so the span covered runs to the second step's end, and the output says so
    code, out, err = run_cli(["site", "-89.9", "10", "--dem", small_dem, "--json", "--azimuths", "36", "--start",
                              "2027-01-01", "--end", "2027-01-02T01:00", "--step-hours", "24"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    span_h = (np.datetime64(summary["end"]) - np.datetime64(summary["start"])) / np.timedelta64(1, "h")
    assert span_h == 48.0 and summary["longest_blackout_h"] <= span_h and summary["longest_night_h"] <= span_h


def test_plain_sitesel_prints_its_help(capsys):
    code, out, err = run_cli([], capsys)
    assert code in (0, 2) and "Usage: sitesel [OPTIONS] COMMAND" in out + err and "sitesel: error" not in err


def test_only_sitesels_own_warnings_reach_the_report(small_dem, tmp_path, capsys, monkeypatch):
    import warnings

    import sitesel.pipeline

    compute = sitesel.pipeline.compute

    def noisy(*args, **kwargs):
        # as Dask warns about a large graph on --workers runs: how the run executed, not what it found
        warnings.warn("Sending large graph of size 11.03 MiB.\nThis may cause some slowdown.", UserWarning)
        return compute(*args, **kwargs)

    monkeypatch.setattr(sitesel.pipeline, "compute", noisy)
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[dem]\npath = "{small_dem}"\n[time]\nstep_hours = 48\n[horizon]\nazimuths = 36\n')
    code, _, err = run_cli(["run", cfg, "--out", tmp_path / "out", "--quiet"], capsys)
    assert code == 0, err
    assert "Sending large graph" in err  # printed
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Sending large graph" not in report and "the DEM reaches only 0.0 km" in report  # sitesel's own kept


def test_site_a_hair_from_the_pole_is_the_pole(small_dem, capsys):
    common = ["--dem", small_dem, "--json", "--step-hours", "48", "--azimuths", "72"]
    code, out, err = run_cli(["site", "-89.99999999999", "123", *common], capsys)
    assert code == 0, err
    near = json.loads(out)
    assert near["lon"] == 0.0 and near["azimuth_deg"][:2] == [0.0, 5.0]
    assert near["azimuth_reference"].startswith("grid north")


def test_a_folder_with_files_sitesel_did_not_write_is_refused_as_out(small_dem, tmp_path, capsys):
    project = tmp_path / "project"
    (project / "plots").mkdir(parents=True)
    (project / "plots" / "mine.png").write_bytes(b"mine")
    (project / "notes.md").write_text("notes")
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[dem]\npath = "{small_dem}"\n[time]\nstep_hours = 48.0\n')
    for command in (["run", cfg], ["demo", *SMALL_DEMO]):
        code, _, err = run_cli([*command, "--out", project, "--quiet"], capsys)
        assert_one_line_error(code, err, f"output directory '{project}' holds files sitesel did not write",
                              "'notes.md', 'plots'", "give a new or empty folder with --out")
    assert sorted(p.relative_to(project).as_posix() for p in project.rglob("*")) == ["notes.md", "plots",
                                                                                    "plots/mine.png"]
    # an interrupted run's checkpoints alone, or an earlier run's outputs, are sitesel's own
    ours = tmp_path / "ours"
    (ours / ".tiles").mkdir(parents=True)
    code, _, err = run_cli(["run", cfg, "--out", ours, "--quiet"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["run", cfg, "--out", ours, "--quiet"], capsys)
    assert code == 0, err


def test_site_on_a_hole_says_only_that_and_quiet_silences_the_ephemeris_bar(tmp_path, capsys, monkeypatch):
    from sitesel.terrain import Grid, Terrain, latlon_to_xy

    monkeypatch.setenv("SITESEL_CACHE_DIR", str(tmp_path / "cache"))  # the track is computed, with its bar
    heights = np.zeros((40, 40), np.float32)
    heights[18:23, 18:23] = np.nan
    path = tmp_path / "hole.tif"
    write_terrain(path, Terrain(heights, Grid.centred((40, 40), 100.0, *latlon_to_xy(-89.5, -90.0))))
    code, _, err = run_cli(["site", "-89.5", "-90", "--dem", path], capsys)
    assert_one_line_error(code, err, "the DEM has no data at -89.5 -90.0")  # no reach warning first
    common = ["site", "-89.52", "-90", "--dem", path, "--step-hours", "24", "--json"]
    code, out, err = run_cli([*common, "--quiet"], capsys)
    assert code == 0 and "ephemeris" not in err and "reaches only" in err
    json.loads(out)
    monkeypatch.setenv("SITESEL_CACHE_DIR", str(tmp_path / "cache2"))
    code, _, err = run_cli(common, capsys)
    assert code == 0 and "ephemeris" in err


def test_synth_wants_a_tif_file_name(tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    code, _, err = run_cli(["synth", tmp_path / "sub", "--size", "16"], capsys)
    assert_one_line_error(code, err, "must name a .tif file")
    code, out, err = run_cli(["synth", tmp_path / "x.tif", "--size", "16"], capsys)
    assert code == 0, err
    assert out.strip() == str(tmp_path / "x.tif") and "synthetic terrain" in err  # the progress bar
    assert read_terrain(tmp_path / "x.tif").shape == (16, 16)
    code, out, err = run_cli(["synth", tmp_path / "y.tif", "--size", "16", "--quiet"], capsys)
    assert code == 0 and err == "" and out.strip() == str(tmp_path / "y.tif")
    (tmp_path / "dir.tif").mkdir()
    code, _, err = run_cli(["synth", tmp_path / "dir.tif", "--size", "16"], capsys)
    assert_one_line_error(code, err, "is a folder; give a file name")
    code, _, err = run_cli(["synth", tmp_path / "x.png", "--size", "16"], capsys)
    assert_one_line_error(code, err, "x.png must name a .tif file")


def test_the_first_run_says_it_is_compiling(tmp_path, capsys, monkeypatch):
    from sitesel import _numba_cache

    monkeypatch.setattr(_numba_cache, "is_cold", lambda: True)
    args = ["demo", "--out", tmp_path / "d", "--size", "64", "--resolution-m", "400", "--step-hours", "48"]
    code, _, err = run_cli(args, capsys)
    assert code == 0 and "first run of this installation: compiling the numeric kernels" in err
    code, _, err = run_cli([*args, "--quiet"], capsys)
    assert code == 0 and "compiling" not in err


def test_fetch_list_shows_the_catalogue_or_one_product(capsys):
    code, out, err = run_cli(["fetch", "--list"], capsys)
    assert code == 0 and "LDEM_85S_10M" in out and "LDEM_80S_20M" in out
    code, out, err = run_cli(["fetch", "--list", "ldem_85s_10m"], capsys)
    assert code == 0 and "LDEM_85S_10M" in out and "LDEM_80S_20M" not in out
    code, _, err = run_cli(["fetch", "--list", "nope"], capsys)
    assert_one_line_error(code, err, "unknown product 'nope'")


def test_site_plot_folders_it_made_go_when_the_point_fails(small_dem, tmp_path, capsys):
    code, _, err = run_cli(["site", "-80", "0", "--dem", small_dem, "--plot", tmp_path / "new" / "sub" / "m.png"],
                           capsys)
    assert_one_line_error(code, err, "is outside")
    assert not (tmp_path / "new").exists()
    code, _, err = run_cli(["site", "-89.8", "100", "--dem", small_dem, "--step-hours", "48", "--azimuths", "36",
                            "--plot", tmp_path / "new" / "sub" / "m.png"], capsys)
    assert code == 0, err
    assert (tmp_path / "new" / "sub" / "m.png").is_file()


def test_site_years_counts_from_start_as_run_does(small_dem, capsys):
    # 2.5 Julian years are 7305 steps of 3 h: the reported end (that of the steps covered) is the span's
    common = ["site", "-89.9", "45", "--dem", small_dem, "--json", "--step-hours", "3", "--azimuths", "16",
              "--start", "2030-01-01", "--quiet"]
    code, out, err = run_cli([*common, "--years", "2.5"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    # Julian years, as [time] years = 2.5 in a run's config
    assert summary["end"] == str(np.datetime64("2030-01-01T00:00:00") + np.timedelta64(int(2.5 * 365.25 * 24), "h"))
    code, _, err = run_cli([*common, "--years", "2", "--end", "2031-01-01"], capsys)
    assert_one_line_error(code, err, "--end 2031-01-01 or --years 2, not both")


@pytest.mark.parametrize("args, fragments", [
    (["--yeras", "3"], ["No such option '--yeras'", "Did you mean '--years'?"]),
    (["--bogus"], ["No such option '--bogus'"]),
    (["--json=yes"], []),  # a flag given a value: click's own error
])
def test_site_names_an_unknown_option_not_a_bad_latitude(small_dem, capsys, args, fragments):
    """LAT and LON may be negative, so the command ignores unknown options; a misspelt one must
    still be named as such, not read as the latitude."""
    code, _, err = run_cli(["site", "--dem", small_dem, *args, "-89.9", "45"], capsys)
    assert_one_line_error(code, err, *fragments)
    assert "LAT" not in err


def test_site_option_values_that_look_like_options_are_values(small_dem, capsys):
    code, out, err = run_cli(["site", "-89.9", "-135", "--dem", small_dem, "--height-m", "10", "--step-hours", "240",
                              "--azimuths", "16", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["observer_height_m"] == 10.0
