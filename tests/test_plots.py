"""Heatmaps and horizon-mask figures: valid, deterministic PNGs with a correct graticule."""

import datetime as dt
import math

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from sitesel import plots
from sitesel.terrain.grid import Grid, latlon_to_xy


def _scene(shape=(160, 200), resolution_m=500.0, centre=(0.0, 0.0)):
    grid = Grid.centred(shape, resolution_m, *centre)
    x, y = grid.xy()
    height_m = 1500.0 * np.sin(x / 9e3) * np.cos(y / 13e3)
    layer = (0.5 + 0.5 * np.sin(x / 30e3 + y / 50e3)).astype(np.float32)
    layer[:20, :30] = np.nan
    return grid, height_m, layer


def _sites():
    sites = []
    for rank, (lat, lon) in enumerate([(-89.5, 30.0), (-89.3, -100.0)], start=1):
        x, y = latlon_to_xy(lat, lon)
        sites.append({"rank": rank, "lat": lat, "lon": lon, "x_m": float(x), "y_m": float(y), "score": 0.9,
                      "ellipse_semi_major_m": 4000.0, "ellipse_semi_minor_m": 2000.0, "ellipse_azimuth_deg": 30.0})
    return sites


def _png_size(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_heatmap_png_is_sane_and_byte_identical(tmp_path):
    import matplotlib.pyplot as plt

    figures_before = plt.get_fignums()
    grid, height_m, layer = _scene()
    kwargs = dict(title="Sunlit fraction", units="1", sites=_sites(), hillshade=height_m)
    a = plots.heatmap(tmp_path / "a.png", layer, grid, **kwargs)
    b = plots.heatmap(tmp_path / "b.png", layer, grid, **kwargs)
    assert a.read_bytes() == b.read_bytes()
    width, height = _png_size(a)
    assert 800 <= width <= 1600 and 500 <= height <= 1400
    assert 20_000 < a.stat().st_size < 3_000_000
    assert b"matplotlib" not in a.read_bytes()  # no Software metadata
    assert plt.get_fignums() == figures_before  # no pyplot state touched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


def test_heatmap_values_beyond_vmax_take_its_colour(tmp_path):
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    view = np.array([[0.0, 360.0, 720.0, 163_000.0]])
    rgb = plots._shaded_rgb(view, Normalize(0.0, 720.0), colormaps["magma_r"], np.ones_like(view))
    assert (rgb[0, 3] == rgb[0, 2]).all() and not (rgb[0, 1] == rgb[0, 2]).all()
    grid, height_m, layer = _scene()
    capped = plots.heatmap(tmp_path / "c.png", layer * 1000.0, grid, title="Night", units="h", vmax=100.0)
    logged = plots.heatmap(tmp_path / "d.png", layer * 1000.0, grid, title="Night", units="h", log=True)
    assert capped.read_bytes() != logged.read_bytes()


def test_heatmap_off_pole_without_hillshade_and_all_nan(tmp_path):
    x, y = latlon_to_xy(-81.0, 25.0)
    grid, _, layer = _scene((120, 120), 1500.0, (float(x), float(y)))
    path = plots.heatmap(tmp_path / "night.png", layer * 300.0, grid, title="Longest night", units="h",
                         cmap="magma_r")
    assert _png_size(path)[0] > 800
    empty = plots.heatmap(tmp_path / "empty.png", np.full(grid.shape, np.nan, np.float32), grid, title="Score",
                          units="1")
    assert _png_size(empty)[0] > 800


def _graticule_candidates(grid):
    fig = Figure()
    FigureCanvasAgg(fig)
    return plots._graticule(fig.add_subplot(), grid)


def test_graticule_labels_are_geographically_right():
    grid = Grid.centred((200, 200), 500.0)  # +-50 km around the pole
    candidates = {text: (x, y) for x, y, text, *_ in _graticule_candidates(grid)}
    left, bottom, right, top = (v / 1e3 for v in grid.bounds_m)
    # meridian labels where they leave the frame: 0 deg toward +y, 90E toward +x, 180 toward -y, 90W toward -x
    assert candidates["0°"] == pytest.approx((0.0, top), abs=1e-6)
    assert candidates["90°E"] == pytest.approx((right, 0.0), abs=1e-6)
    assert candidates["180°"] == pytest.approx((0.0, bottom), abs=1e-6)
    assert candidates["90°W"] == pytest.approx((left, 0.0), abs=1e-6)
    assert candidates["30°E"] == pytest.approx((top * math.tan(math.radians(30.0)), top), abs=1e-6)
    # parallels every 0.25 deg over this 1.6 deg span; each label sits on its parallel
    for lat in (89.75, 89.5, 89.25, 89.0, 88.75):
        x, y = candidates[f"{lat:g}°S"]
        rho_expected = 2e-3 * 1737400.0 * math.tan(math.pi / 4 - math.radians(lat) / 2)
        assert math.hypot(x, y) == pytest.approx(rho_expected, rel=1e-9)


def test_graticule_off_pole_spacing():
    x, y = latlon_to_xy(-81.5, 25.0)
    grid = Grid.centred((120, 120), 2000.0, float(x), float(y))  # 240 km square: corners span about 11 deg of latitude
    texts = [text for *_, text, _, _, _ in _graticule_candidates(grid)]
    parallels = sorted(float(t[:-2]) for t in texts if t.endswith("S"))
    meridians = [t for t in texts if t.endswith("E") or t.endswith("W") or t == "0°"]
    assert np.allclose(np.diff(parallels), 1.0)  # whole degrees
    assert len(meridians) >= 2 and all(float(t.rstrip("°EW")) % 10 == 0 for t in meridians)


def test_labels_never_overlap_or_leave_the_axes():
    fig = Figure(figsize=(6, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10)
    fig.canvas.draw()
    marker = ax.text(8, 8, "1")
    occupied = [marker.get_window_extent(fig.canvas.get_renderer()).expanded(2.0, 2.0)]
    candidates = [
        (5.0, 5.0, "89.5°S", "center", "center", (0, 0)),
        (5.05, 5.02, "89°S", "center", "center", (0, 0)),  # on top of the first: dropped
        (8.0, 8.0, "30°E", "center", "center", (0, 0)),  # on the site marker: dropped
        (10.0, 5.0, "90°E", "center", "center", (0, 0)),  # half outside the frame: dropped
        (10.0, 5.0, "90°E", "right", "center", (-3, 0)),  # anchored inside the right edge: kept
        (2.0, 2.0, "88.5°S", "center", "center", (0, 0)),
    ]
    placed = plots._place_labels(fig, ax, candidates, occupied)
    assert [label.get_text() for label in placed] == ["89.5°S", "90°E", "88.5°S"]
    boxes = [label.get_window_extent(fig.canvas.get_renderer()) for label in placed]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert sum(isinstance(t, type(placed[0])) for t in ax.texts) == 3  # the dropped ones were removed


def test_hillshade_of_planes():
    # Light from grid bearing 315 deg at 45 deg altitude: l = (-0.5, 0.5, sqrt(0.5)).
    grid = Grid.centred((5, 6), 10.0)
    x, y = grid.xy()
    for slope, plane, expected in (
        (0.0, lambda s: 0 * x, math.sqrt(0.5)),
        (0.3, lambda s: s * x, (0.5 * 0.3 + math.sqrt(0.5)) / math.sqrt(1 + 0.09)),  # rises east: faces west
        (0.3, lambda s: s * y, (-0.5 * 0.3 + math.sqrt(0.5)) / math.sqrt(1 + 0.09)),  # rises north: faces south
    ):
        shade = plots.hillshade(plane(slope), grid.resolution_m)
        np.testing.assert_allclose(shade, expected, rtol=1e-12)
    # a map one pixel wide (a tiny region) has no gradient: it is shaded as flat ground
    np.testing.assert_allclose(plots.hillshade(np.array([[3.0, 5.0, np.nan]]), 10.0), [[math.sqrt(0.5)] * 2 + [np.nan]])


def _tracks(n_hours=24 * 60):
    times = np.datetime64("2027-01-01T00:00:00") + np.arange(n_hours).astype("timedelta64[h]")
    hours = np.arange(n_hours, dtype=np.float64)
    sun_az = hours / (29.53 * 24) * 360.0 % 360.0
    sun_el = 1.5 * np.sin(2 * np.pi * hours / (365.25 * 24)) + 0.3
    earth_az = 5.0 * np.sin(2 * np.pi * hours / (27.32 * 24)) % 360.0
    earth_el = 6.5 * np.sin(2 * np.pi * hours / (27.32 * 24))
    return times, sun_az, sun_el, earth_az, earth_el


def test_horizon_mask_png_is_sane_and_byte_identical(tmp_path):
    azimuth_deg = (np.arange(180) * 2.0 + 37.0) % 360.0  # unsorted, as from grid bearings
    horizon_deg = 1.5 * np.sin(np.radians(azimuth_deg) * 3) - 0.3
    times, sun_az, sun_el, earth_az, earth_el = _tracks()
    kwargs = dict(sun_az_deg=sun_az, sun_el_deg=sun_el, earth_az_deg=earth_az, earth_el_deg=earth_el,
                  times=times, title="Site 1: 89.450 S 222.690 E")
    a = plots.horizon_mask(tmp_path / "a.png", azimuth_deg, horizon_deg, **kwargs)
    b = plots.horizon_mask(tmp_path / "b.png", azimuth_deg, horizon_deg, **kwargs)
    assert a.read_bytes() == b.read_bytes()
    width, height = _png_size(a)
    assert 1000 <= width <= 1600 and 500 <= height <= 900
    # python datetimes give the same figure as datetime64
    c = plots.horizon_mask(tmp_path / "c.png", azimuth_deg, horizon_deg,
                           **{**kwargs, "times": [dt.datetime.fromisoformat(str(t)) for t in times]})
    assert c.read_bytes() == a.read_bytes()


def test_horizon_mask_without_bodies(tmp_path):
    azimuth_deg = np.arange(360.0)
    path = plots.horizon_mask(tmp_path / "h.png", azimuth_deg, np.full(360, -0.087), title="bare sphere, h = 2 m")
    assert _png_size(path)[0] > 1000


@pytest.mark.parametrize("log", [False, True])
def test_heatmap_of_a_constant_layer_has_a_scale_from_its_value(tmp_path, log):
    # e.g. a map on which no pixel has any night: nothing positive for a log scale
    grid, height_m, _ = _scene(shape=(40, 50))
    path = plots.heatmap(tmp_path / "zero.png", np.zeros(grid.shape, np.float32), grid, title="Longest night",
                         units="h", log=log, hillshade=height_m)
    assert _png_size(path)[0] > 500


def test_horizon_mask_puts_a_peak_at_its_azimuth(tmp_path, monkeypatch):
    # a single 5 deg peak due east: in the drawn image the terrain colour reaches up to it above 90 deg (E) and
    # not above 270 deg (W), so the azimuth axis runs left to right from north through east
    figures = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (figures.append(fig), save(fig, path))[1])
    azimuth_deg = np.arange(360.0)
    horizon_deg = np.where(np.abs(azimuth_deg - 90.0) <= 3.0, 5.0, -1.0)
    path = plots.horizon_mask(tmp_path / "peak.png", azimuth_deg, horizon_deg, title="peak due east")
    ax = figures[0].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()][2] == "90°\nE"
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)

    def colour(az, el):
        x, y = ax.transData.transform((az, el))
        return image[image.shape[0] - int(round(y)), int(round(x))]  # display y counts up from the bottom

    terrain = colour(200.0, (ax.get_ylim()[0] - 1.0) / 2.0)  # well inside the fill, below the -1 deg skyline
    assert np.abs(terrain - [0x8C, 0x7B, 0x6B]).max() < 60  # the brown fill, not the white sky
    assert np.abs(colour(92.0, 4.0) - terrain).max() < 12  # the peak, due east
    assert np.abs(colour(268.0, 4.0) - terrain).max() > 60  # sky due west
    assert ax.transData.transform((92.0, 0.0))[0] < ax.transData.transform((268.0, 0.0))[0]  # east left of west
