"""Sun and Earth positions in the Moon mean-Earth frame, fully offline.

Positions come from the JPL DE421 ephemeris shipped by ``skyfield-data`` and
the Moon orientation from the DE421 lunar libration kernel shipped by
``lunarsky`` (``moon_pa_de421_1900-2050.bpc`` plus the frame kernel
``moon_080317.tf``), read with skyfield's ``PlanetaryConstants``. Nothing is
downloaded: skyfield's built-in timescale tables are used.

Frame: ``MOON_ME_DE421`` (mean Earth / polar axis), the frame LOLA products are
referenced to. Vectors point from the Moon's centre to the body's centre and
are astrometric (corrected for light time, not for aberration, which is
below 25 arcsec at the Moon).

Tracks are cached as ``.npz`` under ``$SITESEL_CACHE_DIR`` (default
``~/.cache/sitesel``), keyed by (start, end, step).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .constants import EPHEMERIS_END_DATE, EPHEMERIS_FIRST_DATE
from .errors import SiteselError
from .paths import cache_dir

_MOON_PCK = ("data", "pck", "moon_pa_de421_1900-2050.bpc")
_MOON_FK = ("data", "fk", "satellites", "moon_080317.tf")
_CACHE_VERSION = "1"  # bump when the computation changes so stale caches are ignored


@dataclass(frozen=True)
class Track:
    """Sun and Earth positions relative to the Moon, sampled regularly in UTC.

    Attributes
    ----------
    times_utc : ndarray of datetime64[s], shape (T,)
        Sample times, UTC, ``start + i * step``.
    sun_m, earth_m : ndarray of float64, shape (T, 3)
        Position of the Sun's / Earth's centre relative to the Moon's centre in
        the Moon mean-Earth (ME, DE421) frame, metres.
    step_hours : float
        Sampling interval, hours.
    """

    times_utc: np.ndarray
    sun_m: np.ndarray
    earth_m: np.ndarray
    step_hours: float

    def __len__(self) -> int:
        return len(self.times_utc)

    @property
    def start(self) -> str:
        """First sample time as an ISO string (UTC)."""
        return str(self.times_utc[0]) if len(self) else ""

    @property
    def end(self) -> str:
        """End of the covered span (last sample + one step) as an ISO string (UTC)."""
        if not len(self):
            return ""
        return str(self.times_utc[-1] + np.timedelta64(_step_seconds(self.step_hours), "s"))


def covered_end(end, track: Track) -> str:
    """The end of the span ``track`` (asked to end at ``end``) covers, as the report gives it:
    ``end`` as given when the span is a whole number of steps, else the end of its last step
    (:attr:`Track.end`), which runs past it. Gap lengths are counted to this end."""
    return str(end) if parse_utc(end, "end") == np.datetime64(track.end, "s") else track.end


def parse_utc(text, what: str) -> np.datetime64:
    """An ISO UTC date or date-time (``2027-01-01``, ``2027-01-01T06:00``, a trailing ``Z`` allowed)
    as datetime64[s]; ``what`` names it in the :class:`SiteselError` raised otherwise."""
    if not re.match(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", str(text).strip()):
        # numpy would read a compact 20270101 as the year 20 270 101
        raise SiteselError(f"the {what} time {text!r} is not an ISO UTC date; use e.g. 2027-01-01 or 2027-01-01T06:00")
    if re.search(r"T[0-9:.]+[+-][0-9]{2}(:?[0-9]{2})?$", str(text).strip()):
        raise SiteselError(f"the {what} time {text!r} has a UTC offset; give it in UTC without one, e.g. "
                           "2027-01-01T06:00 (or 2027-01-01T06:00Z)")
    try:
        value = np.datetime64(str(text).strip().rstrip("Z"), "s")
    except (ValueError, TypeError):
        raise SiteselError(
            f"cannot parse the {what} time {text!r}; use an ISO UTC date like 2027-01-01 or 2027-01-01T06:00"
        ) from None
    if np.isnat(value):
        raise SiteselError(f"the {what} time {text!r} is not a date; use an ISO UTC date like 2027-01-01")
    return value


def check_in_ephemeris(t0: np.datetime64, start) -> None:
    """Raise :class:`SiteselError` unless a span can start at ``t0`` (``start`` as given)."""
    if t0 < np.datetime64(EPHEMERIS_FIRST_DATE, "s"):
        raise SiteselError(f"start {start!r} is before {EPHEMERIS_FIRST_DATE}, the Moon orientation kernel's first date")
    if t0 >= np.datetime64(EPHEMERIS_END_DATE, "s"):
        raise SiteselError(f"start {start!r} is past the Moon orientation kernel, which covers 1900-2050; give a "
                           "start in that range")


def _n_steps(t0: np.datetime64, t1: np.datetime64, step_s: int) -> int:
    """Steps of ``step_s`` seconds from ``t0`` to before ``t1``, as ``np.arange`` makes them."""
    return -(-int((t1 - t0) / np.timedelta64(1, "s")) // step_s)


def _step_seconds(step_hours: float) -> int:
    return int(round(float(step_hours) * 3600.0))


#: Most time steps in a span: 18.6 years at 1 minute. The track and its cell tables grow with the
#: steps; far finer or longer spans would exhaust memory instead of ending in a clear message.
MAX_TIME_STEPS = 10_000_000


def validate_time_range(start, end, step_hours) -> tuple[np.datetime64, np.datetime64, int]:
    """Check a [start, end) UTC span and step; return (start, end, step_seconds).

    Raises :class:`SiteselError` for an unparsable date, an empty or reversed
    span, a step that is not positive (or rounds to 0 s) or is longer than the span, a span outside the
    Moon orientation kernel's coverage (from 1900-01-01 to, exclusive, 2051-01-01), or one of more
    than ``MAX_TIME_STEPS`` steps.
    """
    t0 = parse_utc(start, "start")
    t1 = parse_utc(end, "end")
    try:
        step_s = _step_seconds(step_hours)
    except (TypeError, ValueError):
        raise SiteselError(f"step_hours must be a number of hours, got {step_hours!r}") from None
    if not np.isfinite(float(step_hours)) or step_s <= 0:
        raise SiteselError(f"step_hours must be positive (at least 1 s), got {step_hours!r}")
    if t1 <= t0:
        raise SiteselError(f"the time span is empty: end {end!r} is not after start {start!r}")
    check_in_ephemeris(t0, start)
    if t1 > np.datetime64(EPHEMERIS_END_DATE, "s"):
        raise SiteselError(f"end {end!r} is past the Moon orientation kernel, which covers 1900-2050 (a span may "
                           f"end at {EPHEMERIS_END_DATE}); give an earlier start, end or a shorter span")
    span_s = int((t1 - t0) / np.timedelta64(1, "s"))
    if step_s > span_s:
        # one step longer than the span would report gaps longer than the span itself
        raise SiteselError(f"the step ({step_hours!r} h) is longer than the span from {start!r} to {end!r} "
                           f"({span_s / 3600:g} h); give a shorter step_hours or a later end")
    n_steps = _n_steps(t0, t1, step_s)
    if n_steps > MAX_TIME_STEPS:
        raise SiteselError(f"the span from {start!r} to {end!r} every {step_hours!r} h has {n_steps:,} time steps, "
                           f"more than the {MAX_TIME_STEPS:,} supported; use a longer step_hours")
    return t0, t1, step_s


def _package_dir(name: str) -> Path:
    # find_spec does not import the package (lunarsky imports astropy, which is slow).
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SiteselError(f"the Python package {name!r} is missing; install it with `pip install {name}`")
    return Path(list(spec.submodule_search_locations)[0])


@lru_cache(maxsize=1)
def _kernels():
    """Load (timescale, planets, Moon ME frame) once per process, offline."""
    from skyfield.api import Loader
    from skyfield.planetarylib import PlanetaryConstants

    data_dir = _package_dir("skyfield_data") / "data"
    lunarsky_dir = _package_dir("lunarsky")
    with warnings.catch_warnings():
        # skyfield-data flags its bundled Earth-orientation file as stale; the
        # Moon frame and TDB do not use Earth orientation, so it is irrelevant.
        warnings.simplefilter("ignore")
        load = Loader(str(data_dir), verbose=False)
        ts = load.timescale(builtin=True)
        planets = load("de421.bsp")
        pc = PlanetaryConstants()
        pc.read_text(load(str(lunarsky_dir.joinpath(*_MOON_FK))))
        pc.read_binary(load(str(lunarsky_dir.joinpath(*_MOON_PCK))))
        frame = pc.build_frame_named("MOON_ME_DE421")
    return ts, planets, frame


#: Steps per chunk of the ephemeris computation: skyfield's intermediates take about 1 kB per
#: step, so chunks bound the memory (3 GB for 2.6 million steps at once) and pace the progress bar.
_TRACK_CHUNK_STEPS = 100_000


def _compute_track(t0: np.datetime64, t1: np.datetime64, step_s: int, progress=None) -> Track:
    """The track over [t0, t1) every ``step_s`` seconds, in chunks of ``_TRACK_CHUNK_STEPS`` (each
    step's vectors depend on its time only, so the chunks do not change them); ``progress`` is
    called with the steps of each finished chunk."""
    ts, planets, frame = _kernels()
    times = np.arange(t0, t1, np.timedelta64(step_s, "s"))
    sun_me = np.empty((times.size, 3))
    earth_me = np.empty((times.size, 3))
    moon = planets["moon"]
    for first in range(0, times.size, _TRACK_CHUNK_STEPS):
        chunk = slice(first, min(first + _TRACK_CHUNK_STEPS, times.size))
        secs = (times[chunk] - np.datetime64("1970-01-01T00:00:00", "s")).astype(np.int64)
        days, sec_of_day = np.divmod(secs, 86400)
        t = ts.utc(1970, 1, 1 + days, 0, 0, sec_of_day.astype(np.float64))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            observer = moon.at(t)
            sun_icrf = observer.observe(planets["sun"]).position.m
            earth_icrf = observer.observe(planets["earth"]).position.m
            rot = frame.rotation_at(t)  # (3, 3, T): ICRF -> Moon ME
        sun_me[chunk] = np.einsum("ijt,jt->ti", rot, sun_icrf)
        earth_me[chunk] = np.einsum("ijt,jt->ti", rot, earth_icrf)
        if progress is not None:
            progress(chunk.stop - chunk.start)
    return Track(times, sun_me, earth_me, step_s / 3600.0)


def _cache_path(t0, t1, step_s) -> Path:
    key = f"{_CACHE_VERSION}|{t0}|{t1}|{step_s}"
    return cache_dir() / f"track_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def _write_atomic(path: Path, track: Track) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, times_utc=track.times_utc.astype(np.int64), sun_m=track.sun_m,
                     earth_m=track.earth_m, step_hours=track.step_hours)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_cached(path: Path) -> Track | None:
    try:
        with np.load(path) as data:
            return Track(data["times_utc"].astype("datetime64[s]"), data["sun_m"], data["earth_m"],
                         float(data["step_hours"]))
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):  # a truncated or foreign file
        return None


def body_track(start: str, end: str, step_hours: float = 1.0, use_cache: bool = True, quiet: bool = True) -> Track:
    """Sun and Earth positions in the Moon ME frame over [start, end) every ``step_hours``.

    ``start``/``end`` are UTC ISO dates or date-times. The result is cached on
    disk (see :func:`cache_dir`); an unreadable cache entry is recomputed, with a
    progress bar on stderr unless ``quiet`` (about 8 s per million steps).
    """
    t0, t1, step_s = validate_time_range(start, end, step_hours)
    path = _cache_path(t0, t1, step_s)
    if use_cache and path.exists():
        track = _read_cached(path)
        if track is not None:
            return track
    from .progress import Progress

    with Progress(_n_steps(t0, t1, step_s), "ephemeris", unit="step", quiet=quiet) as bar:
        track = _compute_track(t0, t1, step_s, progress=bar.advance)
    if use_cache:
        try:
            _write_atomic(path, track)
        except OSError:
            pass  # a read-only cache must not stop a run; the track is simply recomputed next time
    return track
