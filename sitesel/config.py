"""Run configuration: the TOML file of ``sitesel run`` and its validation.

The schema below is the single source of truth for config keys, their types
and their defaults (DESIGN.md section 3). An unknown key or a wrong type is a
:class:`~sitesel.errors.SiteselError` that names the key.

Example::

    profile = "default"          # or an inline [profile] table

    [dem]
    path = "dems/LDEM_85S_20M.IMG"   # relative to this file
    far_field = "dems/LDEM_80S_80M.IMG"  # optional: distant horizon from a wider DEM

    [region]                     # optional: a window of the DEM
    centre_lat_deg = -89.5
    centre_lon_deg = 0.0
    radius_km = 20

    [time]
    start = "2027-01-01"
    end = "2028-01-01"           # or: years = 18.6
    step_hours = 1.0

    [observer]
    height_m = 2.0               # or a list, e.g. [2.0, 10.0]: one set of layers per height

    [horizon]
    azimuths = 180
    max_distance_km = 150
    halo_km = 10                 # terrain read around [region] to shade its edges

    [surface]
    baseline_m = 20

    [run]
    tile_px = 1024
    exact_everywhere = false     # true: exact gap lengths at every pixel even on long runs over large maps
"""

from __future__ import annotations

import copy
import datetime as _dt
import math
import tomllib
from dataclasses import fields
from pathlib import Path

from .constants import MAX_AZIMUTHS, MAX_OBSERVER_HEIGHT_M, MIN_AZIMUTHS
from .errors import SiteselError
from .terrain.region import Region, region_from_config

_NUMBER = (int, float)

#: section -> key -> (accepted types, default). ``None`` default = optional, absent.
SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], object]]] = {
    "dem": {"path": ((str,), None), "far_field": ((str,), None)},
    # The region's keys are the fields of terrain.region.Region, which also checks how they combine.
    "region": {field.name: (_NUMBER, None) for field in fields(Region)},
    "time": {
        "start": ((str,), "2027-01-01"),
        "end": ((str,), None),
        "years": (_NUMBER, None),
        "step_hours": (_NUMBER, 1.0),
    },
    "observer": {"height_m": ((int, float, list), 2.0)},
    "horizon": {"azimuths": ((int,), 180), "max_distance_km": (_NUMBER, 150.0), "halo_km": (_NUMBER, 10.0)},
    "surface": {"baseline_m": (_NUMBER, 20.0)},
    "run": {"tile_px": ((int,), 1024), "exact_everywhere": ((bool,), False)},
}

#: Top-level scalar keys.
TOP_LEVEL = {"profile": ((str, dict), "default")}


def _type_names(types):
    if types == _NUMBER:
        return "number"
    names = {int: "integer", float: "number", str: "string", dict: "table", bool: "boolean", list: "list"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def _check_type(where: str, value, types):
    # bool is an int subclass in Python; a boolean is never a valid number here.
    if isinstance(value, bool) != (bool in types) or not isinstance(value, types):
        quote = " (write dates in quotes, e.g. \"2027-01-01\")" if isinstance(value, (_dt.date, _dt.time)) else ""
        raise SiteselError(f"{where}: expected {_type_names(types)}, got {type(value).__name__} {value!r}{quote}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SiteselError(f"{where}: expected a finite number, got {value!r}")


def default_config() -> dict:
    """The configuration with every default filled in."""
    config = {key: default for key, (_, default) in TOP_LEVEL.items()}
    for section, keys in SCHEMA.items():
        config[section] = {key: default for key, (_, default) in keys.items() if default is not None}
    return config


def validate_config(raw: dict, source: str = "config") -> dict:
    """Check keys and types, fill defaults, and return a new config dict.

    Raises SiteselError naming the first unknown key or wrong type.
    """
    config = default_config()
    for key, value in raw.items():
        if key in TOP_LEVEL:
            _check_type(f"{source}: key '{key}'", value, TOP_LEVEL[key][0])
            config[key] = copy.deepcopy(value)
            continue
        if key not in SCHEMA:
            known = ", ".join(sorted([*TOP_LEVEL, *SCHEMA]))
            raise SiteselError(f"{source}: unknown key '{key}' (known: {known})")
        if not isinstance(value, dict):
            raise SiteselError(f"{source}: '{key}' must be a table ([{key}]), got {type(value).__name__}")
        for sub, subvalue in value.items():
            if sub not in SCHEMA[key]:
                known = ", ".join(SCHEMA[key])
                raise SiteselError(f"{source}: unknown key '{key}.{sub}' (known in [{key}]: {known})")
            _check_type(f"{source}: key '{key}.{sub}'", subvalue, SCHEMA[key][sub][0])
            config[key][sub] = subvalue
    if raw.get("region"):
        region_from_config(config["region"])  # a half-given circle or empty box fails here, not mid-run
    else:
        config.pop("region")
    _check_values(config, source)
    return config


def _check_values(config: dict, source: str):
    t = config["time"]
    if "end" in t and "years" in t:
        raise SiteselError(f"{source}: give either time.end or time.years, not both")
    if t["step_hours"] <= 0:
        raise SiteselError(f"{source}: time.step_hours must be positive, got {t['step_hours']}")
    if "years" in t and t["years"] <= 0:
        raise SiteselError(f"{source}: time.years must be positive, got {t['years']}")
    if not MIN_AZIMUTHS <= config["horizon"]["azimuths"] <= MAX_AZIMUTHS:
        raise SiteselError(f"{source}: horizon.azimuths must be {MIN_AZIMUTHS} to {MAX_AZIMUTHS} "
                           f"(0.05 deg apart), got {config['horizon']['azimuths']}")
    if config["horizon"]["max_distance_km"] <= 0:
        raise SiteselError(f"{source}: horizon.max_distance_km must be positive")
    if config["horizon"]["halo_km"] < 0:
        raise SiteselError(f"{source}: horizon.halo_km must be >= 0")
    heights = config["observer"]["height_m"]
    for height in heights if isinstance(heights, list) else [heights]:
        if (isinstance(height, bool) or not isinstance(height, _NUMBER)
                or not 0.0 <= height <= MAX_OBSERVER_HEIGHT_M):
            raise SiteselError(f"{source}: observer.height_m must be a number of metres from 0 to "
                               f"{MAX_OBSERVER_HEIGHT_M:g} or a list of them, got {height!r}")
    if isinstance(heights, list) and not heights:
        raise SiteselError(f"{source}: observer.height_m is an empty list: give at least one height, e.g. [2.0]")
    if isinstance(heights, list) and len(set(map(height_dir_name, heights))) != len(heights):
        raise SiteselError(f"{source}: observer.height_m lists a height twice (or two that round to the same "
                           f"layer folder, h<height>m, to 6 digits), got {heights!r}")
    if config["surface"]["baseline_m"] <= 0:
        raise SiteselError(f"{source}: surface.baseline_m must be positive")
    if config["run"]["tile_px"] < 16:
        raise SiteselError(f"{source}: run.tile_px must be at least 16, got {config['run']['tile_px']}")


def load_config(path: str | Path) -> dict:
    """Read and validate a TOML config; relative DEM and profile paths resolve against its folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SiteselError(f"config file '{path}' not found") from None
    except UnicodeDecodeError:
        raise SiteselError(f"config file '{path}' is not UTF-8 text; save it as UTF-8 (TOML requires it)") from None
    except OSError as exc:
        raise SiteselError(f"cannot read config file '{path}': {exc.strerror}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SiteselError(f"config file '{path}' is not valid TOML: {exc}") from None
    config = validate_config(raw, source=str(path))
    dem = config["dem"]
    if "path" not in dem:
        raise SiteselError(f"{path}: [dem] path is required (the DEM file to run on)")
    for key in ("path", "far_field"):
        if key in dem:
            dem[key] = str((path.parent / dem[key]).resolve()) if not Path(dem[key]).is_absolute() else dem[key]
    # a profile file named in the config sits beside it, like the DEM (a preset is a bare name)
    profile = config.get("profile")
    if isinstance(profile, str) and profile.lower().endswith(".toml") and not Path(profile).is_absolute():
        config["profile"] = str((path.parent / profile).resolve())
    return config


def height_dir_name(height_m: float) -> str:
    """Folder of one observer height's layers, e.g. ``h2m``, ``h10m``, ``h2.5m`` (6 significant digits)."""
    return f"h{height_m + 0.0:g}m"  # + 0.0: -0.0 is 0


def observer_heights_m(config: dict) -> list[float]:
    """The observer heights of a validated config, as a list (the first one is scored)."""
    heights = config["observer"]["height_m"]
    return [float(h) for h in (heights if isinstance(heights, list) else [heights])]


def resolve_period(time_config: dict) -> tuple[str, str, float]:
    """(start, end, step_hours) of a [time] table.

    ``years`` counts Julian years of 365.25 days; with neither ``end`` nor
    ``years`` the period is one calendar year from ``start``.
    """
    from datetime import datetime, timedelta

    from .ephemeris import check_in_ephemeris, parse_utc

    start = time_config["start"]
    step_hours = float(time_config["step_hours"])
    if "end" in time_config:
        return start, time_config["end"], step_hours
    try:
        t = parse_utc(start, "start")
        check_in_ephemeris(t, start)  # so that a year later is still a date Python holds
    except SiteselError as exc:
        raise SiteselError(f"{exc} (time.start, or --start)") from None
    t0 = t.astype(datetime)
    if "years" in time_config:
        try:
            end = t0 + timedelta(days=365.25 * float(time_config["years"]))
        except OverflowError:
            raise SiteselError(f"time.years = {time_config['years']} runs past the ephemeris, which ends in 2050") from None
    else:
        end = t0.replace(year=t0.year + 1, day=min(t0.day, 28) if t0.month == 2 else t0.day)
    return start, end.isoformat(timespec="seconds"), step_hours
