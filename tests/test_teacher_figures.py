"""The teacher's figures: pure helpers (PCA -> RGB, pixel picking), the SA-keeping trajectory
walk against run_teacher, each figure on the tiny SD3 model and one real image, and the CLI."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from trace_edges.backbones.tiny import tiny_backbone, tiny_model_dir
from trace_edges.config import validate
from trace_edges.data.images import load_rgb
from trace_edges.errors import ConfigError, DataError
from trace_edges.report import teacher_figures as tf

PARAMS = validate({}, block="teacher")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test of this module runs torch on one thread (conftest.one_torch_thread)."""
    yield


@pytest.fixture(scope="module")
def rgb(coco_mini):
    return load_rgb(coco_mini / "images" / "000000037777.jpg")


@pytest.fixture(scope="module")
def walked(rgb):
    return tf.walk_trajectory(tiny_backbone("sd3"), rgb, PARAMS)


def _nonempty(*paths):
    for p in paths:
        assert p.is_file() and p.stat().st_size > 1000, p


def _softmax_rows(rng, s, n, d):
    x = rng.normal(size=(s, n, d))
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------------------ PCA helper
def test_pca_rgb_range_shape_and_determinism():
    rows = _softmax_rows(np.random.default_rng(0), 4, 6 * 5, 6 * 5)
    a = tf.pca_rgb(rows, (6, 5))
    assert a.shape == (4, 6, 5, 3) and a.dtype == np.float32
    assert np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0 and a.std() > 0
    assert np.array_equal(a, tf.pca_rgb(rows.copy(), (6, 5)))
    # a list of maps is the same joint fit as the stacked array
    assert np.array_equal(a, tf.pca_rgb(list(rows), (6, 5)))
    one = tf.pca_rgb(rows[0], (6, 5))
    assert one.shape == (6, 5, 3) and one.min() >= 0.0 and one.max() <= 1.0


def test_pca_basis_is_orthonormal_with_a_fixed_sign():
    rows = _softmax_rows(np.random.default_rng(1), 3, 16, 16)
    mean, axes = tf.pca_basis(rows)
    assert axes.shape == (3, 16) and np.allclose(axes @ axes.T, np.eye(3), atol=1e-8)
    assert all(ax[np.argmax(np.abs(ax))] > 0 for ax in axes)
    # the leading axis is the sklearn/covariance one (up to sign)
    x = rows.reshape(-1, 16).astype(np.float64)
    w, v = np.linalg.eigh(np.cov(x.T))
    assert abs(abs(float(v[:, -1] @ axes[0])) - 1.0) < 1e-6


def test_pca_rgb_separates_planted_clusters_and_is_joint():
    """Two kinds of rows (left / right half of the grid): two colours; a step whose rows equal
    step 0's gets exactly step 0's colours (one basis for all steps)."""
    h, w = 4, 6
    n = h * w
    a = np.full(n, 0.5 / (n - 1), np.float32)
    a[0] = 0.5
    b = a[::-1].copy()
    step = np.stack([a if (k % w) < w // 2 else b for k in range(n)])
    rgbs = tf.pca_rgb([step, step, np.full((n, n), 1.0 / n, np.float32)], (h, w))
    assert np.array_equal(rgbs[0], rgbs[1])
    left, right = rgbs[0][:, : w // 2].reshape(-1, 3), rgbs[0][:, w // 2:].reshape(-1, 3)
    assert np.ptp(left, 0).max() == 0 and np.ptp(right, 0).max() == 0
    assert np.abs(left[0] - right[0]).max() > 0.5


def test_pca_rgb_rejects_rows_that_do_not_fill_the_grid():
    with pytest.raises(ValueError, match="grid"):
        tf.pca_rgb(np.ones((10, 10), np.float32), (3, 4))


# ------------------------------------------------------------------------------------ pixel picking
def test_pick_pixels_finds_planted_pixels_never_the_border():
    rng = np.random.default_rng(0)
    e = rng.uniform(0.4, 0.6, size=(9, 11))
    e[0, :] = 100.0   # the border holds the global extremes: must be ignored
    e[-1, 3] = -100.0
    e[4, 0] = 50.0
    e[2, -1] = -50.0
    e[3, 7] = 5.0     # planted boundary
    e[6, 2] = 0.01    # planted interior
    boundary, interior = tf.pick_pixels(e)
    assert boundary == (3, 7) and interior == (6, 2)


def test_pick_pixels_on_a_constant_map_gives_two_distinct_inner_pixels():
    b, i = tf.pick_pixels(np.zeros((5, 5)))
    assert b != i
    for p in (b, i):
        assert 0 < p[0] < 4 and 0 < p[1] < 4


def test_pick_pixels_needs_inner_pixels():
    with pytest.raises(ValueError, match="non-border"):
        tf.pick_pixels(np.zeros((2, 8)))


def test_neighbour_rows_are_the_four_neighbours():
    h, w = 4, 5
    sa = np.arange(h * w * h * w, dtype=np.float32).reshape(h * w, h * w)
    rows = tf.neighbour_rows(sa, (h, w), (1, 2))
    assert list(rows) == ["left", "right", "up", "down"]
    for name, idx in {"left": 1 * w + 1, "right": 1 * w + 3, "up": 0 * w + 2, "down": 2 * w + 2}.items():
        assert np.array_equal(rows[name], sa[idx].reshape(h, w))
    with pytest.raises(ValueError, match="border"):
        tf.neighbour_rows(sa, (h, w), (0, 2))


# ------------------------------------------------------------------------------------ grid limit
def test_grids_above_64_are_refused():
    assert tf.check_grid((64, 64)) == (64, 64)
    for grid in ((65, 64), (64, 65), (128, 128)):
        with pytest.raises(ConfigError, match="too large"):
            tf.check_grid(grid)


def test_walk_refuses_a_large_grid_before_any_forward():
    def boom(*a, **k):
        raise AssertionError("the grid must be checked before the model runs")

    bb = SimpleNamespace(attention_sites=lambda: [SimpleNamespace(grid=(65, 65)), SimpleNamespace(grid=(33, 33))],
                         encode=boom, predict=boom, timesteps=lambda s: [0, 99], resolution=1040)
    with pytest.raises(ConfigError, match="65x65"):
        tf.walk_trajectory(bb, np.zeros((8, 8, 3), np.uint8), PARAMS)
    with pytest.raises(ConfigError, match="65x65"):
        tf.trajectory_pca_figure(bb, np.zeros((8, 8, 3), np.uint8), PARAMS, "/nonexistent/a.png", "/nonexistent/a.pdf")


# ------------------------------------------------------------------------------------ the walk
def test_walk_equals_run_teacher_and_sa_is_the_reference(rgb, walked):
    from trace_edges.teacher.capture import capture_qk
    from trace_edges.teacher.divergence import abdiv, aggregate_attention, iep
    from trace_edges.teacher.trajectory import run_teacher

    ref = run_teacher(tiny_backbone("sd3"), rgb, PARAMS)
    assert walked.steps == ref.steps and walked.grid == ref.grid
    assert walked.t_star == ref.t_star and walked.kl_curve == ref.kl_curve
    assert np.array_equal(walked.abdiv, ref.abdiv)
    n = ref.grid[0] * ref.grid[1]
    assert len(walked.sa) == len(ref.steps) and walked.sa[0].shape == (n, n)
    assert all(np.allclose(s.sum(1), 1.0, atol=1e-5) for s in walked.sa)
    # t* from the materialised maps with the reference `iep` (Eq. 1) is the same step
    t_ref, curve = iep({t: torch.from_numpy(s) for t, s in zip(walked.steps, walked.sa)})
    assert t_ref == walked.t_star
    assert all(abs(curve[t] - walked.kl_curve[t]) <= 1e-4 * abs(walked.kl_curve[t]) + 1e-9 for t in curve)
    # ABDiv of the materialised SA at t* is the teacher's edge map
    k = walked.index(walked.t_star)
    assert np.allclose(abdiv(torch.from_numpy(walked.sa[k]), walked.grid).numpy(), ref.edge, rtol=1e-4, atol=1e-7)
    # SA at step 0 (the clean latent) equals aggregate_attention on a fresh capture
    bb = tiny_backbone("sd3")
    with torch.no_grad(), capture_qk(bb) as cap:
        bb.predict(bb.encode(rgb), 0)
        c = cap.pop()
    sa0 = aggregate_attention([x.q.float() for x in c], [x.k.float() for x in c], [x.grid for x in c], ref.grid,
                              [x.scale for x in c])
    assert np.allclose(walked.sa[0], sa0.numpy(), atol=1e-6)
    assert walked.image.shape == (256, 256, 3)


def test_pair_divergences_sum_to_abdiv(walked):
    k = walked.index(walked.t_star)
    e = walked.abdiv[k]
    for p in tf.pick_pixels(e):
        terms = tf.pair_divergences(walked.sa[k], walked.grid, p)
        assert abs(terms["vertical"] + terms["horizontal"] - float(e[p])) <= 1e-4 * float(e[p]) + 1e-7


# ------------------------------------------------------------------------------------ figures
def test_trajectory_pca_figure(tmp_path, rgb, walked):
    png, pdf = tmp_path / "pca.png", tmp_path / "pca.pdf"
    out = tf.trajectory_pca_figure(tiny_backbone("sd3"), rgb, PARAMS, png, pdf, dpi=80)
    _nonempty(png, pdf)
    assert out["t_star"] == walked.t_star  # == run_teacher(...).t_star (test above)
    assert out["steps"] == walked.steps and out["grid"] == walked.grid
    assert tf.TINY_NOTE in out["title"] and f"t* = {walked.t_star}" in out["title"]
    assert not list(tmp_path.glob(".*"))  # no temporaries left behind


def test_trajectory_pca_figure_t_star_matches_run_teacher_on_noise(tmp_path, rgb):
    from trace_edges.teacher.trajectory import run_teacher

    params = dict(PARAMS, trajectory="noise", stride=250, backbone=dict(PARAMS["backbone"], tiny=False))
    out = tf.trajectory_pca_figure(tiny_backbone("sd3"), rgb, params, tmp_path / "a.png", tmp_path / "a.pdf",
                                   dpi=60, seed=3)
    ref = run_teacher(tiny_backbone("sd3"), rgb, params, seed=3)
    assert out["t_star"] == ref.t_star and out["kl_curve"] == ref.kl_curve
    assert tf.TINY_NOTE not in out["title"]


def test_neighbour_attention_figure(tmp_path, rgb, walked):
    png, pdf = tmp_path / "nb.png", tmp_path / "nb.pdf"
    out = tf.neighbour_attention_figure(tiny_backbone("sd3"), rgb, PARAMS, png, pdf, dpi=80)
    _nonempty(png, pdf)
    h, w = walked.grid
    e = walked.abdiv[walked.index(walked.t_star)]
    assert out["t_star"] == walked.t_star
    assert (out["boundary"], out["interior"]) == tf.pick_pixels(e)
    for p in (out["boundary"], out["interior"]):
        assert 0 < p[0] < h - 1 and 0 < p[1] < w - 1
    assert out["abdiv"]["boundary"] > out["abdiv"]["interior"]
    assert out["abdiv"]["boundary"] == pytest.approx(float(e[1:-1, 1:-1].max()))


def _synthetic_iep(path, n=5):
    steps = [99, 199, 299, 399, 499]
    rng = np.random.default_rng(0)
    images = {}
    for i in range(n):
        curve = {t: float(v) for t, v in zip(steps, rng.uniform(1e-4, 1e-2, size=len(steps)))}
        images[str(1000 + i)] = {"t_star": max(curve, key=curve.get), "kl_curve": {str(t): v for t, v in curve.items()},
                                 "grid": [16, 16]}
    hist = {}
    for v in images.values():
        hist[str(v["t_star"])] = hist.get(str(v["t_star"]), 0) + 1
    path.write_text(json.dumps({"images": images, "t_star_histogram": hist, "model": {"family": "sd3"}}))
    return images


def test_kl_curves_figure(tmp_path):
    images = _synthetic_iep(tmp_path / "iep.json")
    png, pdf = tmp_path / "kl.png", tmp_path / "kl.pdf"
    out = tf.kl_curves_figure(tmp_path / "iep.json", png, pdf, dpi=80, tiny=True)
    _nonempty(png, pdf)
    assert out["images"] == 5 and out["steps"] == [99, 199, 299, 399, 499]
    assert sum(out["t_star_histogram"].values()) == 5 and list(out["t_star_histogram"]) == out["steps"]
    for t, c in out["t_star_histogram"].items():
        assert c == sum(v["t_star"] == t for v in images.values())
    assert tf.TINY_NOTE in out["title"]
    # deterministic bytes
    png2, pdf2 = tmp_path / "kl2.png", tmp_path / "kl2.pdf"
    tf.kl_curves_figure(tmp_path / "iep.json", png2, pdf2, dpi=80, tiny=True)
    assert png.read_bytes() == png2.read_bytes() and pdf.read_bytes() == pdf2.read_bytes()


def test_kl_curves_figure_rejects_a_bad_iep_json(tmp_path):
    (tmp_path / "empty.json").write_text(json.dumps({"images": {}}))
    with pytest.raises(DataError, match="iep stage"):
        tf.kl_curves_figure(tmp_path / "empty.json", tmp_path / "a.png", tmp_path / "a.pdf")
    (tmp_path / "bad.json").write_text(json.dumps({"images": {"1": {"t_star": 99}}}))
    with pytest.raises(DataError, match="malformed"):
        tf.kl_curves_figure(tmp_path / "bad.json", tmp_path / "a.png", tmp_path / "a.pdf")
    assert not (tmp_path / "a.png").exists()


# ------------------------------------------------------------------------------------ CLI
@pytest.fixture
def cli_main(monkeypatch):
    from trace_edges import cli

    if "teacher_figures" not in cli.COMMAND_MODULES:
        monkeypatch.setattr(cli, "COMMAND_MODULES", tuple(cli.COMMAND_MODULES) + ("teacher_figures",))
    return cli.main


def test_cli_kl_and_user_errors(tmp_path, cli_main, capsys):
    _synthetic_iep(tmp_path / "iep.json", n=3)
    rc = cli_main(["teacher-figure", "--figure", "kl", "--iep", str(tmp_path / "iep.json"),
                   "--out-png", str(tmp_path / "kl.png"), "--out-pdf", str(tmp_path / "kl.pdf")])
    assert rc == 0
    _nonempty(tmp_path / "kl.png", tmp_path / "kl.pdf")
    rc = cli_main(["teacher-figure", "--figure", "kl", "--out-png", str(tmp_path / "x.png"),
                   "--out-pdf", str(tmp_path / "x.pdf")])
    assert rc == 2 and "--iep" in capsys.readouterr().err
    rc = cli_main(["teacher-figure", "--figure", "pca", "--out-png", str(tmp_path / "x.png"),
                   "--out-pdf", str(tmp_path / "x.pdf")])
    assert rc == 2 and "--image-id" in capsys.readouterr().err


def test_cli_neighbours_from_a_manifest(tmp_path, cli_main, coco_mini, capsys):
    manifest = {"images": [{"id": 37777, "file": str(coco_mini / "images" / "000000037777.jpg"),
                            "edge_gt": "edge_gt/37777.png"}], "gt": {}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    params = json.dumps({"backbone": {"model": str(tiny_model_dir("sd3")), "device": "cpu"}, "stride": 250})
    common = ["--params", params, "--manifest", str(tmp_path / "manifest.json")]
    rc = cli_main(["teacher-figure", "--figure", "neighbours", *common, "--image-id", "37777", "--dpi", "60",
                   "--out-png", str(tmp_path / "nb.png"), "--out-pdf", str(tmp_path / "nb.pdf")])
    assert rc == 0
    _nonempty(tmp_path / "nb.png", tmp_path / "nb.pdf")
    rc = cli_main(["teacher-figure", "--figure", "neighbours", *common, "--image-id", "1",
                   "--out-png", str(tmp_path / "x.png"), "--out-pdf", str(tmp_path / "x.pdf")])
    assert rc == 2 and "not in the manifest" in capsys.readouterr().err


def test_backbones_pca_figure_one_row_per_backbone(tmp_path, coco_mini):
    """Fig. 8 analogue: each backbone's own trajectory, t* as run_teacher finds it."""
    from trace_edges.teacher.trajectory import run_teacher

    rgb = load_rgb(coco_mini / "images" / "000000037777.jpg")
    runs = []
    for fam in ("sd15", "sd3", "dinov2"):
        p = validate({"backbone": {"family": fam, "model": str(tiny_model_dir(fam)),
                                   "resolution": tiny_backbone(fam).resolution}}, block="teacher")
        runs.append((fam, tiny_backbone(fam), p))
    out = tf.backbones_pca_figure(runs, rgb, tmp_path / "b.png", tmp_path / "b.pdf")
    assert list(out) == ["sd15", "sd3", "dinov2"]
    for fam, bb, p in runs[:2]:
        assert out[fam]["t_star"] == run_teacher(bb, rgb, p).t_star
    # the non-diffusion control has no trajectory: no IEP, its 16x16 patch grid
    assert out["dinov2"] == {"t_star": None, "grid": (16, 16)}
    assert (tmp_path / "b.png").stat().st_size > 20_000 and (tmp_path / "b.pdf").stat().st_size > 5_000
