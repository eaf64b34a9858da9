"""Window-read throughput and peak memory of sitesel.terrain.io.

Writes a LOLA-style float32 PDS3 product (IMG+LBL) and the same heights as a
tiled GeoTIFF, then, each in a fresh subprocess so peak resident memory
(VmHWM) belongs to one measurement:

* ``numpy whole``: ``np.fromfile`` of the whole IMG (the reference);
* ``pds3 window`` / ``geotiff window``: ``read_terrain`` of a centred window
  (first read in the process, which parses the label and hashes the file),
  then of a neighbouring window ("next": label and checksum cached).

Throughput is MB of window (or file) delivered per second, with the page cache
warm (every case is run once before it is timed; the fastest of --repeat runs is shown). ``--sparse N`` instead makes
an N x N sparse file (e.g. 30400, the 3.7 GB products) to check memory only.

Usage: python benchmarks/bench_io.py [--size 8000] [--window 2000] [--sparse 30400]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASE = """
import json, sys, time
import numpy as np
from sitesel.terrain.io import read_terrain
from sitesel.terrain.region import Region
kind, path, half_m, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
t0 = time.perf_counter()
if kind == "numpy":
    a = np.fromfile(path, dtype="<f4").reshape(n, n) * np.float32(1000.0)
    nbytes = a.nbytes
else:
    t = read_terrain(path, Region(x_min_m=-half_m, x_max_m=half_m, y_min_m=-half_m, y_max_m=half_m))
    nbytes = t.height_m.nbytes
dt = time.perf_counter() - t0
repeat = None
if kind == "window":
    # a second, neighbouring window in the same process: label and checksum are cached
    t0 = time.perf_counter()
    read_terrain(path, Region(x_min_m=-half_m, x_max_m=half_m, y_min_m=-3 * half_m, y_max_m=-half_m))
    repeat = time.perf_counter() - t0
# VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork + exec.
hwm_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"seconds": dt, "repeat_seconds": repeat, "bytes": nbytes, "peak_rss_bytes": hwm_kb * 1024}))
"""

LABEL = """PDS_VERSION_ID = PDS3
RECORD_TYPE = FIXED_LENGTH
RECORD_BYTES = {rb}
FILE_RECORDS = {n}
^IMAGE = "{name}"
OBJECT = IMAGE
  LINES = {n}
  LINE_SAMPLES = {n}
  SAMPLE_TYPE = PC_REAL
  SAMPLE_BITS = 32
  UNIT = KILOMETER
  SCALING_FACTOR = 1
  OFFSET = 0
END_OBJECT = IMAGE
OBJECT = IMAGE_MAP_PROJECTION
  MAP_PROJECTION_TYPE = "POLAR STEREOGRAPHIC"
  A_AXIS_RADIUS = 1737.4 <km>
  CENTER_LATITUDE = -90 <deg>
  CENTER_LONGITUDE = 0 <deg>
  MAP_SCALE = {res} <m/pix>
  LINE_PROJECTION_OFFSET = {off} <pix>
  SAMPLE_PROJECTION_OFFSET = {off} <pix>
END_OBJECT = IMAGE_MAP_PROJECTION
END
"""


def make_product(folder: Path, n: int, res_m: float, sparse: bool) -> tuple[Path, Path | None]:
    img = folder / "BENCH.IMG"
    (folder / "BENCH.LBL").write_text(LABEL.format(rb=4 * n, n=n, name=img.name, res=res_m, off=n / 2 - 0.5))
    if sparse:
        with open(img, "wb") as f:
            f.truncate(n * n * 4)
        return img, None
    rng = np.random.default_rng(0)
    rows_per_block = max(1, (64 << 20) // (4 * n))
    with open(img, "wb") as f:
        for r0 in range(0, n, rows_per_block):
            r = min(rows_per_block, n - r0)
            f.write((rng.standard_normal((r, n)) * 1.5).astype("<f4").tobytes())
    import rasterio

    from sitesel.terrain.grid import Grid
    from sitesel.terrain.io import read_terrain

    tif = folder / "bench.tif"
    t = read_terrain(img)
    grid = Grid.centred((n, n), res_m)
    with rasterio.open(tif, "w", driver="GTiff", dtype="float32", count=1, width=n, height=n,
                       crs="+proj=stere +lat_0=-90 +lon_0=0 +k=1 +x_0=0 +y_0=0 +R=1737400 +units=m +no_defs",
                       transform=grid.transform, tiled=True, blockxsize=512, blockysize=512) as ds:
        ds.write(t.height_m, 1)
    del t
    return img, tif


def run_case(kind: str, path: Path, half_m: float, n: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CASE, kind, str(path), str(half_m), str(n)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8000, help="pixels per side of the test product")
    ap.add_argument("--window", type=int, default=2000, help="window pixels per side")
    ap.add_argument("--sparse", type=int, default=0, help="use an N x N sparse file instead (memory check only)")
    ap.add_argument("--resolution-m", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per case (the fastest is reported)")
    args = ap.parse_args()
    n = args.sparse or args.size
    half_m = args.window * args.resolution_m / 2
    with tempfile.TemporaryDirectory(prefix="sitesel_bench_io_") as tmp:
        t0 = time.perf_counter()
        img, tif = make_product(Path(tmp), n, args.resolution_m, bool(args.sparse))
        print(f"product: {n} x {n} float32 = {n * n * 4 / 1e6:.0f} MB ({time.perf_counter() - t0:.1f} s to write)")
        cases = [("window", "pds3 window", img)]
        if tif is not None:
            cases += [("window", "geotiff window", tif)]
            if n * n * 4 < 2 << 30:
                cases.insert(0, ("numpy", "numpy whole", img))
        print(f"{'case':<16}{'MB':>8}{'s':>8}{'MB/s':>8}{'next s':>8}{'MB/s':>8}{'peak RSS MB':>13}")
        for kind, label, path in cases:
            run_case(kind, path, half_m, n)  # warm the page cache
            runs = [run_case(kind, path, half_m, n) for _ in range(args.repeat)]
            seconds = min(r["seconds"] for r in runs)
            mb = runs[0]["bytes"] / 1e6
            nxt = f"{'-':>8}{'-':>8}"
            if runs[0]["repeat_seconds"] is not None:
                rs = min(r["repeat_seconds"] for r in runs)
                nxt = f"{rs:>8.3f}{mb / rs:>8.0f}"
            print(f"{label:<16}{mb:>8.1f}{seconds:>8.3f}{mb / seconds:>8.0f}{nxt}"
                  f"{max(r['peak_rss_bytes'] for r in runs) / 1e6:>13.0f}")


if __name__ == "__main__":
    main()
