"""Horizon benchmarks: sweep throughput, accuracy and speed against the ray-march reference.

One command (about 15-20 minutes on 2 cores)::

    python benchmarks/bench_horizon.py            # add --full to time every azimuth of every case

writes ``benchmarks/results/horizon.json`` and ``benchmarks/results/horizon.md``. The same cases
run under pytest-benchmark with
``pytest benchmarks/bench_horizon.py --benchmark-json=benchmarks/results/pytest_horizon.json``.

What is measured (all in one process, same terrain, same pixels):

* sweep throughput, pixel*azimuths per second, for 512^2, 1024^2, 2048^2 DEMs at K = 90, 180,
  360, 720. The sweep's cost per azimuth does not depend on K, so unless ``--full`` is given a
  case is timed on ``SUBSET_K`` = 32 of its K azimuths (the bearings of K = 32) and
  extrapolated to K (the set-up and the first cycle of staged planes counted once, see
  ``time_sweep``); the table says which. The target cases, 2048^2 at K = 360 with and without
  a far field, are always timed on every azimuth.
* the ray-march reference on a random sample of pixels at the same K (its cost per pixel does
  not depend on the other pixels), extrapolated to the full DEM for the speed ratio.
* accuracy of the sweep against the reference on those pixels: RMS, 99th percentile and maximum
  absolute error (degrees), on a rough fractal and on the built-in synthetic terrain. The
  reference is ill-defined where its horizon point lies within 2 pixels of the observer (the
  answer then depends on how the few nearest samples are interpolated) or where it changes by
  more than 2 degrees between neighbouring azimuths (a silhouette edge: a sub-pixel shift of
  the ray changes the answer), or, on a DEM without a far field, where its horizon point lies
  within a pixel of the DEM's outermost pixel centres (the end of the data sets the horizon,
  and the answer depends on where the last half-pixel step falls and on whether the data end
  at those centres or half a pixel beyond); the maximum is also reported without those.
* thread scaling (1 vs 2 threads), peak memory (resident set growth during the call), and a
  2048^2 DEM at K = 360 with a 150 km far field.
* HORAYZON (``horayzon-extpar``, Embree ray tracing on a triangle mesh) on the same DEM and
  pixels as a peer, if it imports.
* the bare sweep (``bare_sweep.py``): the prescribed algorithm with none of sitesel's curvature,
  near ray, far field or output layout, on the 2048^2 DEM of the throughput target. Its rate bounds
  any scalar implementation of this sweep on this machine, and is set against the target.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numba
import numpy as np
import psutil

from bare_sweep import bare_sweep_rate
from sitesel.constants import MOON_RADIUS_M
from sitesel.horizon import bearings_deg, horizon_map, raymarch_with_distance
from sitesel.horizon.sweep import _STAGE
from sitesel.terrain.grid import Grid, xy_to_latlon, xy_to_xyz
from sitesel.terrain.model import Terrain
from sitesel.terrain.synthetic import fractal_heights

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (512, 1024, 2048)
KS = (90, 180, 360, 720)
#: Azimuths timed per case unless --full: two cycles of the sweep's staged copy-out (``_STAGE``
#: planes each), so that the cost per azimuth is taken from the second, whose staging planes are
#: paged in already, as over most of a K = 360 run.
SUBSET_K = 2 * _STAGE
#: The throughput target, pixel*azimuths per second, and its case: always timed on every azimuth.
TARGET_RATE = 5e7
TARGET_CASE = (2048, 360)
RES_M = 20.0
H_OBS = 2.0


# --------------------------------------------------------------------------- terrains


def fractal_terrain(n, seed=1, rms_slope_deg=15.0, res_m=RES_M, centre_y_m=-150e3, beta=2.2):
    """Seeded spectral fractal (amplitude ~ k^-beta) with a given RMS slope, 170 km from the pole."""
    z = fractal_heights(n, res_m, seed, rms_slope_deg, beta)
    grid = Grid.centred((n, n), res_m, 0.0, centre_y_m)
    return Terrain(z.astype(np.float32), grid, {"generator": "fractal", "seed": seed, "rms_slope_deg": rms_slope_deg})


def builtin_terrain(n):
    """The built-in synthetic south pole (if present), n^2 pixels at 170 m."""
    try:
        from sitesel.terrain.synthetic import synthetic_south_pole
    except ImportError:
        return None
    return synthetic_south_pole(size=n, resolution_m=170.0, seed=0)


# --------------------------------------------------------------------------- measurement helpers


class PeakRSS:
    """Peak growth of the resident set during a block, sampled every 5 ms."""

    def __enter__(self):
        self.proc = psutil.Process()
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self.stop = False
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while not self.stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self.mib = (self.peak - self.base) / 2**20


def time_sweep(terrain, k, full, far_field=None):
    """Seconds for the sweep at K azimuths, peak MiB, azimuths timed.

    Unless ``full``, the sweep runs at SUBSET_K azimuths and is extrapolated to K: the
    set-up and the first ``_STAGE`` azimuths (whose staging planes are written for the
    first time) once, plus K - ``_STAGE`` times the mean cost of the next ``_STAGE``
    (their copy-out included). Timing the first cycle alone overstated the 150 km far-field
    case by 22% (149 s from 15 azimuths, 122 s timed on all 360); scaling the whole time by
    K / SUBSET_K would also count the set-up (about 1 s at 2048^2) K / SUBSET_K times.
    """
    k_run = k if full else SUBSET_K
    done = []
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        horizon_map(terrain, k_run, H_OBS, far_field=far_field, progress=lambda i, n: done.append(time.perf_counter()))
        dt = time.perf_counter() - t0
    if k_run < k:
        first = done[_STAGE - 1]
        dt = (first - t0) + (k - _STAGE) * (done[-1] - first) / (k_run - _STAGE)
    return dt, mem.mib, k_run


def sample_pixels(terrain, n_pixels, margin, seed=0):
    rng = np.random.default_rng(seed)
    nr, nc = terrain.shape
    rows = rng.integers(margin, nr - margin, n_pixels)
    cols = rng.integers(margin, nc - margin, n_pixels)
    return rows, cols


def reference_at(terrain, k, rows, cols, far_field=None):
    """Ray-march reference at sample pixels: horizon (n, K), distance (n, K), seconds."""
    hz = np.empty((len(rows), k))
    dist = np.empty_like(hz)
    t0 = time.perf_counter()
    for i, (r, c) in enumerate(zip(rows, cols)):
        h, d = raymarch_with_distance(terrain, k, H_OBS, 1e9, slice(r, r + 1), slice(c, c + 1), far_field)
        hz[i], dist[i] = h[0, 0], d[0, 0]
    return hz, dist, time.perf_counter() - t0


def sweep_at(terrain, k, rows, cols, far_field=None):
    """Sweep horizons at the sample pixels (computed on the whole DEM, as in production)."""
    full = horizon_map(terrain, k, H_OBS, far_field=far_field)
    return full[rows, cols].astype(np.float64)


def at_data_edge(ref_dist, res_m, rows, cols, shape):
    """True where the reference's horizon point (at ``ref_dist`` m along each grid bearing from
    pixel (rows, cols)) lies within a pixel of the outermost pixel centres of a DEM of ``shape``."""
    bearing = np.radians(bearings_deg(ref_dist.shape[1]))
    r = rows[:, None] - ref_dist / res_m * np.cos(bearing)
    c = cols[:, None] + ref_dist / res_m * np.sin(bearing)
    inside_px = np.minimum(np.minimum(r, shape[0] - 1 - r), np.minimum(c, shape[1] - 1 - c))
    return (ref_dist > 0) & (inside_px < 1.0)


def accuracy(fast, ref, ref_dist, res_m, edge=None):
    """Errors of ``fast`` against the reference (n, K). ``edge`` (n, K bool, optional) marks
    where the reference's horizon point is at the edge of the data (see ``at_data_edge``)."""
    err = np.abs(fast - ref)
    jump = np.maximum(np.abs(ref - np.roll(ref, 1, axis=1)), np.abs(ref - np.roll(ref, -1, axis=1)))
    ill = ((ref_dist > 0) & (ref_dist < 2.0 * res_m)) | (jump > 2.0)
    if edge is not None:
        ill |= edge
    return {
        "rms_deg": float(np.sqrt(np.mean(err**2))),
        "p99_deg": float(np.percentile(err, 99)),
        "max_deg": float(err.max()),
        "max_well_defined_deg": float(err[~ill].max()) if np.any(~ill) else None,
        "fraction_over_0p5_deg": float(np.mean(err > 0.5)),
        "fraction_over_0p5_deg_well_defined": float(np.mean(err[~ill] > 0.5)) if np.any(~ill) else None,
        "ill_defined_fraction": float(ill.mean()),
        "bias_deg": float(np.mean(fast - ref)),
    }


# --------------------------------------------------------------------------- HORAYZON peer


def horayzon_peer(terrain, k, rows, cols):
    """Horizons from horayzon-extpar (Embree) at sample pixels, on our grid bearings, and seconds."""
    try:
        import horayzon_extpar as hz
    except Exception as exc:  # noqa: BLE001 - report why the peer is missing
        return None, f"horayzon-extpar not importable: {exc!r}"
    nr, nc = terrain.shape
    x, y = terrain.grid.xy()
    z = terrain.height_m.astype(np.float64)
    vert = xy_to_xyz(x, y, z).reshape(-1, 3)
    centre = vert.mean(axis=0)
    idx = np.arange(nr * nc, dtype=np.uint32).reshape(nr, nc)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([b, c, d], -1).reshape(-1, 3)])
    # vertices relative to a local origin keep float32 precise; winding must point away from the centre
    vert32 = (vert - centre).astype(np.float32)
    n0 = np.cross(vert[faces[0, 1]] - vert[faces[0, 0]], vert[faces[0, 2]] - vert[faces[0, 0]])
    if n0 @ vert[faces[0, 0]] < 0:
        faces = faces[:, [0, 2, 1]].copy()
    t0 = time.perf_counter()
    ter = hz.Terrain()
    ter.initialise(vert32, np.ascontiguousarray(faces), (-centre).astype(np.float32),
                   (np.array([0.0, 0.0, MOON_RADIUS_M]) - centre).astype(np.float32))
    coords = np.ascontiguousarray(xy_to_xyz(x[rows, cols], y[rows, cols], z[rows, cols]) - centre)
    extent = max(nr, nc) * terrain.resolution_m * 1.5
    local, _ = ter.horizon_arbitrary(coords, k, float(min(max(extent, 1000.0), 800e3)), H_OBS, 0.01, -5.0)
    dt = time.perf_counter() - t0
    # HORAYZON azimuths are local (clockwise from north); ours are grid bearings = local + lon
    _, lon = xy_to_latlon(x[rows, cols], y[rows, cols])
    step = 360.0 / k
    out = np.empty_like(local, dtype=np.float64)
    for i in range(len(rows)):
        local_az = (bearings_deg(k) - lon[i]) % 360.0
        ext = np.concatenate([local[i], local[i, :1]])
        out[i] = np.interp(local_az, np.arange(k + 1) * step, ext)
    # HORAYZON reports terrain falling away below the horizontal (down to elev_angle_min); the
    # sitesel convention floors the horizon at the bare-sphere dip of the observer (DEM edge
    # continues as a sphere), so compare on that convention
    zg = z[rows, cols]
    dip = -np.degrees(np.arccos((MOON_RADIUS_M + zg) / (MOON_RADIUS_M + zg + H_OBS)))
    return (np.maximum(out, dip[:, None]), dt), None


# --------------------------------------------------------------------------- main study


def run(full=False, quick=False):
    sizes = (512,) if quick else SIZES
    ks = (90,) if quick else KS
    n_sample = 60 if quick else 150
    out = {
        "machine": {"cpus": os.cpu_count(), "numba_threads": numba.get_num_threads(), "python": sys.version.split()[0],
                    "numba": numba.__version__, "platform": platform.platform(),
                    "load_average": os.getloadavg()},
        "settings": {"observer_height_m": H_OBS, "resolution_m": RES_M, "subset_k": None if full else SUBSET_K,
                     "reference_sample_pixels": n_sample},
        "throughput": [], "accuracy": [], "threads": [], "far_field": None, "horayzon": None, "bare_sweep": None,
    }
    horizon_map(fractal_terrain(64), 4, H_OBS)  # load compiled kernels outside the timings
    horizon_map(fractal_terrain(64), 4, H_OBS, method="raymarch", rows=slice(0, 1), cols=slice(0, 1))

    for n in sizes:
        terrain = fractal_terrain(n)
        rows, cols = sample_pixels(terrain, n_sample, margin=0, seed=n)
        for k in ks:
            sweep_s, mib, k_run = time_sweep(terrain, k, full or (n, k) == TARGET_CASE)
            ref_rows, ref_cols = rows[: max(8, n_sample // (k // 90))], cols[: max(8, n_sample // (k // 90))]
            _, _, ref_s = reference_at(terrain, k, ref_rows, ref_cols)
            ref_rate = len(ref_rows) * k / ref_s
            rate = n * n * k / sweep_s
            row = {"size": n, "k": k, "sweep_s": sweep_s, "timed_azimuths": k_run,
                   "sweep_pixel_azimuths_per_s": rate, "peak_rss_growth_mib": mib,
                   "output_mib": n * n * k * 4 / 2**20,
                   "reference_pixels": len(ref_rows), "reference_pixel_azimuths_per_s": ref_rate,
                   "reference_extrapolated_s": n * n * k / ref_rate, "speed_ratio": rate / ref_rate}
            out["throughput"].append(row)
            print(f"throughput {n}^2 K={k}: {rate:.3g} px*az/s ({sweep_s:.1f} s), ref {ref_rate:.3g}, "
                  f"ratio {rate / ref_rate:.0f}x, +{mib:.0f} MiB", flush=True)

    # the least any sweep can cost here, on the target's DEM
    n, k = TARGET_CASE
    if n in sizes:
        rate, per_azimuth_s = bare_sweep_rate(fractal_terrain(n).height_m, RES_M)
        target = next(t for t in out["throughput"] if (t["size"], t["k"]) == TARGET_CASE)
        out["bare_sweep"] = {"size": n, "pixel_azimuths_per_s": rate, "seconds_per_azimuth": per_azimuth_s,
                             "target_seconds_per_azimuth": n * n / TARGET_RATE,
                             "sitesel_seconds_per_azimuth": target["sweep_s"] / k}
        print(f"bare sweep {n}^2: {rate:.3g} px*az/s ({1e3 * per_azimuth_s:.1f} ms per azimuth; the "
              f"{TARGET_RATE:.0e} target allows {1e3 * n * n / TARGET_RATE:.1f})", flush=True)

    # accuracy on a rough fractal and on the built-in terrain (whole-DEM sweep, sampled reference)
    k_acc = 90 if quick else 180
    cases = [("fractal 15 deg RMS slope, 512^2 at 20 m", fractal_terrain(512, seed=3, rms_slope_deg=15.0)),
             ("fractal 25 deg RMS slope, 512^2 at 20 m", fractal_terrain(512, seed=4, rms_slope_deg=25.0))]
    built = builtin_terrain(512)
    if built is not None:
        cases.append(("built-in synthetic_south_pole 512^2 at 170 m", built))
    for name, terrain in cases:
        margin = 16  # rays from the DEM edge leave it at once; beyond it terrain is unknown
        rows, cols = sample_pixels(terrain, 4 * n_sample, margin, seed=7)
        t0 = time.perf_counter()
        fast = sweep_at(terrain, k_acc, rows, cols)
        sweep_s = time.perf_counter() - t0
        ref, dist, ref_s = reference_at(terrain, k_acc, rows, cols)
        acc = accuracy(fast, ref, dist, terrain.resolution_m,
                       edge=at_data_edge(dist, terrain.resolution_m, rows, cols, terrain.shape))
        n_px = terrain.shape[0] * terrain.shape[1]
        acc.update({"terrain": name, "k": k_acc, "pixels_compared": len(rows),
                    "speed_ratio": (n_px * k_acc / sweep_s) / (len(rows) * k_acc / ref_s)})
        out["accuracy"].append(acc)
        print(f"accuracy {name}: RMS {acc['rms_deg']:.4f}, p99 {acc['p99_deg']:.3f}, max {acc['max_deg']:.3f} "
              f"(well-defined {acc['max_well_defined_deg']:.3f}, ill-defined {acc['ill_defined_fraction']:.2%})",
              flush=True)
        if out["horayzon"] is None and name.startswith("fractal 15"):
            peer, why = horayzon_peer(terrain, k_acc, rows, cols)
            if peer is None:
                out["horayzon"] = {"available": False, "why": why}
            else:
                hz_vals, hz_s = peer
                hacc = accuracy(hz_vals, ref, dist, terrain.resolution_m)
                hacc.update({"available": True, "terrain": name, "k": k_acc, "pixels": len(rows),
                             "seconds": hz_s, "pixel_azimuths_per_s": len(rows) * k_acc / hz_s,
                             "note": "horizon_arbitrary, accuracy 0.01 deg, interpolated from local azimuths, floored at the dip"})
                out["horayzon"] = hacc
            print(f"horayzon: {out['horayzon']}", flush=True)

    # thread scaling
    terrain = fractal_terrain(1024)
    for threads in (1, 2):
        numba.set_num_threads(threads)
        sweep_s, _, k_run = time_sweep(terrain, 360, False)
        out["threads"].append({"threads": threads, "size": 1024, "k": 360,
                               "pixel_azimuths_per_s": 1024 * 1024 * 360 / sweep_s})
        print(f"threads {threads}: {out['threads'][-1]['pixel_azimuths_per_s']:.3g} px*az/s", flush=True)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)

    # 2048^2 at 20 m (41 km) with a 150 km far field at 400 m
    if not quick:
        far = fractal_terrain(768, seed=11, rms_slope_deg=4.0, res_m=400.0)
        fine = fractal_terrain(2048, seed=12, rms_slope_deg=15.0)
        fine.height_m += _sample_far(far, fine).astype(np.float32)
        sweep_s, mib, k_run = time_sweep(fine, 360, True, far_field=far)
        out["far_field"] = {"size": 2048, "k": 360, "far_field_px": 768, "far_field_res_m": 400.0,
                            "far_extent_km": 768 * 0.4 / 2, "sweep_s": sweep_s, "timed_azimuths": k_run,
                            "peak_rss_growth_mib": mib}
        out["far_field"].update(far_field_accuracy(fine, far, 360 if full else 72))
        print(f"far field: {out['far_field']}", flush=True)
    return out


def far_field_accuracy(fine, far, k, seed=3):
    """Sweep vs reference with the far field, on 10 random pixels of each of three 48 px
    windows: at the top edge (rays leave the fine DEM at once), in the middle and in a corner."""
    rng = np.random.default_rng(seed)
    fast, ref, dist = [], [], []
    for r0, c0 in ((0, 1000), (1000, 2000), (1990, 30)):
        rows = slice(r0, min(r0 + 48, fine.shape[0]))
        cols = slice(c0, min(c0 + 48, fine.shape[1]))
        hz = horizon_map(fine, k, H_OBS, rows=rows, cols=cols, far_field=far)
        rr = rng.integers(0, hz.shape[0], 10)
        cc = rng.integers(0, hz.shape[1], 10)
        h, d, _ = reference_at(fine, k, rr + rows.start, cc + cols.start, far_field=far)
        fast.append(hz[rr, cc].astype(np.float64))
        ref.append(h)
        dist.append(d)
    acc = accuracy(np.concatenate(fast), np.concatenate(ref), np.concatenate(dist), fine.resolution_m)
    return {f"accuracy_{key}": value for key, value in acc.items()} | {"accuracy_k": k, "accuracy_pixels": 30}


def _sample_far(far, fine):
    """Bilinear far-field heights at the fine pixel centres (so the fine DEM continues the far one)."""
    x, y = fine.grid.xy()
    r, c = far.grid.rowcol(x, y)
    r0 = np.clip(np.floor(r).astype(int), 0, far.shape[0] - 2)
    c0 = np.clip(np.floor(c).astype(int), 0, far.shape[1] - 2)
    fr, fc = r - r0, c - c0
    z = far.height_m.astype(np.float64)
    return ((1 - fr) * (1 - fc) * z[r0, c0] + (1 - fr) * fc * z[r0, c0 + 1]
            + fr * (1 - fc) * z[r0 + 1, c0] + fr * fc * z[r0 + 1, c0 + 1])


def table(res):
    machine = (f"machine: {res['machine']['cpus']} CPUs, numba {res['machine']['numba']}, "
               f"load average at start {res['machine']['load_average'][0]:.1f}")
    header = ("| DEM | K | sweep s | px*az/s | timed azimuths | reference px*az/s (sampled px) | speed ratio | "
              "peak RSS growth MiB |")
    lines = ["# Horizon benchmark", "", machine, "", header, "|---|---|---|---|---|---|---|---|"]
    for t in res["throughput"]:
        lines.append(f"| {t['size']}^2 | {t['k']} | {t['sweep_s']:.1f} | {t['sweep_pixel_azimuths_per_s']:.3g} | "
                     f"{t['timed_azimuths']} | {t['reference_pixel_azimuths_per_s']:.3g} ({t['reference_pixels']}) | "
                     f"{t['speed_ratio']:.0f}x | {t['peak_rss_growth_mib']:.0f} |")
    header = ("| terrain | K | RMS deg | p99 deg | max deg | max well-defined deg | well-defined > 0.5 deg | "
              "ill-defined | speed ratio |")
    lines += ["", header, "|---|---|---|---|---|---|---|---|---|"]
    for a in res["accuracy"]:
        lines.append(f"| {a['terrain']} | {a['k']} | {a['rms_deg']:.4f} | {a['p99_deg']:.3f} | {a['max_deg']:.3f} | "
                     f"{a['max_well_defined_deg']:.3f} | {a['fraction_over_0p5_deg_well_defined']:.3%} | "
                     f"{a['ill_defined_fraction']:.2%} | {a['speed_ratio']:.0f}x |")
    lines += ["", "| threads | px*az/s (1024^2, K=360) |", "|---|---|"]
    lines += [f"| {t['threads']} | {t['pixel_azimuths_per_s']:.3g} |" for t in res["threads"]]
    if res["far_field"]:
        f = res["far_field"]
        lines += ["", (f"2048^2 at 20 m, K=360, far field {f['far_field_px']}^2 at {f['far_field_res_m']:.0f} m "
                       f"(+/-{f['far_extent_km']:.0f} km): {f['sweep_s']:.1f} s (timed on {f['timed_azimuths']} "
                       f"azimuths), peak RSS growth {f['peak_rss_growth_mib']:.0f} MiB; against the reference on "
                       f"{f['accuracy_pixels']} pixels at K={f['accuracy_k']}: RMS {f['accuracy_rms_deg']:.4f}, "
                       f"p99 {f['accuracy_p99_deg']:.3f}, max {f['accuracy_max_deg']:.3f} deg")]
    b = res.get("bare_sweep")
    if b:
        lines += ["", (f"Bare sweep ({b['size']}^2, flat, hulls and two tangent queries per observer only, see "
                       f"bare_sweep.py): {b['pixel_azimuths_per_s']:.3g} px*az/s, {1e3 * b['seconds_per_azimuth']:.1f} ms "
                       f"per azimuth, against {1e3 * b['target_seconds_per_azimuth']:.1f} ms that the {TARGET_RATE:.0e} target allows "
                       f"and {1e3 * b['sitesel_seconds_per_azimuth']:.1f} ms that sitesel's sweep takes")]
    h = res["horayzon"]
    if h:
        if h.get("available"):
            lines += ["", (f"HORAYZON (horayzon-extpar) on {h['terrain']}, {h['pixels']} pixels, K={h['k']}: "
                           f"{h['pixel_azimuths_per_s']:.3g} px*az/s, RMS {h['rms_deg']:.4f}, p99 {h['p99_deg']:.3f}, "
                           f"max {h['max_deg']:.3f} deg against the same reference")]
        else:
            lines += ["", f"HORAYZON: not run ({h['why']})"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="time every azimuth of every case (slow)")
    parser.add_argument("--quick", action="store_true", help="512^2, K=90 only (a smoke run)")
    args = parser.parse_args(argv)
    res = run(full=args.full, quick=args.quick)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "horizon.json").write_text(json.dumps(res, indent=2))
    text = table(res)
    (RESULTS / "horizon.md").write_text(text)
    print(text)


# --------------------------------------------------------------------------- pytest-benchmark entry points

try:
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

if pytest is not None:

    @pytest.mark.parametrize("size", SIZES)
    @pytest.mark.parametrize("k", KS)
    def test_sweep_throughput(benchmark, size, k):
        """Sweep on the whole DEM, timed on SUBSET_K azimuths; extra_info has the extrapolated rate."""
        terrain = fractal_terrain(size)
        horizon_map(terrain, 4, H_OBS, rows=slice(0, 2), cols=slice(0, 2))
        benchmark.pedantic(horizon_map, args=(terrain, SUBSET_K, H_OBS), rounds=1, iterations=1)
        benchmark.extra_info["pixel_azimuths_per_s"] = size * size * SUBSET_K / benchmark.stats.stats.mean
        benchmark.extra_info["note"] = f"timed on {SUBSET_K} azimuths; cost per azimuth is independent of K={k}"

    def test_reference_throughput(benchmark):
        terrain = fractal_terrain(512)
        benchmark.pedantic(raymarch_with_distance, args=(terrain, 90, H_OBS, 1e9, slice(256, 258), slice(0, 16)),
                           rounds=1, iterations=1)
        benchmark.extra_info["pixel_azimuths_per_s"] = 32 * 90 / benchmark.stats.stats.mean


if __name__ == "__main__":
    main()
