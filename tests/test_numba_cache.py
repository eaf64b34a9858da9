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
