"""Figures: layer heatmaps on the polar map and horizon-mask plots.

Figures are built on the object-oriented matplotlib API with the Agg canvas,
so no pyplot global state is created or changed. PNGs carry no software or
time metadata: identical inputs give byte-identical files, written atomically.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib import colormaps
from matplotlib import dates as mdates
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .outputs import ELLIPSE_COLUMNS, ellipse_xy_m, write_bytes
from .terrain.grid import Grid, latlon_to_xy, wrap_longitude_deg, xy_to_latlon

#: Output resolution, dots per inch.
DPI = 150

#: Longest side, in pixels, of a layer as drawn (larger layers are subsampled; the map is ~900 px wide).
MAX_DRAWN_PX = 1000

#: Most Sun/Earth samples drawn per body (longer series are subsampled evenly).
MAX_TRACK_POINTS = 20000

_PARALLEL_STEPS_DEG = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
_MERIDIAN_STEPS_DEG = (1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 45.0)
_LABEL_STYLE = {
    "fontsize": 7,
    "color": "black",
    "zorder": 7,
    "bbox": {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.75},
}
_NODATA_GREY = "0.6"
#: Darkest multiplier of the hillshade blend (1 - this is the shading depth).
_SHADE_FLOOR = 0.55
_HALO = [patheffects.withStroke(linewidth=2.2, foreground="black")]


def _new_figure(width_in, height_in) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return write_bytes(path, buffer.getvalue())


# --------------------------------------------------------------------------- heatmap


def hillshade(height_m, resolution_m, azimuth_deg=315.0, altitude_deg=45.0):
    """Lambertian shading in [0, 1] of a height grid (rows toward -y), NaN where heights are NaN.

    The light comes from grid bearing ``azimuth_deg`` (clockwise from +y) at
    ``altitude_deg`` above the map plane.
    """
    h = np.asarray(height_m, dtype=np.float64)
    if min(h.shape) < 2:  # np.gradient needs two pixels a side: a map one pixel wide is shaded flat
        return np.where(np.isfinite(h), np.sin(np.radians(altitude_deg)), np.nan)
    dz_drow, dz_dx = np.gradient(h, resolution_m)
    dz_dy = -dz_drow  # rows run toward -y
    az, alt = np.radians(azimuth_deg), np.radians(altitude_deg)
    light = (np.sin(az) * np.cos(alt), np.cos(az) * np.cos(alt), np.sin(alt))
    shade = (-dz_dx * light[0] - dz_dy * light[1] + light[2]) / np.sqrt(1.0 + dz_dx**2 + dz_dy**2)
    return np.clip(shade, 0.0, 1.0)


def _pick_step(span, steps, max_lines):
    """The finest step from ``steps`` giving at most ``max_lines`` lines over ``span``."""
    for step in steps:
        if span / step <= max_lines:
            return step
    return steps[-1]


def _levels(lo, hi, step):
    return np.arange(math.ceil(lo / step) * step, hi + 1e-9, step)


def _lat_label(lat):
    return f"{abs(lat):g}°S" if lat < 0 else f"{lat:g}°N"


def point_label(lat_deg, lon_deg, decimals=3) -> str:
    """A point's latitude and longitude for a title, with hemisphere letters: "89.538 S 151.422 W"."""
    lon = float(wrap_longitude_deg(lon_deg))
    return (f"{abs(lat_deg):.{decimals}f} {'S' if lat_deg < 0 else 'N'} "
            f"{abs(lon):.{decimals}f} {'W' if lon < 0 else 'E'}")


def _lon_label(lon):
    lon = float(wrap_longitude_deg(lon))
    if lon == 0.0 or lon == -180.0:
        return f"{abs(lon):g}°"
    return f"{abs(lon):g}°{'E' if lon > 0 else 'W'}"


def _frame_exit(bounds_km, direction):
    """Where the ray from the pole (map origin) along ``direction`` leaves the frame, or None.

    Returns (x_km, y_km, side) for the farthest crossing with the frame.
    """
    left, bottom, right, top = bounds_km
    dx, dy = direction
    best = None
    for side, coord, axis in (("left", left, 0), ("right", right, 0), ("bottom", bottom, 1), ("top", top, 1)):
        d = dx if axis == 0 else dy
        if abs(d) < 1e-12:
            continue
        t = coord / d
        x, y = t * dx, t * dy
        on_frame = left - 1e-9 <= x <= right + 1e-9 and bottom - 1e-9 <= y <= top + 1e-9
        if t > 0 and on_frame and (best is None or t > best[0]):
            best = (t, x, y, side)
    return None if best is None else best[1:]


_SIDE_ANCHOR = {
    "left": ("left", "center", (3, 0)),
    "right": ("right", "center", (-3, 0)),
    "bottom": ("center", "bottom", (0, 3)),
    "top": ("center", "top", (0, -3)),
}


def _graticule(ax, grid: Grid, n=300):
    """Draw parallels and meridians by contouring lat/lon grids; return label candidates.

    Candidates are (x_km, y_km, text, ha, va, offset_points): parallels along
    a ray between two meridians, meridians where they leave the frame.
    """
    left, bottom, right, top = grid.bounds_m
    xx, yy = np.meshgrid(np.linspace(left, right, n), np.linspace(bottom, top, n))
    lat, lon = xy_to_latlon(xx, yy)
    xk, yk = xx / 1e3, yy / 1e3
    pole_in_view = bool(grid.contains(0.0, 0.0))
    _, centre_lon = (float(v) for v in xy_to_latlon((left + right) / 2, (bottom + top) / 2))

    lat_step = _pick_step(np.ptp(lat), _PARALLEL_STEPS_DEG, 15)
    parallels = [p for p in _levels(lat.min(), lat.max(), lat_step) if -90.0 < p < lat.max()]
    if pole_in_view:
        lon_step = 30.0
        meridians = np.arange(-180.0, 180.0, lon_step)
    else:
        relative = wrap_longitude_deg(lon - centre_lon)
        lon_step = _pick_step(np.ptp(relative), _MERIDIAN_STEPS_DEG, 8)
        meridians = _levels(centre_lon + relative.min(), centre_lon + relative.max(), lon_step)

    style = {"colors": "black", "linewidths": 0.6, "linestyles": "solid", "alpha": 0.45, "zorder": 4}
    if parallels:
        ax.contour(xk, yk, lat, levels=parallels, **style)
    for meridian in meridians:
        # contour lon - meridian at 0, masked far from the meridian to avoid the +-180 cut
        offset = wrap_longitude_deg(lon - meridian)
        ax.contour(xk, yk, np.ma.masked_where(np.abs(offset) > 90.0, offset), levels=[0.0], **style)

    bounds_km = (left / 1e3, bottom / 1e3, right / 1e3, top / 1e3)
    if pole_in_view:
        # parallels labelled along the ray half-way between meridians that points to the farthest corner
        far = max(((cx, cy) for cx in (left, right) for cy in (bottom, top)), key=lambda c: math.hypot(*c))
        label_lon = (math.floor(float(xy_to_latlon(*far)[1]) / lon_step) + 0.5) * lon_step
    else:
        label_lon = centre_lon
    candidates = _parallel_labels(bounds_km, parallels, label_lon)
    for meridian in meridians:
        if pole_in_view:
            exit_point = _frame_exit(bounds_km, tuple(float(v) for v in latlon_to_xy(-89.0, meridian)))
        else:
            exit_point = _meridian_frame_crossing(lat, lon, xk, yk, meridian)
        if exit_point is not None:
            ex, ey, side = exit_point
            ha, va, offset = _SIDE_ANCHOR[side]
            candidates.append((ex, ey, _lon_label(meridian), ha, va, offset))
    return candidates


def _parallel_labels(bounds_km, parallels, label_lon):
    """Label candidates where each parallel meets the meridian ``label_lon``, if inside the frame."""
    left, bottom, right, top = bounds_km
    candidates = []
    for parallel in parallels:
        px, py = (float(v) / 1e3 for v in latlon_to_xy(parallel, label_lon))
        if left < px < right and bottom < py < top:
            candidates.append((px, py, _lat_label(parallel), "center", "center", (0, 0)))
    return candidates


def _meridian_frame_crossing(lat, lon, xk, yk, meridian):
    """Frame crossing (x_km, y_km, side) of a meridian farthest from the pole, from the edge samples."""
    best = None
    edges = {
        "bottom": (lat[0, :], lon[0, :], xk[0, :], yk[0, :]),
        "top": (lat[-1, :], lon[-1, :], xk[-1, :], yk[-1, :]),
        "left": (lat[:, 0], lon[:, 0], xk[:, 0], yk[:, 0]),
        "right": (lat[:, -1], lon[:, -1], xk[:, -1], yk[:, -1]),
    }
    for side, (elat, elon, ex, ey) in edges.items():
        offset = wrap_longitude_deg(elon - meridian)
        crossing = np.nonzero((np.sign(offset[:-1]) != np.sign(offset[1:])) & (np.abs(offset[:-1]) < 90.0))[0]
        for i in crossing:
            w = offset[i] / (offset[i] - offset[i + 1])
            candidate = (elat[i] + w * (elat[i + 1] - elat[i]), ex[i] + w * (ex[i + 1] - ex[i]),
                         ey[i] + w * (ey[i + 1] - ey[i]), side)
            if best is None or candidate[0] > best[0]:
                best = candidate
    return None if best is None else best[1:]


def _place_labels(fig, ax, candidates, occupied):
    """Add label candidates in order, skipping any that would overlap a placed one or leave the axes.

    ``occupied`` are display-space boxes to keep clear (site markers). Returns the labels added.
    """
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    placed = list(occupied)
    labels = []
    for x, y, text, ha, va, offset in candidates:
        label = ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", ha=ha, va=va,
                            annotation_clip=True, **_LABEL_STYLE)
        box = label.get_window_extent(renderer).expanded(1.08, 1.15)
        inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        if not inside or any(box.overlaps(other) for other in placed):
            label.remove()
        else:
            placed.append(box)
            labels.append(label)
    return labels


def _draw_sites(ax, sites):
    """Numbered site markers with landing-ellipse outlines; returns the marker texts."""
    texts = []
    for site in sites:
        if all(site.get(c) is not None for c in ELLIPSE_COLUMNS):
            ex, ey = ellipse_xy_m(site["x_m"], site["y_m"], site["lon"], *(site[c] for c in ELLIPSE_COLUMNS))
            ax.fill(np.append(ex, ex[0]) / 1e3, np.append(ey, ey[0]) / 1e3, fill=False, edgecolor="white",
                    linewidth=1.0, path_effects=_HALO, zorder=5)
        xk, yk = site["x_m"] / 1e3, site["y_m"] / 1e3
        ax.plot(xk, yk, "o", markersize=11, markerfacecolor="white", markeredgecolor="black", zorder=6)
        texts.append(ax.text(xk, yk, str(site["rank"]), ha="center", va="center", fontsize=7,
                             fontweight="bold", zorder=8, clip_on=True))
    return texts


def _units_label(units):
    return "dimensionless" if units in ("1", "") else units


def heatmap(path, layer, grid: Grid, *, title, units, cmap="viridis", vmin=None, vmax=None, log=False, sites=None,
            hillshade=None, label=None):
    """Draw a layer on the polar map as a PNG.

    Parameters
    ----------
    path : path-like
        Target ``.png`` (written atomically).
    layer : ndarray, shape ``grid.shape``
        Values to colour; NaN is drawn grey (or shows the hillshade).
    grid : Grid
        Geometry of ``layer``; the axes are map x/y in km.
    title, units : str
        Figure title and colour-bar units (``"1"`` is shown as dimensionless).
    label : str, optional
        The colour bar's label, before its units (default: ``title``).
    cmap, vmin, vmax :
        Colour map and limits (default: the finite data range); values beyond a
        given limit take its colour, and the colour bar shows an arrow.
    log : bool
        Logarithmic colour scale, from the least positive value by default (linear
        if no value is positive).
    sites : list of dict, optional
        Ranked sites (``rank``, ``x_m``, ``y_m``, ``lon`` and the ellipse
        columns), drawn as numbered markers with their landing ellipses.
    hillshade : ndarray, optional
        Heights (metres, same grid) whose shading is drawn under the layer.

    A latitude/longitude graticule is drawn and labelled; labels that would
    overlap a site marker or each other are dropped.
    """
    step = max(1, math.ceil(max(grid.shape) / MAX_DRAWN_PX))
    layer = np.asarray(layer)
    if layer.shape != tuple(grid.shape):
        raise ValueError(f"layer shape {layer.shape} does not match grid shape {tuple(grid.shape)}")
    view = layer[::step, ::step].astype(np.float64)  # subsample first: never copy a full-size layer
    left, bottom, right, top = grid.bounds_m
    extent_km = (left / 1e3, right / 1e3, bottom / 1e3, top / 1e3)
    finite = view[np.isfinite(view) & ((view > 0.0) if log else True)]
    if log and not finite.size:
        # nothing positive to put on a log scale (e.g. no pixel has any night): a linear scale from 0
        log = False
        finite = view[np.isfinite(view)]
    below = vmin is not None and finite.size and finite.min() < vmin
    above = vmax is not None and finite.size and finite.max() > vmax
    vmin = float(finite.min()) if vmin is None and finite.size else (0.0 if vmin is None else vmin)
    vmax = float(finite.max()) if vmax is None and finite.size else (1.0 if vmax is None else vmax)

    rows, cols = grid.shape
    fig = _new_figure(7.5, min(max(5.6 * rows / cols + 1.2, 3.5), 9.0))
    ax = fig.add_subplot()
    if vmax <= vmin:  # a constant layer: a unit-wide scale from its value, not one around it
        vmax = vmin * 10.0 if log else vmin + 1.0
    norm = (LogNorm if log else Normalize)(vmin=vmin, vmax=vmax)
    colours = colormaps[cmap].with_extremes(bad=_NODATA_GREY)
    if hillshade is None:
        image = ax.imshow(view, extent=extent_km, cmap=colours, norm=norm, interpolation="nearest", zorder=2)
    else:
        image = ScalarMappable(norm=norm, cmap=colours)
        ax.imshow(_shaded_rgb(view, norm, colours, _hillshade_view(hillshade, grid, step)), extent=extent_km,
                  interpolation="nearest", zorder=2)
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}
    bar = fig.colorbar(image, ax=ax, shrink=0.9, pad=0.02, extend=extend[bool(below), bool(above)])
    bar.set_label(f"{title if label is None else label} ({_units_label(units)})")
    ax.set_xlim(extent_km[0], extent_km[1])
    ax.set_ylim(extent_km[2], extent_km[3])
    ax.set_aspect("equal")
    ax.set_xlabel("x (km, polar stereographic, toward 90°E)")
    ax.set_ylabel("y (km, toward 0°)")
    ax.set_title(title)

    candidates = _graticule(ax, grid)
    site_texts = _draw_sites(ax, sites or [])
    fig.draw_without_rendering()  # fix the layout so label extents are final (no rasterising)
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()
    occupied = [t.get_window_extent(renderer).expanded(2.2, 2.2) for t in site_texts]
    _place_labels(fig, ax, candidates, occupied)
    return _save(fig, path)


def _shaded_rgb(view, norm, colours, shade):
    """RGB (uint8) of the layer colours darkened by the terrain shading; nodata shows the shading in grey."""
    rgb = colours(norm(np.ma.masked_invalid(view)))[..., :3]
    shade = np.where(np.isfinite(shade), shade, 1.0)[..., None]
    rgb = np.where(np.isfinite(view)[..., None], rgb, 0.75)
    return np.round(255.0 * rgb * (_SHADE_FLOOR + (1.0 - _SHADE_FLOOR) * shade)).astype(np.uint8)


def _hillshade_view(height_m, grid: Grid, step):
    heights = np.asarray(height_m)
    if heights.shape != tuple(grid.shape):
        raise ValueError(f"hillshade shape {heights.shape} does not match grid shape {tuple(grid.shape)}")
    shade = hillshade(heights[::step, ::step], grid.resolution_m * step)
    finite = shade[np.isfinite(shade)]
    if finite.size:
        # stretch to the view's own contrast: gentle terrain would otherwise look flat
        lo, hi = np.percentile(finite, [2.0, 98.0])
        if hi > lo:
            shade = np.clip((shade - lo) / (hi - lo), 0.0, 1.0)
    return shade


# --------------------------------------------------------------------------- horizon mask


def _thin(*arrays, limit=MAX_TRACK_POINTS):
    n = len(arrays[0])
    stride = max(1, math.ceil(n / limit))
    return [np.asarray(a)[::stride] for a in arrays]


def horizon_mask(path, azimuth_deg, horizon_deg, *, sun_az_deg=None, sun_el_deg=None, earth_az_deg=None,
                 earth_el_deg=None, times=None, title=""):
    """Draw a horizon profile with the Sun's and Earth's paths as a PNG.

    Parameters
    ----------
    path : path-like
        Target ``.png`` (written atomically).
    azimuth_deg, horizon_deg : array_like, shape (K,)
        Horizon elevation (degrees) at LOCAL azimuths (degrees clockwise from
        local north), any order; the terrain below it is filled.
    sun_az_deg, sun_el_deg, earth_az_deg, earth_el_deg : array_like, shape (T,), optional
        Topocentric local azimuth and elevation of the Sun's and Earth's centres.
    times : array_like of datetime64 or datetime, shape (T,), optional
        Sample times (UTC); when given the paths are coloured by date.
    title : str
        Figure title.
    """
    order = np.argsort(np.asarray(azimuth_deg, dtype=np.float64) % 360.0)
    az = np.asarray(azimuth_deg, dtype=np.float64)[order] % 360.0
    el = np.asarray(horizon_deg, dtype=np.float64)[order]
    # close the profile across 0/360
    az = np.concatenate([[az[-1] - 360.0], az, [az[0] + 360.0]])
    el = np.concatenate([[el[-1]], el, [el[0]]])

    when = None if times is None else mdates.date2num(np.asarray(times, dtype="datetime64[s]"))
    bodies = []
    for name, b_az, b_el, marker, colour in (
        ("Sun", sun_az_deg, sun_el_deg, "o", "#f0a30a"),
        ("Earth", earth_az_deg, earth_el_deg, "^", "#1f5fbf"),
    ):
        if b_az is not None and b_el is not None:
            arrays = [np.asarray(b_az, dtype=np.float64) % 360.0, np.asarray(b_el, dtype=np.float64)]
            if when is not None:
                arrays.append(when)
            bodies.append((name, marker, colour, _thin(*arrays)))

    values = [el[np.isfinite(el)]] + [b[3][1][np.isfinite(b[3][1])] for b in bodies]
    values = np.concatenate(values) if any(v.size for v in values) else np.zeros(1)
    y_lo, y_hi = math.floor(values.min() - 1.0), math.ceil(values.max() + 1.0)

    fig = _new_figure(9.0, 4.6)
    ax = fig.add_subplot()
    handles = []
    scatter = None
    for name, marker, colour, arrays in bodies:
        kwargs = {"c": arrays[2], "cmap": "viridis"} if when is not None else {"color": colour}
        scatter = ax.scatter(arrays[0], arrays[1], s=4, marker=marker, linewidths=0, zorder=2, **kwargs)
        handles.append(Line2D([], [], linestyle="none", marker=marker, markersize=5,
                              color="0.35" if when is not None else colour, label=f"{name} (centre)"))
    ax.fill_between(az, el, y_lo, color="#8c7b6b", alpha=0.8, linewidth=0, zorder=3)
    ax.plot(az, el, color="#3b2f25", linewidth=1.0, zorder=4)
    handles.insert(0, Line2D([], [], color="#3b2f25", linewidth=4, alpha=0.8, label="terrain horizon"))
    ax.axhline(0.0, color="0.3", linewidth=0.6, linestyle=":", zorder=1)
    if when is not None and scatter is not None:
        bar = fig.colorbar(scatter, ax=ax, pad=0.01)
        locator = mdates.AutoDateLocator()
        bar.ax.yaxis.set_major_locator(locator)
        bar.ax.yaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        bar.set_label("date (UTC)")
    ax.set_xlim(0.0, 360.0)
    ax.set_ylim(y_lo, y_hi)
    ax.set_xticks(np.arange(0, 361, 45))
    ax.set_xticklabels([f"{a}°\n{d}" for a, d in zip(range(0, 361, 45), ["N", "", "E", "", "S", "", "W", "", "N"])])
    ax.set_xlabel("local azimuth (deg, clockwise from local north)")
    ax.set_ylabel("elevation (deg)")
    ax.grid(True, linewidth=0.4, alpha=0.4)
    # legend above the axes so it never hides the skyline or a path
    ax.legend(handles=handles, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=len(handles), fontsize=8,
              frameon=False, borderaxespad=0.2)
    ax.set_title(title, loc="left")
    return _save(fig, path)
