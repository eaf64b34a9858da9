"""Ephemeris: Sun and Earth in the Moon mean-Earth frame."""

import numpy as np
import pytest

from sitesel.ephemeris import Track, body_track, validate_time_range
from sitesel.errors import SiteselError

AU_M = 1.495978707e11


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SITESEL_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def two_years():
    return body_track("2026-01-01", "2028-01-01", 1.0, use_cache=False)


def _elevation_at_pole_deg(v):
    # Local up at the south pole is -z.
    return np.degrees(np.arcsin(-v[:, 2] / np.linalg.norm(v, axis=1)))


def test_track_shape_and_times(two_years):
    tr = two_years
    assert isinstance(tr, Track)
    assert tr.times_utc.dtype == np.dtype("datetime64[s]")
    assert len(tr) == (365 + 365) * 24
    assert tr.sun_m.shape == tr.earth_m.shape == (len(tr), 3)
    assert tr.sun_m.dtype == np.float64
    assert tr.start == "2026-01-01T00:00:00"
    assert tr.end == "2028-01-01T00:00:00"
    assert np.all(np.diff(tr.times_utc) == np.timedelta64(3600, "s"))


def test_sun_elevation_at_pole(two_years):
    el = _elevation_at_pole_deg(two_years.sun_m)
    assert np.abs(el).max() < 1.6
    assert el.max() > 1.4 and el.min() < -1.4


def test_earth_elevation_at_pole(two_years):
    el = _elevation_at_pole_deg(two_years.earth_m)
    assert np.abs(el).max() < 7.2
    assert el.max() > 6 and el.min() < -6
    assert 0.4 < np.mean(el > 0) < 0.6


def test_distances(two_years):
    d_sun = np.linalg.norm(two_years.sun_m, axis=1) / AU_M
    assert np.all(np.abs(d_sun - 1) < 0.02)
    d_earth = np.linalg.norm(two_years.earth_m, axis=1) / 1e6
    assert d_earth.min() > 356 and d_earth.max() < 407


def test_sub_earth_point_is_near_mean_earth_direction(two_years):
    # "Mean Earth" frame: +x points at the mean sub-Earth point, so the
    # sub-Earth latitude/longitude only librate by a few degrees around 0.
    e = two_years.earth_m
    lat = np.degrees(np.arcsin(e[:, 2] / np.linalg.norm(e, axis=1)))
    lon = np.degrees(np.arctan2(e[:, 1], e[:, 0]))
    assert np.abs(lat).max() < 8 and np.abs(lon).max() < 9
    assert abs(lat.mean()) < 1 and abs(lon.mean()) < 1
    # The Sun circles the Moon once per synodic month: its longitude covers all bearings.
    lon_sun = np.degrees(np.arctan2(two_years.sun_m[:, 1], two_years.sun_m[:, 0]))
    assert np.histogram(lon_sun, bins=36, range=(-180, 180))[0].min() > 0


def test_synodic_month_period(two_years):
    # Independent check of the rotation: the sub-solar longitude decreases by
    # 360 deg once per synodic month (29.53 d).
    s = two_years.sun_m
    lon = np.unwrap(np.arctan2(s[:, 1], s[:, 0]))
    days = len(s) / 24
    months = -(lon[-1] - lon[0]) / (2 * np.pi)
    assert abs(days / months - 29.53) < 0.05


def test_a_broken_cache_entry_is_recomputed(tmp_path):
    a = body_track("2027-03-01", "2027-03-03", 6.0)
    (entry,) = (tmp_path / "cache").glob("*.npz")
    for damage in (entry.read_bytes()[:100], b"", b"not a zip file at all"):
        entry.write_bytes(damage)
        np.testing.assert_array_equal(body_track("2027-03-01", "2027-03-03", 6.0).sun_m, a.sun_m)
        assert np.load(entry)["sun_m"].shape == (8, 3)  # and rewritten


def test_cache_roundtrip(tmp_path):
    a = body_track("2027-03-01", "2027-03-03", 6.0)
    files = list((tmp_path / "cache").glob("*.npz"))
    assert len(files) == 1
    b = body_track("2027-03-01", "2027-03-03", 6.0)
    np.testing.assert_array_equal(a.sun_m, b.sun_m)
    np.testing.assert_array_equal(a.times_utc, b.times_utc)
    assert b.step_hours == 6.0 and len(b) == 8


@pytest.mark.parametrize(
    "start, end, step, match",
    [
        ("2027-02-01", "2027-01-01", 1, "empty"),
        ("2027-01-01", "2027-01-01", 1, "empty"),
        ("1899-06-01", "1900-06-01", 1, "1900-01-01"),
        ("2050-06-01", "2051-01-01T00:00:01", 1, "covers 1900-2050 \\(a span may end at 2051-01-01\\)"),
        ("9999-06-01", "9999-07-01", 1, "start '9999-06-01' is past the Moon orientation kernel"),
        ("not a date", "2027-01-01", 1, "not an ISO UTC date"),
        ("20270101", "2028-01-01", 1, "'20270101' is not an ISO UTC date"),
        ("2027-01-01", "2027-02-01", 0, "positive"),
        ("2027-01-01", "2027-02-01", -1, "positive"),
        ("2027-01-01T00:00+05:00", "2027-02-01", 1, "has a UTC offset; give it in UTC without one"),
        ("2027-01-01", "2027-02-01T12:00-0300", 1, "has a UTC offset"),
        ("2027-01-01", "2046-01-01", 1 / 60 / 2, "time steps, more than the 10,000,000 supported"),
        ("2027-01-01", "2027-01-02", 48, r"the step \(48 h\) is longer than the span .* \(24 h\)"),
    ],
)
def test_bad_ranges_raise(start, end, step, match):
    with pytest.raises(SiteselError, match=match):
        validate_time_range(start, end, step)
    validate_time_range("2027-01-01T06:00Z", "2027-02-01T06:00", 1)  # Z is UTC, and welcome
    validate_time_range("2050-01-01", "2051-01-01", 1)  # the whole of 2050
    with pytest.raises(SiteselError):
        body_track(start, end, step)


@pytest.mark.parametrize("greatest_utc, gamma, lunar", [
    # total lunar eclipse of 2025-09-07 and total solar eclipse of 2026-08-12: times of greatest eclipse
    # and gamma (the shadow axis's least distance from the Earth's (Moon's) centre, in Earth radii),
    # from NASA's eclipse catalogues (Espenak), an external reference for the frame and the time scale
    ("2025-09-07T18:11:48", -0.2752, True),
    ("2026-08-12T17:46:06", 0.8977, False),
])
def test_eclipses_happen_when_and_where_published(greatest_utc, gamma, lunar):
    t = np.datetime64(greatest_utc)
    track = body_track(str(t - np.timedelta64(60, "m")), str(t + np.timedelta64(61, "m")), 0.25)
    sun = track.sun_m / np.linalg.norm(track.sun_m, axis=1)[:, None]
    earth = track.earth_m / np.linalg.norm(track.earth_m, axis=1)[:, None]
    separation_deg = np.degrees(np.arccos(np.clip(np.sum(sun * earth, axis=1), -1.0, 1.0)))
    # seen from the Moon, the Sun is behind the Earth (lunar) or opposite it (solar), off by the
    # angle gamma Earth radii subtend at the Moon's distance
    offset_deg = np.degrees(np.arctan(abs(gamma) * 6378.1e3 / np.linalg.norm(track.earth_m[4])))
    at_greatest = separation_deg[4] if lunar else 180.0 - separation_deg[4]
    assert abs(at_greatest - offset_deg) < 0.05
    # and that is the closest approach: a time-scale error of 15 min would move it off the middle step
    closest = np.argmin(separation_deg) if lunar else np.argmax(separation_deg)
    assert closest == 4


def test_a_span_that_is_not_whole_steps_covers_its_last_step():
    from sitesel.ephemeris import covered_end

    whole = body_track("2027-01-01", "2028-01-01", 1.0, use_cache=False)
    assert covered_end("2028-01-01", whole) == "2028-01-01"  # whole steps: as given
    track = body_track("2027-01-01", "2027-01-02T01:00", 24, use_cache=False)
    assert covered_end("2027-01-02T01:00", track) == "2027-01-03T00:00:00"
    assert track.end == "2027-01-03T00:00:00"  # the track's own covered end agrees


def test_chunks_do_not_change_the_track_and_report_progress(monkeypatch, capsys):
    from sitesel import ephemeris

    whole = body_track("2027-01-01", "2027-03-01", 6.0, use_cache=False)
    monkeypatch.setattr(ephemeris, "_TRACK_CHUNK_STEPS", 37)  # chunks not dividing the 236 steps
    done = []
    chunked = ephemeris._compute_track(*validate_time_range("2027-01-01", "2027-03-01", 6.0), progress=done.append)
    assert done == [37] * 6 + [14]
    np.testing.assert_array_equal(chunked.times_utc, whole.times_utc)
    np.testing.assert_array_equal(chunked.sun_m, whole.sun_m)
    np.testing.assert_array_equal(chunked.earth_m, whole.earth_m)
    body_track("2027-01-01", "2027-03-01", 6.0, use_cache=False, quiet=False)
    assert "ephemeris" in capsys.readouterr().err


def test_the_last_day_of_2050_is_covered():
    track = body_track("2050-12-31T22:00", "2051-01-01", 0.5, use_cache=False)
    assert len(track) == 4 and str(track.times_utc[-1]) == "2050-12-31T23:30:00"


def test_a_config_start_far_outside_the_ephemeris_is_an_input_error():
    from sitesel.config import resolve_period

    for start, match in (("9999-06-01", "past the Moon orientation kernel"), ("20270101", "not an ISO UTC date")):
        with pytest.raises(SiteselError, match=match + r".*\(time.start, or --start\)$"):
            resolve_period({"start": start, "step_hours": 1.0})
    assert resolve_period({"start": "2050-01-01", "step_hours": 1.0})[1] == "2051-01-01T00:00:00"
