"""Download catalogued LOLA DEM products, resumable and verified.

The catalogue is ``dems/catalogue.toml``. :func:`fetch_product` uses pooch for
the download bookkeeping and checksum verification, with a small downloader
(:class:`ResumableDownloader`, built on ``requests`` Range headers) that keeps
an interrupted download as ``NAME.part`` and continues it on the next call.
A file appears under its final name only after its size and structure (PDS3
label record structure, or a readable GeoTIFF on the LOLA grid) and, where
the catalogue has one, its SHA-256 have been checked.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from .errors import SiteselError

#: The packaged catalogue of known products: ``dems/catalogue.toml`` in the source tree,
#: shipped as package data through the ``sitesel/data/catalogue.toml`` link.
CATALOGUE_PATH = Path(__file__).parent / "data" / "catalogue.toml"
#: Environment variable that replaces every catalogue base URL (a mirror).
BASE_URL_ENV = "SITESEL_BASE_URL"


def _load_catalogue(catalogue=None) -> dict:
    path = Path(catalogue) if catalogue is not None else CATALOGUE_PATH
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as exc:
        raise SiteselError(f"product catalogue {path} not found; pass --catalogue or reinstall sitesel") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SiteselError(f"product catalogue {path} is not valid TOML: {exc}") from exc


def _coverage(p: dict) -> str:
    if p.get("coverage"):
        return p["coverage"]
    return f"{abs(p['lat_bound_deg']):g}-90 S"


def list_products(catalogue=None) -> list[dict]:
    """The catalogued products, each a dict with ``name``, ``url``, ``label_url``
    (or None), ``format``, ``pixels``, ``resolution_m``, ``lat_bound_deg``,
    ``coverage``, ``size_bytes`` (None if unknown) and ``sha256`` (None if none is published)."""
    cat = _load_catalogue(catalogue)
    sources = cat.get("sources", {})
    out = []
    for name, p in cat.get("products", {}).items():
        base = sources.get(p.get("source"), {}).get("base_url", "")
        out.append(
            {
                "name": name,
                "source": p.get("source"),
                "path": p["path"],
                "label": p.get("label"),
                "url": base + p["path"],
                "label_url": base + p["label"] if p.get("label") else None,
                "format": p.get("format", ""),
                "pixels": p.get("pixels"),
                "resolution_m": p.get("resolution_m"),
                "lat_bound_deg": p.get("lat_bound_deg"),
                "coverage": _coverage(p),
                "size_bytes": p.get("size_bytes"),
                "sha256": p.get("sha256") or None,
            }
        )
    return out


def _human_bytes(n) -> str:
    if n is None:
        return "?"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def format_product_table(products: list[dict]) -> str:
    """A plain-text table: product, resolution, coverage, size, format."""
    rows = [("product", "m/px", "coverage", "size", "format")]
    for p in products:
        rows.append((p["name"], f"{p['resolution_m']:g}", p["coverage"], _human_bytes(p["size_bytes"]), p["format"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i != 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class ResumableDownloader:
    """A pooch downloader that resumes from ``part_path`` with an HTTP Range request.

    The bytes go to ``part_path`` (kept if the transfer breaks); when the
    transfer is complete and its size is ``expected_size`` (if given) the file
    is moved to pooch's temporary output, which pooch checks against the known
    hash before giving it its final name.
    """

    def __init__(self, part_path: Path, expected_size: int | None = None, progress: bool = True,
                 chunk_bytes: int = 1 << 16, timeout_s: float = 60.0):
        self.part_path = Path(part_path)
        self.expected_size = expected_size
        self.progress = progress
        self.chunk_bytes = chunk_bytes
        self.timeout_s = timeout_s

    def _get(self, url, offset: int):
        import requests

        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            return requests.get(url, headers=headers, stream=True, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise SiteselError(f"cannot reach {url} ({type(exc).__name__}); check the network or --base-url") from exc

    def __call__(self, url, output_file, pooch=None, check_only=False):
        import requests

        if check_only:
            try:
                return requests.head(url, timeout=self.timeout_s, allow_redirects=True).ok
            except requests.RequestException:
                return False
        have = self.part_path.stat().st_size if self.part_path.exists() else 0
        if self.expected_size is not None and have > self.expected_size:
            have = 0  # a stale partial file from something else: start again
        resp = self._get(url, have)
        if resp.status_code == 416 and have:
            resp.close()  # the server refuses our offset: start again
            have = 0
            resp = self._get(url, 0)
        with resp:
            if resp.status_code not in (200, 206):
                raise SiteselError(f"server answered HTTP {resp.status_code} for {url}; check the product or --base-url")
            if resp.status_code == 200:
                have = 0  # no Range support, or a fresh start: the body is the whole file
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length is not None else self.expected_size
            bar = None
            if self.progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=self.part_path.stem)
            got = have
            try:
                with open(self.part_path, "ab" if have else "wb") as f:
                    for chunk in resp.iter_content(chunk_size=self.chunk_bytes):
                        f.write(chunk)
                        got += len(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
            except requests.RequestException as exc:
                raise SiteselError(
                    f"download of {url} interrupted after {got} of {total or '?'} bytes; "
                    f"{self.part_path.name} is kept, run the same command again to resume"
                ) from exc
            finally:
                if bar is not None:
                    bar.close()
        size = self.part_path.stat().st_size
        want = self.expected_size if self.expected_size is not None else total
        if want is not None and size < want:
            raise SiteselError(
                f"download of {url} stopped after {size} of {want} bytes; "
                f"{self.part_path.name} is kept, run the same command again to resume"
            )
        if want is not None and size != want:
            self.part_path.unlink()
            raise SiteselError(
                f"download of {url} has {size} bytes but {want} were expected; "
                "the bad file was removed, check the catalogue or mirror"
            )
        os.replace(self.part_path, output_file)


def _retrieve(url, dest: Path, fname: str, known_hash, expected_size, progress) -> Path:
    import pooch

    downloader = ResumableDownloader(dest / f"{fname}.part", expected_size, progress)
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")  # pooch's own messages suggest pinning a hash; our progress bar says enough
    try:
        return Path(pooch.retrieve(url, known_hash=known_hash, fname=fname, path=dest, downloader=downloader,
                                   progressbar=False))
    except ValueError as exc:
        # pooch raises ValueError on a hash mismatch and has already deleted the download.
        raise SiteselError(
            f"checksum mismatch for {fname} from {url}; the bad file was removed, run again to download afresh "
            f"({str(exc).splitlines()[0][:160]})"
        ) from exc
    finally:
        logger.setLevel(level)


def _check_download(final: Path, label: Path | None, expected_size: int | None) -> None:
    """Size and structure check of a downloaded (or already present) file.

    On failure the file is renamed ``NAME.corrupt``, so it no longer looks complete.
    """
    from .terrain.io import open_dem

    try:
        size = final.stat().st_size
        if expected_size is not None and size != expected_size:
            raise SiteselError(f"{size} bytes instead of {expected_size}")
        with open_dem(label if label is not None else final):
            pass
    except SiteselError as exc:
        aside = final.with_name(final.name + ".corrupt")
        os.replace(final, aside)
        raise SiteselError(f"downloaded {final.name} failed verification ({exc}); kept aside as {aside.name}") from exc


def fetch_product(name: str, dest: Path | None = None, base_url: str | None = None, progress: bool = True,
                  catalogue=None) -> Path:
    """Download a catalogued product (and its PDS3 label) and return the image path.

    Parameters
    ----------
    name : str
        Product name from :func:`list_products` (case-insensitive).
    dest : Path, optional
        Folder for the files; default ``dems/`` in the current directory.
    base_url : str, optional
        Mirror root replacing the catalogue's base URLs; default the
        ``SITESEL_BASE_URL`` environment variable, then the catalogue.
    progress : bool
        Show a progress bar.
    catalogue : path, optional
        Another catalogue file (tests use this).

    An existing verified file is not downloaded again. An interrupted
    download resumes from ``NAME.part``. Sizes are checked against the
    catalogue and the label (LINES x LINE_SAMPLES x bytes, RECORD_BYTES x
    FILE_RECORDS), and the SHA-256 where the catalogue has one.
    """
    products = {p["name"].upper(): p for p in list_products(catalogue)}
    p = products.get(name.upper())
    if p is None:
        raise SiteselError(f"unknown product {name!r}; `sitesel fetch --list` shows: " + ", ".join(sorted(products)))
    dest = Path(dest) if dest is not None else Path.cwd() / "dems"
    if dest.exists() and not dest.is_dir():
        raise SiteselError(f"the destination {dest} is a file, not a folder; give a folder with --dest")
    from .outputs import removed_if_failed

    with removed_if_failed(dest):
        dest.mkdir(parents=True, exist_ok=True)
        return _fetch_into(p, dest, base_url, progress)


def _fetch_into(p: dict, dest: Path, base_url: str | None, progress: bool) -> Path:
    """:func:`fetch_product` of the catalogue entry ``p`` into the folder ``dest``."""
    from .terrain.pds3 import parse_pds3_label

    base_url = base_url or os.environ.get(BASE_URL_ENV)
    if base_url:
        base_url = base_url if base_url.endswith("/") else base_url + "/"
    url = base_url + p["path"] if base_url else p["url"]
    fname = Path(p["path"]).name
    expected = p["size_bytes"]
    label_path = None
    if p["label"]:
        label_url = base_url + p["label"] if base_url else p["label_url"]
        label_path = _retrieve(label_url, dest, Path(p["label"]).name, None, None, False)
        lab = parse_pds3_label(label_path, data_path=dest / fname)
        from_label = lab.image_offset_bytes + lab.image_bytes
        records = (lab.record_bytes or 0) * (lab.file_records or 0)
        if records and records != from_label:
            raise SiteselError(f"{label_path.name}: record structure {records} B disagrees with the image size "
                               f"{from_label} B from LINES x LINE_SAMPLES x bytes; the label is damaged")
        if expected is not None and expected != from_label:
            raise SiteselError(f"{label_path.name} describes {from_label} B but the catalogue says {expected} B "
                               f"for {p['name']}; the product may have been revised, update dems/catalogue.toml")
        expected = from_label
    known_hash = f"sha256:{p['sha256']}" if p["sha256"] else None
    final = _retrieve(url, dest, fname, known_hash, expected, progress)
    _check_download(final, label_path, expected)
    return final
