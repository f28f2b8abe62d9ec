"""What the teacher figures show, computed (teacher/attention_views.py): pure helpers (PCA -> RGB,
pixel picking, neighbour rows), the grid limit, the SA-keeping trajectory walk against run_teacher,
and reading iep.json. The drawing is tested in test_teacher_figures.py."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from trace_edges.backbones.tiny import tiny_backbone
from trace_edges.config import validate
from trace_edges.errors import ConfigError, DataError
from trace_edges.teacher import attention_views as av

PARAMS = validate({}, block="teacher")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test of this module runs torch on one thread (conftest.one_torch_thread)."""
    yield


def _softmax_rows(rng, s, n, d):
    x = rng.normal(size=(s, n, d))
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------------------ PCA helper
def test_pca_rgb_range_shape_and_determinism():
    rows = _softmax_rows(np.random.default_rng(0), 4, 6 * 5, 6 * 5)
    a = av.pca_rgb(rows, (6, 5))
    assert a.shape == (4, 6, 5, 3) and a.dtype == np.float32
    assert np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0 and a.std() > 0
    assert np.array_equal(a, av.pca_rgb(rows.copy(), (6, 5)))
    # a list of maps is the same joint fit as the stacked array
    assert np.array_equal(a, av.pca_rgb(list(rows), (6, 5)))
    one = av.pca_rgb(rows[0], (6, 5))
    assert one.shape == (6, 5, 3) and one.min() >= 0.0 and one.max() <= 1.0


def test_pca_basis_is_orthonormal_with_a_fixed_sign():
    rows = _softmax_rows(np.random.default_rng(1), 3, 16, 16)
    mean, axes = av.pca_basis(rows)
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
    rgbs = av.pca_rgb([step, step, np.full((n, n), 1.0 / n, np.float32)], (h, w))
    assert np.array_equal(rgbs[0], rgbs[1])
    left, right = rgbs[0][:, : w // 2].reshape(-1, 3), rgbs[0][:, w // 2:].reshape(-1, 3)
    assert np.ptp(left, 0).max() == 0 and np.ptp(right, 0).max() == 0
    assert np.abs(left[0] - right[0]).max() > 0.5


def test_pca_rgb_rejects_rows_that_do_not_fill_the_grid():
    with pytest.raises(ValueError, match="grid"):
        av.pca_rgb(np.ones((10, 10), np.float32), (3, 4))


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
    boundary, interior = av.pick_pixels(e)
    assert boundary == (3, 7) and interior == (6, 2)


def test_pick_pixels_on_a_constant_map_gives_two_distinct_inner_pixels():
    b, i = av.pick_pixels(np.zeros((5, 5)))
    assert b != i
    for p in (b, i):
        assert 0 < p[0] < 4 and 0 < p[1] < 4


def test_pick_pixels_needs_inner_pixels():
    with pytest.raises(ValueError, match="non-border"):
        av.pick_pixels(np.zeros((2, 8)))


def test_neighbour_rows_are_the_four_neighbours():
    h, w = 4, 5
    sa = np.arange(h * w * h * w, dtype=np.float32).reshape(h * w, h * w)
    rows = av.neighbour_rows(sa, (h, w), (1, 2))
    assert list(rows) == ["left", "right", "up", "down"]
    for name, idx in {"left": 1 * w + 1, "right": 1 * w + 3, "up": 0 * w + 2, "down": 2 * w + 2}.items():
        assert np.array_equal(rows[name], sa[idx].reshape(h, w))
    with pytest.raises(ValueError, match="border"):
        av.neighbour_rows(sa, (h, w), (0, 2))


# ------------------------------------------------------------------------------------ grid limit
def test_grids_above_64_are_refused():
    assert av.check_grid((64, 64)) == (64, 64)
    for grid in ((65, 64), (64, 65), (128, 128)):
        with pytest.raises(ConfigError, match="too large"):
            av.check_grid(grid)


def test_walk_refuses_a_large_grid_before_any_forward():
    def boom(*a, **k):
        raise AssertionError("the grid must be checked before the model runs")

    bb = SimpleNamespace(attention_sites=lambda: [SimpleNamespace(grid=(65, 65)), SimpleNamespace(grid=(33, 33))],
                         encode=boom, predict=boom, timesteps=lambda s: [0, 99], resolution=1040)
    with pytest.raises(ConfigError, match="65x65"):
        av.walk_trajectory(bb, np.zeros((8, 8, 3), np.uint8), PARAMS)


# ------------------------------------------------------------------------------------ the walk
def test_walk_equals_run_teacher_and_sa_is_the_reference(rgb_37777, walked):
    from trace_edges.teacher.capture import capture_qk
    from trace_edges.teacher.divergence import abdiv, aggregate_attention, iep
    from trace_edges.teacher.trajectory import run_teacher

    ref = run_teacher(tiny_backbone("sd3"), rgb_37777, PARAMS)
    assert walked.steps == ref.steps and walked.grid == ref.grid
    assert walked.t_star == ref.t_star and walked.divergence_curve == ref.divergence_curve
    assert np.array_equal(walked.abdiv, ref.abdiv)
    n = ref.grid[0] * ref.grid[1]
    assert len(walked.sa) == len(ref.steps) and walked.sa[0].shape == (n, n)
    assert all(np.allclose(s.sum(1), 1.0, atol=1e-5) for s in walked.sa)
    # t* from the materialised maps with the reference `iep` (Eq. 1) is the same step
    t_ref, curve = iep({t: torch.from_numpy(s) for t, s in zip(walked.steps, walked.sa)})
    assert t_ref == walked.t_star
    want = walked.divergence_curve
    assert all(abs(curve[t] - want[t]) <= 1e-4 * abs(want[t]) + 1e-9 for t in curve)
    # ABDiv of the materialised SA at t* is the teacher's edge map
    k = walked.index(walked.t_star)
    assert np.allclose(abdiv(torch.from_numpy(walked.sa[k]), walked.grid).numpy(), ref.edge, rtol=1e-4, atol=1e-7)
    # SA at step 0 (the clean latent) equals aggregate_attention on a fresh capture
    bb = tiny_backbone("sd3")
    with torch.no_grad(), capture_qk(bb) as cap:
        bb.predict(bb.encode(rgb_37777), 0)
        c = cap.pop()
    sa0 = aggregate_attention([x.q.float() for x in c], [x.k.float() for x in c], [x.grid for x in c], ref.grid,
                              [x.scale for x in c])
    assert np.allclose(walked.sa[0], sa0.numpy(), atol=1e-6)
    assert walked.image.shape == (256, 256, 3)


def test_pair_divergences_sum_to_abdiv(walked):
    k = walked.index(walked.t_star)
    e = walked.abdiv[k]
    for p in av.pick_pixels(e):
        terms = av.pair_divergences(walked.sa[k], walked.grid, p)
        assert abs(terms["vertical"] + terms["horizontal"] - float(e[p])) <= 1e-4 * float(e[p]) + 1e-7


# ------------------------------------------------------------------------------------ iep.json
def _iep(path, images):
    path.write_text(json.dumps({"images": images, "model": {"family": "sd3"}}))
    return path


def test_load_iep_reads_the_divergence_curve_sorted(tmp_path):
    p = _iep(tmp_path / "iep.json", {
        "7": {"t_star": 199, "divergence": "jsd", "divergence_curve": {"299": 0.1, "99": 0.2, "199": 0.3},
              "grid": [16, 16]},
        "8": {"t_star": 99, "divergence": "jsd", "divergence_curve": {"99": 0.5}, "grid": [16, 16]}})
    recs = av.load_iep(p)
    assert recs["7"] == {"t_star": 199, "divergence": "jsd", "curve": {99: 0.2, 199: 0.3, 299: 0.1}}
    assert list(recs["7"]["curve"]) == [99, 199, 299] and recs["8"]["divergence"] == "jsd"


@pytest.mark.parametrize("entry, match", [
    ({"t_star": 99, "divergence": "kl", "kl_curve": {"99": 0.1}, "grid": [4, 4]}, "malformed"),  # old format
    ({"t_star": 99, "divergence_curve": {"99": 0.1}, "grid": [4, 4]}, "malformed"),  # no divergence name
    ({"t_star": 99, "divergence": "cosine", "divergence_curve": {"99": 0.1}, "grid": [4, 4]}, "unknown divergence"),
    ({"t_star": 0, "divergence": "kl", "divergence_curve": {}, "grid": [4, 4]}, "empty divergence curve"),
])
def test_load_iep_rejects_malformed_entries(tmp_path, entry, match):
    with pytest.raises(DataError, match=match):
        av.load_iep(_iep(tmp_path / "iep.json", {"1": entry}))


def test_load_iep_rejects_mixed_divergences(tmp_path):
    images = {str(i): {"t_star": 99, "divergence": d, "divergence_curve": {"99": 0.1}, "grid": [4, 4]}
              for i, d in enumerate(("kl", "mse"))}
    with pytest.raises(DataError, match="different divergences"):
        av.load_iep(_iep(tmp_path / "iep.json", images))
