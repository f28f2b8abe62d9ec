"""Sharded per-image stages (config `shards`, trace_edges.stages.shards): the shard plan follows the
manifest order, appended images rerun only the shards that changed, a gather refuses shard files
that do not cover the manifest, and a sharded stage gives exactly the unsharded result (edge maps
byte for byte; edge scoring: the pooled per-image counts, hence ODS/OIS/AP/clDice, identical).
The whole workflow sharded vs unsharded: tests/test_workflow_fast.py."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from trace_edges.commands import shard_options
from trace_edges.config import validate
from trace_edges.data.coco import prepare
from trace_edges.errors import ConfigError, DataError
from trace_edges.stages.edges import run_edges
from trace_edges.stages.score import score_edges
from trace_edges.stages.shards import (ShardJob, num_shards, read_shard_files, shard_bounds, shard_images,
                                       stage_shards, write_shard_file)

N_IMAGES = 6


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, coco_mini):
    root = tmp_path_factory.mktemp("shards")
    cfg = validate({"data": {"root": str(coco_mini), "max_images": N_IMAGES},
                    "score": {"edges": {"thresholds": 9}}})
    prepare(cfg["data"], cfg["edge_gt"], root / "data")
    return root, cfg


def _images(n: int) -> list[dict]:
    return [{"id": 1000 + i} for i in range(n)]


# ---------------------------------------------------------------------------------------------
# the plan


def test_shard_bounds_follow_the_manifest_order():
    assert shard_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert shard_bounds(8, 4) == [(0, 4), (4, 8)]
    assert num_shards(0, 4) == 1 and num_shards(1, 4) == 1 and num_shards(5000, 50) == 100
    images = _images(10)
    assert [r["id"] for r in shard_images(images, 2, 4)] == [1008, 1009]
    assert [r["id"] for k in range(3) for r in shard_images(images, k, 4)] == [r["id"] for r in images]
    with pytest.raises(ConfigError, match="shard 3 does not exist"):
        shard_images(images, 3, 4)
    with pytest.raises(ConfigError, match="shard size"):
        shard_images(images, 0, 0)
    assert stage_shards({"bgp": None}, "bgp", 5000) == 1
    assert stage_shards({"bgp": 100}, "bgp", 5000) == 50
    with pytest.raises(ValueError):
        stage_shards({}, "trajectory", 10)


def test_appended_images_change_only_the_last_shard():
    before, after = _images(10), _images(14)
    old = [[r["id"] for r in shard_images(before, k, 4)] for k in range(num_shards(10, 4))]
    new = [[r["id"] for r in shard_images(after, k, 4)] for k in range(num_shards(14, 4))]
    changed = [k for k in range(len(new)) if k >= len(old) or old[k] != new[k]]
    assert changed == [2, 3]


def test_gather_refuses_shards_that_do_not_cover_the_manifest(tmp_path):
    images = _images(6)
    files = []
    for k in range(2):
        f = tmp_path / f"shard_{k}.json"
        write_shard_file(f, stage="bgp", shard=k, shard_size=4, images=shard_images(images, k, 4), params={"a": 1})
        files.append(f)
    # any order of the files: the shards are put in shard order
    assert [s["shard"] for s in read_shard_files(files[::-1], images, stage="bgp")] == [0, 1]
    with pytest.raises(DataError, match="hold 4 images, the data manifest 6"):
        read_shard_files(files[:1], images, stage="bgp")
    with pytest.raises(DataError, match="hold 6 images, the data manifest 7"):
        read_shard_files(files, _images(7), stage="bgp")
    with pytest.raises(DataError, match="not a wps shard file"):
        read_shard_files(files, images, stage="wps")
    write_shard_file(files[1], stage="bgp", shard=1, shard_size=4, images=shard_images(images, 1, 4), params={"a": 2})
    with pytest.raises(DataError, match="other parameters"):
        read_shard_files(files, images, stage="bgp")


def test_cli_shard_options():
    ns = argparse.Namespace
    whole = shard_options(ns(shard=None, shard_size=None, shard_out=None, shards=None))
    assert whole == {"shard": None, "gather": None}
    one = shard_options(ns(shard=2, shard_size=4, shard_out="s.json", shards=None))
    assert one["shard"] == ShardJob(2, 4, "s.json")
    with pytest.raises(ConfigError, match="need --shard"):
        shard_options(ns(shard=None, shard_size=4, shard_out=None, shards=None))
    with pytest.raises(ConfigError, match="exclude each other"):
        shard_options(ns(shard=0, shard_size=4, shard_out="s.json", shards=["a.json"]))
    with pytest.raises(ConfigError, match="--shard-size and --shard-out"):
        shard_options(ns(shard=0, shard_size=None, shard_out=None, shards=None))


# ---------------------------------------------------------------------------------------------
# stages: sharded == unsharded


def _run_edges_sharded(cfg, manifest: Path, out: Path, size: int) -> list[Path]:
    n = num_shards(json.loads(manifest.read_text())["num_images"], size)
    files = [out / "shards" / f"shard_{k}.json" for k in range(n)]
    fresh = not out.exists()
    for k, f in enumerate(files):
        assert run_edges("sobel", cfg["edges"], manifest, out, shard=ShardJob(k, size, f)) is None
        assert f.is_file()
        assert not fresh or not (out / "manifest.json").exists()   # a shard never writes the manifest
    run_edges("sobel", cfg["edges"], manifest, out, gather=files)
    return files


@pytest.fixture(scope="module")
def sobel_dirs(prepared):
    root, cfg = prepared
    manifest = root / "data" / "manifest.json"
    run_edges("sobel", cfg["edges"], manifest, root / "whole")
    _run_edges_sharded(cfg, manifest, root / "sharded", 4)   # shards of 4 and 2 images
    return root / "whole", root / "sharded"


def test_sharded_edges_equal_unsharded(sobel_dirs):
    whole, sharded = sobel_dirs
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (whole, sharded))
    assert a["images"] == b["images"] and len(a["images"]) == N_IMAGES
    assert a["provenance"]["params"] == b["provenance"]["params"]
    for name in a["images"].values():
        assert (whole / name).read_bytes() == (sharded / name).read_bytes()


def test_appending_images_recomputes_only_the_new_ones(prepared):
    """A run on the first 4 images, then on all 6 (2 appended), shards of 2: the first two shards
    are the same images, so nothing in them is recomputed; the new shard computes its 2 images."""
    root, cfg = prepared
    full = json.loads((root / "data" / "manifest.json").read_text())
    small = dict(full, images=full["images"][:4], num_images=4)
    (root / "data" / "manifest_4.json").write_text(json.dumps(small))
    out = root / "appended"
    _run_edges_sharded(cfg, root / "data" / "manifest_4.json", out, 2)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert len(stamps) == 4
    _run_edges_sharded(cfg, root / "data" / "manifest.json", out, 2)
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert len(after) == N_IMAGES
    assert {k: after[k] for k in stamps} == stamps               # the first 4 maps were not rewritten
    assert json.loads((out / "manifest.json").read_text())["images"] == json.loads(
        (sobel_root := root / "whole" / "manifest.json").read_text())["images"], sobel_root


def _without_provenance(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "provenance"}


@pytest.mark.parametrize("size", [1, 4])
def test_pooled_edge_scores_equal_unsharded(prepared, sobel_dirs, size, tmp_path):
    """The per-image BSDS counts computed shard by shard and pooled by the gather are the unsharded
    counts exactly: every number of the metrics file (ODS/OIS/AP, the curve, per-image OIS and
    clDice) is identical."""
    root, cfg = prepared
    manifest = root / "data" / "manifest.json"
    params = cfg["score"]["edges"]
    whole = score_edges(manifest, sobel_dirs[0], tmp_path / "whole.json", params=params)
    out = tmp_path / "sharded.json"
    files = [tmp_path / "sharded" / "shards" / f"shard_{k}.json" for k in range(num_shards(N_IMAGES, size))]
    for k, f in enumerate(files):
        assert score_edges(manifest, sobel_dirs[0], out, params=params, shard=ShardJob(k, size, f)) is None
    assert not out.exists()
    pooled = score_edges(manifest, sobel_dirs[0], out, params=params, gather=files, threads=2)
    assert _without_provenance(pooled) == _without_provenance(whole)
    assert pooled["metrics"]["n_images"] == N_IMAGES and 0 < pooled["metrics"]["ODS"] < 1
    # the shard files hold integer counts per image and threshold
    counts = json.loads(files[0].read_text())["counts"]
    assert len(counts) == min(size, N_IMAGES)
    assert all(len(c) == 4 and len(c[0]) == params["thresholds"] for c in counts.values())
