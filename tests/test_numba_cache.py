"""numba's cache directory follows the package's sources."""

import shutil
from pathlib import Path

import numba

import sitesel
from sitesel._numba_cache import source_digest


def test_cache_dir_is_keyed_by_the_sources(tmp_path):
    package = Path(sitesel.__file__).parent
    copy = tmp_path / "sitesel"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert source_digest(copy) == source_digest(package)
    helper = copy / "_fastmath.py"
    helper.write_text(helper.read_text() + "\n# an edit to a helper another module's kernel inlines\n")
    assert source_digest(copy) != source_digest(package)
    assert Path(numba.config.CACHE_DIR).name == source_digest(package)


def test_a_cache_without_kernels_is_cold(tmp_path, monkeypatch):
    from sitesel import _numba_cache

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    assert _numba_cache.is_cold()
    (tmp_path / "sitesel_abc").mkdir()
    (tmp_path / "sitesel_abc" / "kernel-1.py311.nbi").write_bytes(b"")
    assert not _numba_cache.is_cold()
