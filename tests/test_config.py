"""Config validation: unknown keys and wrong types are named; defaults follow DESIGN.md."""

import pytest

from sitesel.config import default_config, load_config, resolve_period, validate_config
from sitesel.errors import SiteselError


def test_defaults_follow_design():
    config = default_config()
    assert config["time"] == {"start": "2027-01-01", "step_hours": 1.0}
    assert config["observer"]["height_m"] == 2.0
    assert config["horizon"] == {"azimuths": 180, "max_distance_km": 150.0, "halo_km": 10.0}
    assert resolve_period(config["time"]) == ("2027-01-01", "2028-01-01T00:00:00", 1.0)


def test_years_span():
    start, end, step = resolve_period({"start": "2027-01-01", "years": 18.6, "step_hours": 2.0})
    assert (start, step) == ("2027-01-01", 2.0)
    assert end.startswith("2045-08-07")
    with pytest.raises(SiteselError, match="runs past the ephemeris"):
        resolve_period({"start": "2027-01-01", "years": 1e12, "step_hours": 2.0})


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"tim": {}}, "unknown key 'tim'"),
        ({"time": {"stepp_hours": 1}}, "unknown key 'time.stepp_hours'"),
        ({"time": {"step_hours": "1h"}}, "key 'time.step_hours': expected number"),
        ({"horizon": {"azimuths": 180.5}}, "key 'horizon.azimuths': expected integer"),
        ({"horizon": {"azimuths": True}}, "key 'horizon.azimuths': expected integer"),
        ({"run": {"exact_everywhere": 1}}, "key 'run.exact_everywhere': expected boolean"),
        ({"observer": {"height_m": True}}, "key 'observer.height_m'"),
        ({"time": "2027"}, "'time' must be a table"),
        ({"time": {"end": "2028-01-01", "years": 1}}, "either time.end or time.years"),
        ({"time": {"step_hours": 0}}, "step_hours must be positive"),
        ({"region": {"centre_lat": -89}}, "unknown key 'region.centre_lat'"),
        ({"region": {"centre_lat_deg": -89.0}}, "must all be given"),
        ({"time": {"years": float("inf")}}, "key 'time.years': expected a finite number, got inf"),
        ({"surface": {"baseline_m": float("nan")}}, "key 'surface.baseline_m': expected a finite number, got nan"),
        ({"observer": {"height_m": 1e9}}, "observer.height_m must be a number of metres from 0 to 1000"),
        ({"observer": {"height_m": [2.0, float("inf")]}}, "from 0 to 1000 or a list of them, got inf"),
        ({"observer": {"height_m": []}}, "observer.height_m is an empty list: give at least one height"),
        ({"observer": {"height_m": [2, 2]}}, "observer.height_m lists a height twice"),
        ({"observer": {"height_m": [2.0, 2.0000001]}}, "or two that round to the same layer folder"),
        ({"observer": {"height_m": [0.0, -0.0]}}, "lists a height twice"),
        ({"horizon": {"azimuths": 100_000_000}}, "horizon.azimuths must be 8 to 7200"),
        ({"horizon": {"azimuths": 4}}, "horizon.azimuths must be 8 to 7200"),
        ({"time": {"start": __import__("datetime").date(2027, 1, 1)}},
         'expected string, got date datetime.date(2027, 1, 1) (write dates in quotes, e.g. "2027-01-01")'),
    ],
)
def test_bad_keys_and_types_are_named(raw, message):
    with pytest.raises(SiteselError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_config(raw)


def test_load_config_resolves_paths_and_reports_toml_errors(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('profile = "luna27"\n[dem]\npath = "dems/x.tif"\n[time]\nyears = 2\n')
    config = load_config(cfg)
    assert config["dem"]["path"] == str((tmp_path / "dems/x.tif").resolve())
    assert config["profile"] == "luna27"
    (tmp_path / "sub").mkdir()
    sub = tmp_path / "sub" / "run.toml"
    sub.write_text('profile = "mine.toml"\n[dem]\npath = "x.tif"\n')
    assert load_config(sub)["profile"] == str((tmp_path / "sub" / "mine.toml").resolve())  # beside the config
    cfg.write_text("[dem\npath=")
    with pytest.raises(SiteselError, match="not valid TOML"):
        load_config(cfg)
    cfg.write_text("[time]\nyears = 2\n")
    with pytest.raises(SiteselError, match=r"\[dem\] path is required"):
        load_config(cfg)
    with pytest.raises(SiteselError, match="not found"):
        load_config(tmp_path / "missing.toml")
