"""The ``sitesel`` command (DESIGN.md section 3).

Input errors end in one line on stderr and exit status 2; an unexpected
internal error prints one line too (set SITESEL_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import click
import numpy as np

from . import __version__
from .constants import MAX_AZIMUTHS, MAX_OBSERVER_HEIGHT_M, MIN_AZIMUTHS
from .errors import SiteselError, SiteselWarning

EXIT_INPUT_ERROR = 2

#: Largest DEM (pixels) that `run` reads whole; bigger products need a [region].
MAX_WHOLE_DEM_PX = 8192 * 8192


def _output_dir(ctx, param, value) -> Path:
    """--out as a Path; an empty one is refused (it would be the current folder)."""
    if not value:
        raise click.BadParameter("is empty; give a folder, e.g. --out sitesel-out", ctx, param)
    return Path(value)


class Finite(click.FloatRange):
    """A float option or argument, optionally bounded, that refuses nan (which passes every
    bound, since it compares false) and inf."""

    name = "float"

    def get_metavar(self, param, ctx=None):
        # an unbounded option is a plain FLOAT in --help; an argument keeps its own name (LAT)
        if self.min is None and self.max is None and not isinstance(param, click.Argument):
            return "FLOAT"
        return super().get_metavar(param, ctx)

    def _describe_range(self):
        # click would print an unbounded range as "x<=None" in --help
        return "" if self.min is None and self.max is None else super()._describe_range()

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not np.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


class NumbersFirst(click.Command):
    """A command whose arguments may be negative numbers (``sitesel site -89.45 -137.3``).

    Those would read as unknown options, so the command ignores unknown options, and
    an option misspelt would then be taken for an argument ("'--yeras' is not a valid
    float"). This names it for what it is first: an unknown option, with the likely one.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("context_settings", {})["ignore_unknown_options"] = True
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx, args):
        options = {name: p for p in self.get_params(ctx) if isinstance(p, click.Option)
                   for name in p.opts + p.secondary_opts}
        takes_value = False
        for token in args:
            if token == "--":
                break
            if takes_value:  # an option's value, whatever it looks like
                takes_value = False
                continue
            name = token.split("=", 1)[0]
            if name in options:
                takes_value = not options[name].is_flag and "=" not in token
            elif token.startswith("-") and not _is_number(token):
                raise click.NoSuchOption(name, possibilities=difflib.get_close_matches(name, options), ctx=ctx)
        return super().parse_args(ctx, args)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


#: The demo's far field: the whole 400 km synthetic world at 1 km/px.
DEMO_FAR_FIELD_PX = 400
DEMO_FAR_FIELD_RESOLUTION_M = 1000.0


def _default_demo_config(step_hours: float, years: float | None) -> dict:
    from .config import validate_config

    time_table = {"step_hours": step_hours}
    if years is not None:
        time_table["years"] = years
    return validate_config({"time": time_table}, source="demo")


def _run_and_write(terrain, config, out_dir: Path, *, inputs, resume, quiet, far_field=None, client=None,
                   profile=None, window=None, written_inputs=None):
    from . import pipeline
    from .outputs import check_writable, removed_if_failed

    clock = time.perf_counter()
    # a run stopped before it wrote anything leaves no directory behind that it made (finished
    # tiles stay for --resume)
    with removed_if_failed(out_dir):
        check_writable(out_dir)
        result = pipeline.compute(
            terrain, config, tile_dir=out_dir / ".tiles", resume=resume, far_field=far_field, client=client,
            quiet=quiet, profile=profile, window=window,
        )
        pipeline.write_outputs(result, out_dir, config, inputs=inputs, quiet=quiet,
                               total_time_s=time.perf_counter() - clock, written_inputs=written_inputs,
                               run_warnings=_WARNED)
    if not quiet:
        _print_sites(result, out_dir, time.perf_counter() - clock)
    return result


def _note_first_compile(quiet: bool) -> None:
    """Say why the first run after an install or an upgrade sits still for a while."""
    from . import _numba_cache

    if not quiet and _numba_cache.is_cold():
        click.echo("sitesel: first run of this installation: compiling the numeric kernels (about half a minute, "
                   "kept for later runs)", err=True)


def _check_period(config):
    """Raise SiteselError if the config's time span is not one the ephemeris covers: a command calls it
    before it reads a DEM or makes any output."""
    from .config import resolve_period
    from .ephemeris import validate_time_range

    validate_time_range(*resolve_period(config["time"]))


def _print_sites(result, out_dir: Path, wall_s: float):
    sites = result.sites
    if not sites:
        from .report import no_sites_hint

        landing_m = result.profile.ellipse_semi_major_m  # the disc radius for a disc
        click.echo("No site met every hard constraint: " + no_sites_hint((result.constraint_summary, landing_m)))
        click.echo(f"Wrote {out_dir} in {wall_s:.1f} s (report: {out_dir / 'report.md'})")
        return
    click.echo(f"Top {len(sites)} sites (full table in {out_dir / 'sites.csv'}):")
    click.echo(f"{'rank':>4} {'lat':>9} {'lon':>9} {'score':>6} {'slope':>6} {'sun':>6} {'night_h':>8} {'earth':>6}")
    for s in sites:
        click.echo(
            f"{s['rank']:>4} {s['lat']:>9.4f} {s['lon']:>9.3f} {s['score']:>6.3f} {s['slope_deg']:>6.1f} "
            f"{s['sun_lit_fraction']:>6.1%} {s['longest_night_h']:>8.1f} {s['earth_visible_fraction']:>6.1%}"
        )
    click.echo(f"Wrote {out_dir} in {wall_s:.1f} s (report: {out_dir / 'report.md'})")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sitesel")
def cli():
    """Find where a lander should touch down near the lunar south pole.

    Distances are metres (or km where the option says so), angles degrees,
    latitudes negative south, longitudes east-positive, dates UTC ISO.
    """


@cli.command()
@click.option("--out", "out_dir", type=click.Path(), callback=_output_dir, default="sitesel-demo",
              show_default=True, help="Output directory.")
@click.option("--size", type=click.IntRange(32, 8192), default=500, show_default=True,
              help="Terrain size in pixels per side.")
@click.option("--resolution-m", type=Finite(1.0, 5000.0), default=200.0, show_default=True,
              help="Pixel size in metres.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Terrain seed.")
@click.option("--step-hours", type=Finite(0.01, 240.0), default=1.0, show_default=True,
              help="Time step in hours.")
@click.option("--years", type=Finite(0.01, 150.0), default=None,
              help="Span in years from 2027-01-01 (default: one calendar year).")
@click.option("--resume", is_flag=True, help="Reuse finished tiles of an interrupted run.")
@click.option("--quiet", is_flag=True, help="No progress bars or summary.")
def demo(out_dir, size, resolution_m, seed, step_hours, years, resume, quiet):
    """Run the full pipeline on the built-in synthetic south pole.

    The analysed square (SIZE x RESOLUTION metres, centred on the pole) and
    a 10 km halo are written to OUT/dem.tif; the distant horizon comes from the
    same synthetic world, 400 km wide at 1 km/px (OUT/far_field.tif), so massifs
    100+ km away (like Malapert) shade it. `sitesel site --dem OUT/dem.tif
    --far-field OUT/far_field.tif` probes one point of it.
    """
    from .outputs import check_out_dir_is_ours
    from .terrain.synthetic import synthetic_south_pole

    config = _default_demo_config(step_hours, years)
    _check_period(config)
    check_out_dir_is_ours(out_dir)
    _note_first_compile(quiet)
    # A halo of the same world around the analysed square shades its edges at full resolution, and the
    # whole 400 km world at 1 km/px gives the distant horizon (massifs 100+ km away).
    halo_px = int(np.ceil(config["horizon"]["halo_km"] * 1e3 / resolution_m))
    terrain = synthetic_south_pole(size=size + 2 * halo_px, resolution_m=resolution_m, seed=seed)
    window = (slice(halo_px, halo_px + size), slice(halo_px, halo_px + size))
    far_field = synthetic_south_pole(size=DEMO_FAR_FIELD_PX, resolution_m=DEMO_FAR_FIELD_RESOLUTION_M, seed=seed)
    # the DEMs are written with the outputs, as part of their set: a stopped rerun leaves the earlier
    # run's dem.tif beside the earlier run's results
    _run_and_write(terrain, config, out_dir, inputs=[], resume=resume, quiet=quiet, far_field=far_field,
                   window=window, written_inputs={"dem.tif": terrain, "far_field.tif": far_field})


@cli.command()
@click.argument("config_path", metavar="CONFIG.toml", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(), callback=_output_dir, default="sitesel-out",
              show_default=True, help="Output directory.")
@click.option("--profile", "profile_name", default=None, help="Mission profile preset or TOML path (overrides the config).")
@click.option("--workers", type=click.IntRange(1, 1024), default=None, help="Run tiles on a local Dask cluster of N workers.")
@click.option("--scheduler", default=None, help="Run tiles on an existing Dask scheduler (tcp://host:port).")
@click.option("--years", type=Finite(0.01, 150.0), default=None,
              help="Span in years from the config's start (overrides time.end/years; 18.6 = a precession cycle).")
@click.option("--resume", is_flag=True, help="Reuse finished tiles of an interrupted run.")
@click.option("--quiet", is_flag=True, help="No progress bars or summary.")
def run(config_path, out_dir, profile_name, workers, scheduler, years, resume, quiet):
    """Run the full pipeline on a DEM described by CONFIG.toml."""
    from .config import load_config
    from .outputs import check_out_dir_is_ours
    from .terrain.io import read_far_field, read_own_far_field, read_terrain, read_terrain_with_halo
    from .terrain.region import region_from_config

    if workers and scheduler:
        raise SiteselError("give either --workers or --scheduler, not both")
    config = load_config(config_path)
    if profile_name:
        config["profile"] = profile_name
    if years is not None:
        config["time"].pop("end", None)
        config["time"]["years"] = years
    _check_period(config)
    from .pipeline import resolve_profile

    check_out_dir_is_ours(out_dir)
    _note_first_compile(quiet)
    profile = resolve_profile(config["profile"])
    window = None
    if "region" in config:
        region = region_from_config(config["region"])
        terrain, window = read_terrain_with_halo(config["dem"]["path"], region, config["horizon"]["halo_km"] * 1e3)
    else:
        _check_whole_dem_fits(config["dem"]["path"])
        terrain = read_terrain(config["dem"]["path"])
    far_field = None
    max_distance_m = config["horizon"]["max_distance_km"] * 1e3
    if "far_field" in config["dem"]:
        far_field = read_far_field(config["dem"]["far_field"], terrain, max_distance_m)
    elif window is not None:
        # the halo is only the near field (as `site` searches the DEM itself out to max_distance_km)
        far_field = read_own_far_field(config["dem"]["path"], terrain, max_distance_m)
    inputs = [config["dem"]["path"]] + ([config["dem"]["far_field"]] if "far_field" in config["dem"] else [])
    client = _dask_client(workers, scheduler)
    try:
        _run_and_write(terrain, config, out_dir, inputs=inputs, resume=resume, quiet=quiet, far_field=far_field,
                       client=client, profile=profile, window=window)
    except BaseException:
        if client is not None:
            # the workers' cancelled tasks would log warnings after the one-line error
            logging.getLogger("distributed").setLevel(logging.ERROR)
        raise
    finally:
        if client is not None:
            client.close()


def _check_whole_dem_fits(path):
    """Refuse to read a multi-GB product whole: such products are analysed by [region]."""
    from .terrain.io import open_dem

    with open_dem(path) as src:
        rows, cols = src.grid.shape
    if rows * cols > MAX_WHOLE_DEM_PX:
        raise SiteselError(
            f"{path} is {rows} x {cols} px ({rows * cols * 4 / 1e9:.1f} GB as float32), too large to analyse whole; "
            "add a [region] (centre_lat_deg, centre_lon_deg, radius_km) to the config"
        )


def _dask_client(workers, scheduler):
    if not (workers or scheduler):
        return None
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise SiteselError("--workers/--scheduler need Dask: pip install 'sitesel[dask]'") from None
    if scheduler:
        try:
            return Client(scheduler, timeout="10s")
        except (OSError, ValueError) as exc:  # ValueError: not an address (no port, say)
            raise SiteselError(f"cannot reach the Dask scheduler at {scheduler}: {exc}; give its address as "
                               "tcp://host:port") from None
    return Client(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True))


@cli.command(cls=NumbersFirst)
@click.argument("lat", type=Finite())
@click.argument("lon", type=Finite())
@click.option("--dem", "dem_path", required=True, type=click.Path(path_type=Path), help="DEM file.")
@click.option("--height-m", type=Finite(0.0, MAX_OBSERVER_HEIGHT_M), default=2.0, show_default=True,
              help="Observer height above the surface, metres.")
@click.option("--start", default="2027-01-01", show_default=True, help="Start date (UTC ISO).")
@click.option("--end", default=None, help="End date (UTC ISO, exclusive; default one year after start).")
@click.option("--years", type=Finite(0.01, 150.0), default=None,
              help="Span in years from --start, instead of --end (18.6 = a precession cycle).")
@click.option("--step-hours", type=Finite(), default=1.0, show_default=True, help="Time step, hours.")
@click.option("--azimuths", type=click.IntRange(MIN_AZIMUTHS, MAX_AZIMUTHS), default=360, show_default=True, help="Horizon azimuths.")
@click.option("--max-distance-km", type=Finite(0.1, 2000.0), default=150.0, show_default=True,
              help="Horizon search distance, km.")
@click.option("--far-field", "far_field_path", type=click.Path(path_type=Path), default=None,
              help="A wider, coarser DEM for the distant horizon (as [dem] far_field; the demo writes OUT/far_field.tif).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None,
              help="Draw the horizon mask with the Sun's and Earth's paths to this PNG.")
@click.option("--quiet", is_flag=True, help="No progress bar (the ephemeris of a long span).")
def site(lat, lon, dem_path, height_m, start, end, years, step_hours, azimuths, max_distance_km, far_field_path,
         as_json, plot_path, quiet):
    """Horizon, sunlight, Earth visibility and slope at one point LAT LON (degrees).

    LAT is negative (south), e.g. `sitesel site -89.45 -137.3 --dem DEM.tif`.
    """
    from .outputs import check_writable, removed_if_failed
    from .site import site_report

    if plot_path and plot_path.suffix.lower() != ".png":
        raise SiteselError(f"--plot {plot_path} must name a .png file (the horizon mask is drawn as a PNG)")
    if end and years is not None:
        raise SiteselError(f"give --end {end} or --years {years:g}, not both")
    period = {"start": start, "step_hours": step_hours}
    if end:
        period["end"] = end
    if years is not None:
        period["years"] = years
    # no empty folders of --plot left behind by a point that fails
    with removed_if_failed(plot_path.parent) if plot_path else contextlib.nullcontext():
        if plot_path:
            check_writable(plot_path.parent, hint="choose another --plot path")
        summary, series = site_report(
            lat, lon, dem_path, observer_height_m=height_m, period=period, n_azimuths=azimuths,
            max_distance_m=max_distance_km * 1e3, far_field_path=far_field_path, quiet=quiet,
        )
        if plot_path:
            from . import plots

            plots.horizon_mask(
                plot_path, summary["azimuth_deg"], summary["horizon_deg"],
                sun_az_deg=series["sun_azimuth_deg"], sun_el_deg=series["sun_elevation_deg"],
                earth_az_deg=series["earth_azimuth_deg"], earth_el_deg=series["earth_elevation_deg"],
                times=series["times_utc"],
                title=f"{plots.point_label(summary['lat'], summary['lon'])}, h = {height_m:g} m",
            )
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
        return
    for key in ("lat", "lon", "x_m", "y_m", "height_m", "slope_deg", "sun_lit_fraction", "sun_disc_fraction",
                "longest_night_h", "earth_visible_fraction", "longest_blackout_h", "observer_height_m",
                "start", "end", "step_hours"):
        value = summary[key]
        shown = f"{value:.4f}" if isinstance(value, float) else "n/a" if value is None else value
        click.echo(f"{key:>24}: {shown}")
    if summary.get("longest_nights"):
        click.echo("Longest nights (UTC):")
        for night in summary["longest_nights"]:
            click.echo(f"  {night['start']} -> {night['end']}  {night['hours']:8.1f} h")
    if summary.get("monthly_sun_lit_fraction"):
        click.echo("Month     Sun    Earth")
        for month in summary["monthly_sun_lit_fraction"]:
            click.echo(f"{month['month']}  {month['sun_lit_fraction']:6.1%} {month['earth_visible_fraction']:6.1%}")


@cli.command()
@click.argument("product", required=False)
@click.option("--list", "list_products", is_flag=True, help="List the catalogued products.")
@click.option("--dest", type=click.Path(path_type=Path), default=None, help="Download folder (default: dems/).")
@click.option("--base-url", default=None, help="Mirror base URL (or env SITESEL_BASE_URL).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def fetch(product, list_products, dest, base_url, quiet):
    """Download a catalogued LOLA product, verified and resumable."""
    from . import fetch as fetching

    if list_products:
        products = fetching.list_products()
        if product:  # --list NAME: that product only
            products = [p for p in products if p["name"].upper() == product.upper()]
            if not products:
                raise SiteselError(f"unknown product {product!r}; `sitesel fetch --list` shows them all")
        click.echo(fetching.format_product_table(products))
        return
    if not product:
        raise SiteselError("name a product to fetch (see `sitesel fetch --list`)")
    path = fetching.fetch_product(product, dest=dest, base_url=base_url, progress=not quiet)
    click.echo(str(path))


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON.")
def info(path, as_json):
    """Describe a DEM: CRS, extent, resolution, latitude range, units, nodata share."""
    from .terrain.io import describe_dem, format_description

    description = describe_dem(path)
    click.echo(json.dumps(description, sort_keys=True, default=str) if as_json else format_description(description))


@cli.command()
@click.argument("out_path", metavar="OUT.tif", type=click.Path(path_type=Path))
@click.option("--size", type=click.IntRange(16, 16384), default=500, show_default=True, help="Pixels per side.")
@click.option("--resolution-m", type=Finite(1.0, 5000.0), default=200.0, show_default=True,
              help="Pixel size, metres.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Terrain seed.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def synth(out_path, size, resolution_m, seed, quiet):
    """Write the built-in synthetic south-pole terrain as a GeoTIFF (heights in m above 1737.4 km)."""
    from .outputs import check_writable
    from .terrain.io import write_terrain
    from .progress import Progress
    from .terrain.synthetic import WORLD_PARTS, synthetic_south_pole

    if out_path.suffix.lower() not in (".tif", ".tiff"):
        raise SiteselError(f"{out_path} must name a .tif file (the terrain is written as a GeoTIFF)")
    if out_path.is_dir():
        raise SiteselError(f"{out_path} is a folder; give a file name for the GeoTIFF, e.g. {out_path / 'terrain.tif'}")
    check_writable(out_path.parent if str(out_path.parent) else Path("."), hint="choose another OUT.tif path")
    with Progress(WORLD_PARTS + 1, "synthetic terrain", unit="part", quiet=quiet) as bar:
        terrain = synthetic_south_pole(size=size, resolution_m=resolution_m, seed=seed,
                                       progress=lambda done, total: bar.set(done))
        write_terrain(out_path, terrain)
        bar.advance()
    click.echo(str(out_path))


#: sitesel's own warnings printed by this command so far, for its report and manifest (those of
#: other libraries, e.g. Dask's about graph sizes, depend on how the run was executed, not on what it found).
_WARNED: list[str] = []


def _show_warning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"sitesel: warning: {message}", err=True)
    if issubclass(category, SiteselWarning):
        _WARNED.append(str(message))


def main(argv=None):
    """Console entry point: turns input errors into one line and a non-zero exit."""
    shown_before = warnings.showwarning
    warnings.showwarning = _show_warning
    _WARNED.clear()
    try:
        cli.main(args=argv, prog_name="sitesel", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("sitesel: interrupted", err=True)
        sys.exit(130)
    except _NO_ARGS_IS_HELP as exc:  # plain `sitesel`: the help, as click prints it
        exc.show()
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        # one line, as for every input error (click's own form takes four)
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        click.echo(f"sitesel: error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except SiteselError as exc:
        click.echo(f"sitesel: error: {exc}", err=True)
        sys.exit(EXIT_INPUT_ERROR)
    except PermissionError as exc:
        click.echo(f"sitesel: error: permission denied: {exc.filename} (choose a writable location)", err=True)
        sys.exit(EXIT_INPUT_ERROR)
    except Exception as exc:  # noqa: BLE001 - last line of defence: no traceback for users
        if os.environ.get("SITESEL_DEBUG"):
            raise
        click.echo(f"sitesel: internal error: {type(exc).__name__}: {exc} (set SITESEL_DEBUG=1 for a traceback)",
                   err=True)
        sys.exit(1)
    finally:
        warnings.showwarning = shown_before


#: click (8.2 and later) raises this usage error, whose message is the whole help, for a group run without a command.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


if __name__ == "__main__":
    main()
