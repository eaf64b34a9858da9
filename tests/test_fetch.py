"""sitesel fetch against a loopback HTTP server with Range support: resume, verification, catalogue."""

from __future__ import annotations

import hashlib
import math
import re
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_io import pds3_label, synthetic_heights

from sitesel.constants import MOON_RADIUS_M
from sitesel.errors import SiteselError
from sitesel.fetch import CATALOGUE_PATH, fetch_product, format_product_table, list_products
from sitesel.terrain.io import read_terrain

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

N = 256  # 128 kB image: more than one 64 kB download chunk


class Files:
    """What the server serves and how it misbehaves; the handler reads it."""

    def __init__(self):
        self.content: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cut_next: dict[str, int] = {}  # path -> bytes to send before dropping the connection once
        self.ranges = True


class RangeHandler(BaseHTTPRequestHandler):
    files: Files

    def log_message(self, *args):
        pass

    def do_GET(self):
        f = self.files
        f.requests.append((self.path, self.headers.get("Range")))
        body = f.content.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start, status = 0, 200
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if m and f.ranges:
            start = int(m.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            status = 206
        part = body[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(part)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        cut = f.cut_next.pop(self.path, None)
        self.wfile.write(part[:cut] if cut is not None else part)
        if cut is not None:
            self.wfile.flush()
            self.close_connection = True


@pytest.fixture
def server():
    files = Files()
    handler = type("Handler", (RangeHandler,), {"files": files})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield files, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def make_product(files: Files, sha256: bool = False):
    """A small LOLA-style int16 product served under img/, and a catalogue describing it."""
    h, grid = synthetic_heights(N)
    image = np.round(h / 0.5).astype("<i2").tobytes()
    label = pds3_label("TINY.IMG", lines=N, samples=N, sample_type="LSB_INTEGER", bits=16, unit="METER",
                       scaling=0.5, offset="1737400.")
    files.content["/img/tiny.img"] = image
    files.content["/img/tiny.lbl"] = label.encode()
    digest = hashlib.sha256(image).hexdigest() if sha256 else ""
    catalogue = f"""
[sources.pds]
base_url = "http://127.0.0.1:9/unused/"

[products.TINY]
source = "pds"
path = "img/tiny.img"
label = "img/tiny.lbl"
format = "PDS3 IMG int16"
pixels = {N}
resolution_m = 20.0
lat_bound_deg = -89.9
size_bytes = {len(image)}
sha256 = "{digest}"
"""
    return h, grid, image, catalogue


@pytest.fixture
def product(server, tmp_path):
    files, url = server
    h, grid, image, catalogue = make_product(files)
    cat = tmp_path / "catalogue.toml"
    cat.write_text(catalogue)
    return SimpleNamespace(files=files, url=url, h=h, grid=grid, image=image, cat=cat)


def test_download_verifies_and_reads(product, tmp_path):
    dest = tmp_path / "dems"
    path = fetch_product("tiny", dest=dest, base_url=product.url, progress=False, catalogue=product.cat)
    assert path.read_bytes() == product.image
    assert sorted(f.name for f in dest.iterdir()) == ["tiny.img", "tiny.lbl"]
    t = read_terrain(path)
    assert t.grid == product.grid
    np.testing.assert_allclose(t.height_m, product.h, atol=1e-6)
    n = len(product.files.requests)
    assert fetch_product("TINY", dest=dest, base_url=product.url, progress=False, catalogue=product.cat) == path
    assert len(product.files.requests) == n  # already there and verified: nothing fetched again


def test_interrupted_download_resumes_with_a_range_request(product, tmp_path):
    dest = tmp_path / "dems"
    product.files.cut_next["/img/tiny.img"] = 100_000
    with pytest.raises(SiteselError, match="interrupted|stopped") as err:
        fetch_product("TINY", dest=dest, base_url=product.url, progress=False, catalogue=product.cat)
    assert "\n" not in str(err.value)
    assert not (dest / "tiny.img").exists()  # nothing that looks complete
    part = dest / "tiny.img.part"
    kept = part.stat().st_size
    assert 0 < kept <= 100_000 and part.read_bytes() == product.image[:kept]
    path = fetch_product("TINY", dest=dest, base_url=product.url, progress=False, catalogue=product.cat)
    assert ("/img/tiny.img", f"bytes={kept}-") in product.files.requests
    assert path.read_bytes() == product.image
    assert not part.exists()


def test_server_without_range_support_restarts_cleanly(product, tmp_path):
    dest = tmp_path / "dems"
    product.files.cut_next["/img/tiny.img"] = 5_000
    product.files.ranges = False
    with pytest.raises(SiteselError):
        fetch_product("TINY", dest=dest, base_url=product.url, progress=False, catalogue=product.cat)
    path = fetch_product("TINY", dest=dest, base_url=product.url, progress=False, catalogue=product.cat)
    assert path.read_bytes() == product.image


def test_checksum_mismatch_removes_the_bad_file(server, tmp_path):
    files, url = server
    _, _, image, catalogue = make_product(files, sha256=True)
    cat = tmp_path / "catalogue.toml"
    cat.write_text(catalogue)
    bad = bytearray(image)
    bad[1234] ^= 0xFF  # same size, one flipped byte
    files.content["/img/tiny.img"] = bytes(bad)
    dest = tmp_path / "dems"
    with pytest.raises(SiteselError, match="checksum mismatch.*removed"):
        fetch_product("TINY", dest=dest, base_url=url, progress=False, catalogue=cat)
    assert sorted(p.name for p in dest.iterdir()) == ["tiny.lbl"]
    files.content["/img/tiny.img"] = image
    assert fetch_product("TINY", dest=dest, base_url=url, progress=False, catalogue=cat).read_bytes() == image


def test_size_mismatch_is_rejected(product, tmp_path):
    product.files.content["/img/tiny.img"] = product.image + b"\0" * 100
    dest = tmp_path / "dems"
    with pytest.raises(SiteselError, match="bytes but .* were expected"):
        fetch_product("TINY", dest=dest, base_url=product.url, progress=False, catalogue=product.cat)
    assert not (dest / "tiny.img").exists() and not (dest / "tiny.img.part").exists()


def test_label_disagreeing_with_catalogue_is_rejected(product, tmp_path):
    product.files.content["/img/tiny.lbl"] = pds3_label(
        "TINY.IMG", lines=N, samples=N, sample_type="PC_REAL", bits=32, unit="KILOMETER", scaling=1.0, offset=0.0
    ).encode()
    with pytest.raises(SiteselError, match="catalogue says"):
        fetch_product("TINY", dest=tmp_path / "d", base_url=product.url, progress=False, catalogue=product.cat)


def test_environment_variable_selects_the_mirror(product, tmp_path, monkeypatch):
    monkeypatch.setenv("SITESEL_BASE_URL", product.url.rstrip("/"))
    path = fetch_product("TINY", dest=tmp_path / "d", progress=False, catalogue=product.cat)
    assert path.read_bytes() == product.image


def test_unknown_product_and_missing_file(product, tmp_path):
    with pytest.raises(SiteselError, match="unknown product 'NOPE'.*TINY"):
        fetch_product("NOPE", dest=tmp_path, base_url=product.url, progress=False, catalogue=product.cat)
    del product.files.content["/img/tiny.img"]
    with pytest.raises(SiteselError, match="HTTP 404"):
        fetch_product("TINY", dest=tmp_path / "d", base_url=product.url, progress=False, catalogue=product.cat)


def test_geotiff_product_that_is_not_a_dem_is_kept_aside(server, tmp_path):
    files, url = server
    import rasterio

    good, bad = tmp_path / "good.tif", tmp_path / "bad.tif"
    h, grid = synthetic_heights(64)
    with rasterio.open(good, "w", driver="GTiff", dtype="float32", count=1, width=64, height=64,
                       crs="IAU_2015:30135", transform=grid.transform) as ds:
        ds.write(h.astype("float32"), 1)
    with rasterio.open(bad, "w", driver="GTiff", dtype="uint8", count=3, width=64, height=64) as ds:
        ds.write(np.zeros((3, 64, 64), "uint8"))
    cat = tmp_path / "cat.toml"
    for name, body in (("GOOD", good.read_bytes()), ("BAD", bad.read_bytes())):
        files.content[f"/LOLA_5mpp/{name}.tif"] = body
        with open(cat, "a") as f:
            f.write(f'[products.{name}]\nsource = "gsfc"\npath = "LOLA_5mpp/{name}.tif"\nformat = "GeoTIFF"\n'
                    f'resolution_m = 20.0\ncoverage = "test"\nsize_bytes = {len(body)}\n')
    dest = tmp_path / "dems"
    path = fetch_product("GOOD", dest=dest, base_url=url, progress=False, catalogue=cat)
    np.testing.assert_allclose(read_terrain(path).height_m, h, atol=1e-3)
    with pytest.raises(SiteselError, match="not a DEM.*kept aside as BAD.tif.corrupt"):
        fetch_product("BAD", dest=dest, base_url=url, progress=False, catalogue=cat)
    assert not (dest / "BAD.tif").exists() and (dest / "BAD.tif.corrupt").exists()


# --------------------------------------------------------------------------- the shipped catalogue


DESIGN_PRODUCTS = {  # DESIGN.md section 6: name -> (pixels per side, m/px, latitude bound)
    "LDEM_875S_5M": (30336, 5, -87.5),
    "LDEM_85S_10M": (30336, 10, -85),
    "LDEM_85S_20M": (15168, 20, -85),
    "LDEM_80S_20M": (30400, 20, -80),
    "LDEM_80S_40M": (15200, 40, -80),
    "LDEM_80S_80M": (7600, 80, -80),
    "LDEM_75S_120M": (7624, 120, -75),
    "LDEM_75S_240M": (3812, 240, -75),
}


def test_catalogue_has_every_design_product_with_consistent_numbers():
    products = {p["name"]: p for p in list_products()}
    for name, (pixels, res, lat) in DESIGN_PRODUCTS.items():
        for variant, nbytes in ((name, 2), (name + "_FLOAT", 4)):
            p = products[variant]
            assert (p["pixels"], p["resolution_m"], p["lat_bound_deg"]) == (pixels, res, lat)
            assert p["size_bytes"] == pixels * pixels * nbytes
            assert p["url"].startswith("https://") and p["label_url"].endswith(".lbl")
            # the square reaches the latitude bound on its axes: half-width = 2 R tan((90 - |lat|) / 2)
            half_m = 2 * MOON_RADIUS_M * math.tan(math.radians(90 - abs(lat)) / 2)
            assert abs(pixels * res / 2 - half_m) < 5 * res
    assert {"LDEM_80S_20MPP_ADJ", "SITE01_5M", "SITE04_5M", "SITE07_5M", "SITE11_5M"} <= set(products)
    with open(CATALOGUE_PATH, "rb") as f:
        raw = tomllib.load(f)
    assert all(p["source"] in raw["sources"] for p in raw["products"].values())


def test_product_table():
    table = format_product_table(list_products())
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["product", "m/px", "coverage", "size"]
    row = next(line for line in lines if line.startswith("LDEM_80S_20M "))
    assert "80-90 S" in row and "1.85 GB" in row


def test_catalogue_ships_inside_the_package():
    """The catalogue is package data, so `sitesel fetch` works from a wheel, not only a checkout."""
    import sitesel
    from sitesel import fetch

    assert fetch.CATALOGUE_PATH.is_file()
    assert Path(sitesel.__file__).parent in fetch.CATALOGUE_PATH.parents
    assert fetch.CATALOGUE_PATH.read_bytes() == (Path(__file__).parents[1] / "dems" / "catalogue.toml").read_bytes()
    assert len(fetch.list_products()) >= 3


def test_a_destination_that_is_a_file_is_refused(product, tmp_path):
    dest = tmp_path / "o.txt"
    dest.write_text("x")
    with pytest.raises(SiteselError, match="the destination .*o.txt is a file, not a folder; give a folder"):
        fetch_product("TINY", dest=dest, base_url=product.url, progress=False, catalogue=product.cat)


def test_a_failed_fetch_leaves_no_empty_folder_it_made(product, tmp_path):
    del product.files.content["/img/tiny.lbl"]
    with pytest.raises(SiteselError, match="HTTP 404"):
        fetch_product("TINY", dest=tmp_path / "new", base_url=product.url, progress=False, catalogue=product.cat)
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    with pytest.raises(SiteselError, match="HTTP 404"):
        fetch_product("TINY", dest=tmp_path / "mine", base_url=product.url, progress=False, catalogue=product.cat)
    assert (tmp_path / "mine").is_dir()  # not ours to remove
