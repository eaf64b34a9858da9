"""Tiles cover the grid exactly once; checkpoints resume; Dask gives identical results."""

import numpy as np
import pytest

from sitesel.tiling import TileStore, remove_other_tile_sets, run_key, run_tiles, tile_slices


def test_tiles_cover_grid_once():
    cover = np.zeros((70, 45), dtype=int)
    for rows, cols in tile_slices(cover.shape, 16):
        cover[rows, cols] += 1
    assert np.all(cover == 1)


def fake_compute(tile):
    rows, cols = tile
    r, c = np.mgrid[rows, cols]
    return {"value": (r * 1000 + c).astype(np.float32)}


def test_resume_skips_finished_tiles(tmp_path):
    tiles = tile_slices((40, 40), 16)
    store = TileStore(tmp_path / run_key({"a": 1}))
    calls = []

    def counting(tile):
        calls.append(tile)
        if len(calls) == 3:
            raise RuntimeError("crash in the third tile")
        return fake_compute(tile)

    with pytest.raises(RuntimeError):
        run_tiles(counting, tiles, store, resume=False)
    assert len(list(store.directory.glob("tile_*.npz"))) == 2  # finished tiles survived the crash
    assert not list(store.directory.glob("*.part"))
    calls.clear()
    results = run_tiles(fake_compute_and_record(calls), tiles, store, resume=True)
    assert len(calls) == len(tiles) - 2
    for tile, result in zip(tiles, results):
        np.testing.assert_array_equal(result["value"], fake_compute(tile)["value"])


def fake_compute_and_record(calls):
    def compute(tile):
        calls.append(tile)
        return fake_compute(tile)

    return compute


def test_a_finished_set_removes_the_other_keys_sets_only(tmp_path):
    tiles = tile_slices((40, 40), 16)
    old, new = (TileStore(tmp_path / run_key({"a": a})) for a in (1, 2))
    run_tiles(fake_compute, tiles[:2], old, resume=False)
    (old.directory / "x.npz.part").write_bytes(b"")
    mine = tmp_path / "notes"  # not a run key: not ours
    mine.mkdir()
    (mine / "tile_r000000_c000000.npz").write_bytes(b"")
    foreign = TileStore(tmp_path / run_key({"a": 3}))
    run_tiles(fake_compute, tiles[:1], foreign, resume=False)
    (foreign.directory / "readme.txt").write_text("kept")
    run_tiles(fake_compute, tiles, new, resume=False)
    remove_other_tile_sets(new)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([new.directory.name, "notes", foreign.directory.name])
    assert len(list(new.directory.glob("tile_*.npz"))) == len(tiles)
    assert [p.name for p in foreign.directory.iterdir()] == ["readme.txt"]
    assert [p.name for p in mine.iterdir()] == ["tile_r000000_c000000.npz"]


def test_run_key_is_stable_and_sensitive():
    assert run_key({"a": 1, "b": [1, 2]}) == run_key({"b": [1, 2], "a": 1})
    assert run_key({"a": 1}) != run_key({"a": 2})


def test_dask_gives_identical_results(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    tiles = tile_slices((40, 40), 16)
    serial = run_tiles(fake_compute, tiles, TileStore(tmp_path / "serial"), resume=False)
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as client:
        parallel = run_tiles(fake_compute, tiles, TileStore(tmp_path / "dask"), resume=False, client=client)
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a["value"], b["value"])
