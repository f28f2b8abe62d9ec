"""Edge sources (registry, Sobel, Canny) and the png16-unit store."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import ndimage as ndi

from trace_edges.data.images import load_rgb, write_png
from trace_edges.edges import EdgeSource, available_sources, get_edge_source, register_source
from trace_edges.edges import _REGISTRY
from trace_edges.edges.gradient import SOBEL_MAX_MAGNITUDE
from trace_edges.edges.store import (
    FORMAT, MAX_ROUNDTRIP_ERROR, EdgeSet, edge_map_filename, load_edge_map, read_manifest,
    save_edge_map, write_manifest,
)
from trace_edges.errors import ConfigError, DataError

SCHEMA = Path(__file__).resolve().parents[1] / "src" / "trace_edges" / "schemas" / "config.schema.yaml"


@pytest.fixture(scope="module")
def crop(coco_mini) -> np.ndarray:
    return load_rgb(coco_mini / "images" / "000000397133.jpg")[100:196, 200:328]


# ---------------------------------------------------------------------------------- registry
def test_registry_lists_builtin_sources():
    assert {"sobel", "canny", "hed", "oracle_gt"} <= set(available_sources())
    assert available_sources() == sorted(available_sources())


def test_unknown_source_and_unknown_param_are_config_errors():
    with pytest.raises(ConfigError, match="unknown edge source"):
        get_edge_source("pidinet")
    with pytest.raises(ConfigError, match="unknown parameter"):
        get_edge_source("sobel", {"sigma": 1.0, "radius": 3})
    with pytest.raises(ConfigError, match="low_threshold"):
        get_edge_source("canny", {"low_threshold": 0.5, "high_threshold": 0.2})


@pytest.mark.parametrize("name", ["sobel", "canny", "hed", "oracle_gt"])
def test_defaults_equal_schema_defaults(name):
    schema = yaml.safe_load(SCHEMA.read_text())
    block = schema["$defs"]["edges"]["properties"][name]["properties"]
    schema_defaults = {k: v["default"] for k, v in block.items()}
    assert get_edge_source(name).params == schema_defaults
    assert name in schema["$defs"]["edges"]["properties"]["sources"]["items"]["enum"]


def test_registered_source_is_validated(crop):
    class Bad(EdgeSource):
        name = "bad_test_source"
        DEFAULTS = {"scale": 2.0}

        def _compute(self, rgb):
            return np.full(rgb.shape[:2], self.params["scale"], dtype=np.float32)

    register_source("bad_test_source", Bad)
    try:
        assert "bad_test_source" in available_sources()
        assert get_edge_source("bad_test_source", {"scale": 0.5}).compute(crop).max() == 0.5
        with pytest.raises(RuntimeError, match=r"expected \[0, 1\]"):
            get_edge_source("bad_test_source").compute(crop)
        with pytest.raises(ValueError, match="uint8"):
            get_edge_source("bad_test_source").compute(crop.astype(np.float32))
        with pytest.raises(ValueError, match="already registered"):
            register_source("bad_test_source", SobelLike)
    finally:
        _REGISTRY.pop("bad_test_source", None)


class SobelLike(EdgeSource):
    name = "sobel_like"

    def _compute(self, rgb):
        return np.zeros(rgb.shape[:2], np.float32)


# --------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("name,params", [("sobel", {}), ("sobel", {"sigma": 0}),
                                         ("canny", {}), ("canny", {"use_quantiles": True,
                                                                   "low_threshold": 0.8,
                                                                   "high_threshold": 0.9})])
def test_maps_are_unit_float32_image_sized_and_deterministic(crop, name, params):
    src = get_edge_source(name, params)
    a = src.compute(crop)
    b = get_edge_source(name, params).compute(crop.copy())
    assert a.dtype == np.float32 and a.shape == crop.shape[:2]
    assert a.min() >= 0 and a.max() <= 1 and a.max() > 0
    assert np.array_equal(a, b)
    if name == "canny":
        assert set(np.unique(a)) <= {0.0, 1.0}


def test_sobel_max_is_the_theoretical_maximum():
    best = 0.0
    for bits in itertools.product([0.0, 1.0], repeat=9):
        patch = np.array(bits).reshape(3, 3)
        gx = ndi.sobel(patch, axis=1, mode="constant")[1, 1]
        gy = ndi.sobel(patch, axis=0, mode="constant")[1, 1]
        best = max(best, float(np.hypot(gx, gy)))
    assert best == pytest.approx(SOBEL_MAX_MAGNITUDE, abs=1e-12)
    # the maximising corner pattern reaches exactly 1; an extreme checkerboard stays <= 1
    img = np.zeros((7, 7, 3), np.uint8)
    img[2:5, 2:5] = np.array([[0, 0, 1], [0, 0, 1], [0, 1, 1]], np.uint8)[..., None] * 255
    e = get_edge_source("sobel", {"sigma": 0}).compute(img)
    assert e[3, 3] == pytest.approx(1.0, abs=1e-6) and e.max() <= 1.0
    checker = (np.indices((16, 16)).sum(0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, 2)
    assert get_edge_source("sobel", {"sigma": 0}).compute(checker).max() <= 1.0


def test_sobel_is_not_per_image_normalised():
    flat = np.full((32, 32, 3), 128, np.uint8)
    assert get_edge_source("sobel").compute(flat).max() == 0.0
    weak = np.full((32, 32, 3), 100, np.uint8)
    weak[:, 16:] = 110  # a faint step
    strong = np.full((32, 32, 3), 0, np.uint8)
    strong[:, 16:] = 255
    sw = get_edge_source("sobel").compute(weak).max()
    ss = get_edge_source("sobel").compute(strong).max()
    assert ss == pytest.approx(sw * 255 / 10, rel=1e-3)  # linear in contrast
    assert ss < 1.0


def test_soft_canny_is_the_nms_magnitude_on_the_binary_edges(crop):
    """output: soft keeps exactly the binary Canny pixels and gives each its gradient magnitude / 2 sqrt(5)."""
    params = {"low_threshold": 0.1, "high_threshold": 0.2}
    binary = get_edge_source("canny", params).compute(crop)
    soft = get_edge_source("canny", {**params, "output": "soft"}).compute(crop)
    assert np.array_equal(soft > 0, binary > 0) and binary.sum() > 50
    assert np.unique(soft).size > 20  # a strength, not a second binary map
    # every kept pixel clears the low threshold; every 8-connected chain holds one above the high one
    low, high = (v / SOBEL_MAX_MAGNITUDE for v in (params["low_threshold"], params["high_threshold"]))
    assert soft[soft > 0].min() >= low - 1e-6
    labels, n = ndi.label(soft > 0, structure=np.ones((3, 3), bool))
    assert np.all(ndi.maximum(soft, labels, index=np.arange(1, n + 1)) >= high - 1e-6)


def test_soft_canny_step_edge_has_the_closed_form_magnitude():
    """A vertical step of contrast c without smoothing: Sobel gives |gx| = 4c on the two columns at
    the step, so the soft value is 4c / (2 sqrt 5) on whichever column Canny keeps."""
    c = 100 / 255
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, 16:] = 100
    soft = get_edge_source("canny", {"sigma": 0, "output": "soft"}).compute(img)
    binary = get_edge_source("canny", {"sigma": 0}).compute(img)
    assert np.array_equal(soft > 0, binary > 0)
    rows = soft[2:-2]
    assert np.all((rows > 0).sum(axis=1) >= 1) and not rows[:, :15].any() and not rows[:, 17:].any()
    assert rows[rows > 0] == pytest.approx(4 * c / SOBEL_MAX_MAGNITUDE, abs=1e-6)


def test_canny_output_is_validated():
    with pytest.raises(ConfigError, match="output"):
        get_edge_source("canny", {"output": "grey"})


# -------------------------------------------------------------------------------------- store
def test_store_roundtrip_within_half_a_step(tmp_path):
    rng = np.random.default_rng(0)
    e = rng.random((37, 53)).astype(np.float32)
    e[0, 0], e[0, 1] = 0.0, 1.0
    save_edge_map(tmp_path / "a.png", e)
    back = load_edge_map(tmp_path / "a.png", shape=(37, 53))
    assert back.dtype == np.float32 and back.shape == e.shape
    assert np.abs(back.astype(np.float64) - e.astype(np.float64)).max() <= MAX_ROUNDTRIP_ERROR + 1e-9
    assert back[0, 0] == 0.0 and back[0, 1] == 1.0
    # a stored map round-trips exactly
    save_edge_map(tmp_path / "b.png", back)
    assert np.array_equal(load_edge_map(tmp_path / "b.png"), back)


def test_store_rejects_bad_maps_and_names_bad_files(tmp_path):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        save_edge_map(tmp_path / "x.png", np.full((4, 4), 1.5))
    with pytest.raises(ValueError, match="float"):
        save_edge_map(tmp_path / "x.png", np.ones((4, 4), np.uint8))
    with pytest.raises(ValueError, match="2-D"):
        save_edge_map(tmp_path / "x.png", np.ones((4, 4, 3)))
    write_png(tmp_path / "u8.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="u8.png.*uint16"):
        load_edge_map(tmp_path / "u8.png")
    write_png(tmp_path / "rgb.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match="rgb.png.*single-channel"):
        load_edge_map(tmp_path / "rgb.png")
    save_edge_map(tmp_path / "ok.png", np.zeros((40, 40)))
    with pytest.raises(DataError, match="ok.png.*shape"):
        load_edge_map(tmp_path / "ok.png", shape=(40, 41))
    blob = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="trunc.png"):
        load_edge_map(tmp_path / "trunc.png")
    with pytest.raises(DataError, match="missing.png"):
        load_edge_map(tmp_path / "missing.png")


def test_manifest_and_edgeset(tmp_path):
    maps = {397133: np.linspace(0, 1, 30, dtype=np.float32).reshape(5, 6), 6818: np.zeros((3, 4))}
    files = {}
    for i, e in maps.items():
        files[i] = edge_map_filename(i)
        save_edge_map(tmp_path / files[i], e)
    assert files[6818] == "000000006818.png"
    write_manifest(tmp_path, "sobel", files, {"stage": "edges", "params": {"sigma": 1.0}})
    m = read_manifest(tmp_path)
    assert m == read_manifest(tmp_path / "manifest.json")
    assert m["format"] == FORMAT and m["source"] == "sobel"
    assert list(m["images"]) == ["6818", "397133"]  # numeric order, string keys
    es = EdgeSet(tmp_path)
    assert es.source == "sobel" and len(es) == 2 and 6818 in es and "397133" in es
    assert np.abs(es.load(397133, shape=(5, 6)) - maps[397133]).max() <= MAX_ROUNDTRIP_ERROR
    assert es["6818"].shape == (3, 4)
    es.require([6818, "397133"])
    with pytest.raises(DataError, match=r"no map for image id\(s\) 42, 43"):
        es.require([6818, 42, 43])
    with pytest.raises(DataError, match="42"):
        es.load(42)


def test_manifest_errors(tmp_path):
    save_edge_map(tmp_path / "a.png", np.zeros((2, 2)))
    with pytest.raises(DataError, match="missing"):
        write_manifest(tmp_path, "sobel", {1: "a.png", 2: "b.png"}, {})
    with pytest.raises(DataError, match="relative"):
        write_manifest(tmp_path, "sobel", {1: "../a.png"}, {})
    with pytest.raises(DataError, match="not found"):
        EdgeSet(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"source": "sobel", "format": "npy", "images": {}, "provenance": {}}))
    with pytest.raises(DataError, match="unsupported edge-map format"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"source": "sobel", "form')
    with pytest.raises(DataError, match="not valid JSON"):
        read_manifest(tmp_path)
