"""MaskCut (CutLER's iterative normalized cut on DINO ViT keys): known answers on planted patch
graphs, the eigen-solver against a naive dense reference, and the tiny random ViT end to end on
a real coco_mini image (offline)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import linalg

from trace_edges.errors import ConfigError
from trace_edges.masks import decode_rle
from trace_edges.proposals import get_proposer
from trace_edges.proposals.maskcut import maskcut_params, maskcut_proposals, upsample_mask
from trace_edges.proposals.ncut import (fiedler_vector, maskcut_patches, ncut_value, orient_bipartition,
                                        patch_affinity, seed_component)
from trace_edges.proposals.vit import TINY_VIT, build_tiny_vit, key_features, key_projection, load_vit, prepare_image
from trace_edges.stages._results import results_for_image

GRID = (12, 14)


def planted_objects(noise: float = 0.05, seed: int = 0):
    """Patch features of a background and two objects, each with its own feature direction."""
    h, w = GRID
    a = np.zeros(GRID, dtype=bool)
    a[2:6, 2:6] = True  # 16 patches
    b = np.zeros(GRID, dtype=bool)
    b[6:11, 8:13] = True  # 25 patches, not touching a
    rng = np.random.default_rng(seed)
    dirs = np.eye(8)
    labels = np.where(a, 1, np.where(b, 2, 0)).reshape(-1)
    feats = dirs[labels] + noise * rng.normal(size=(h * w, 8))
    return feats, a, b


# ----------------------------------------------------------------------------- the graph steps
def test_affinity_is_thresholded_cosine():
    f = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.0, 0.0]])
    W = patch_affinity(f, tau=0.2, eps=1e-5)
    assert W.shape == (4, 4) and np.array_equal(W, W.T)
    assert W[0, 1] == 1.0 and W[0, 0] == 1.0 and W[2, 2] == 1.0
    assert W[0, 2] == 1e-5 and W[1, 2] == 1e-5  # cos(0.9,0.1 ; 0,1) = 0.11 <= tau
    assert np.all(W[3] == 1e-5)  # a zero feature is similar to nothing, itself included
    assert patch_affinity(f, tau=0.0)[1, 2] == 1.0  # 0.11 > 0


def naive_fiedler(W):
    """Reference: the full spectrum of the (non-symmetric) D^-1 (D - W), second smallest."""
    d = W.sum(axis=1)
    vals, vecs = np.linalg.eig(np.diag(1.0 / d) @ (np.diag(d) - W))
    order = np.argsort(vals.real)
    return vecs[:, order[1]].real, float(vals.real[order[1]]), vals.real[order]


@pytest.mark.parametrize("kind", ["random", "thresholded"])
def test_fiedler_vector_matches_naive_dense_reference(kind):
    rng = np.random.default_rng(1)
    if kind == "random":
        X = rng.uniform(0.01, 1.0, size=(40, 40))
        W = 0.5 * (X + X.T)
    else:
        W = patch_affinity(rng.normal(size=(60, 6)), tau=0.2)
    x, lam = fiedler_vector(W)
    ref, lam_ref, spectrum = naive_fiedler(W)
    assert spectrum[2] - spectrum[1] > 1e-3  # a simple eigenvalue: the vector is unique up to scale
    assert lam == pytest.approx(lam_ref, rel=1e-8, abs=1e-10)
    cos = abs(x @ ref) / (np.linalg.norm(x) * np.linalg.norm(ref))
    assert cos == pytest.approx(1.0, abs=1e-8)
    d = W.sum(axis=1)
    assert np.allclose((np.diag(d) - W) @ x, lam * d * x, atol=1e-9)  # (D - W) x = lambda D x
    assert x @ (d * x) == pytest.approx(1.0)  # x^T D x = 1
    assert abs(d @ x) < 1e-8  # D-orthogonal to the constant (trivial) solution
    # and scipy's generalized solver on the pencil (D - W, D) gives the same eigenvalue
    lam_gen = linalg.eigh(np.diag(d) - W, np.diag(d), eigvals_only=True)[1]
    assert lam == pytest.approx(lam_gen, rel=1e-8, abs=1e-10)


def test_orientation_rules():
    h, w = 4, 4
    v = np.full(h * w, -1.0)
    v[5] = v[6] = 3.0  # two central patches stand out
    fg, seed = orient_bipartition(v, (h, w))
    assert fg.sum() == 2 and fg.reshape(-1)[[5, 6]].all() and seed in (5, 6)
    fg, seed = orient_bipartition(-v, (h, w))  # the sign of the eigenvector does not matter
    assert fg.sum() == 2 and seed in (5, 6)
    # the above-mean side holds the peak but 3 corners -> flipped to the other side
    v = np.zeros(h * w)
    v[[0, 3, 12]] = 1.0
    v[5] = 5.0
    v[15] = -0.5
    fg, seed = orient_bipartition(v, (h, w))
    assert not fg.reshape(-1)[[0, 3, 12, 5]].any() and fg.reshape(-1)[15] and seed == 15
    fg2, _ = orient_bipartition(v, (h, w), corner_limit=4)  # 3 corners allowed: no flip
    assert fg2.reshape(-1)[[0, 3, 12, 5]].all()


def test_seed_component_is_four_connected():
    fg = np.zeros((5, 5), dtype=bool)
    fg[1, 1] = fg[1, 2] = fg[2, 3] = True  # (2,3) touches (1,2) only diagonally
    comp = seed_component(fg, 1 * 5 + 1)
    assert comp.sum() == 2 and comp[1, 1] and comp[1, 2] and not comp[2, 3]
    assert not seed_component(fg, 0).any()  # seed outside the foreground


def test_ncut_value_by_hand():
    W = np.array([[1.0, 1.0, 0.1], [1.0, 1.0, 0.1], [0.1, 0.1, 1.0]])
    s = np.array([True, True, False])
    cut, vol_s, vol_t = 0.2, 4.2, 1.2
    assert ncut_value(W, s) == pytest.approx(cut / vol_s + cut / vol_t)
    assert ncut_value(W, np.zeros(3, bool)) == 2.0 and ncut_value(W, np.ones(3, bool)) == 2.0


# ----------------------------------------------------------------------------- planted objects
def test_bipartition_of_a_planted_two_block_affinity_is_exact():
    """Two blocks of mutually similar patches (an object in the middle, the rest around it)
    joined only by eps edges: the cut is exactly the two blocks, the object is the foreground."""
    obj = np.zeros(GRID, dtype=bool)
    obj[3:9, 4:10] = True
    same = obj.reshape(-1)[:, None] == obj.reshape(-1)[None, :]
    W = np.where(same, 1.0, 1e-5)
    vec, lam = fiedler_vector(W)
    assert lam < 1e-3
    fg, seed = orient_bipartition(vec, GRID)
    assert np.array_equal(fg, obj) and obj.reshape(-1)[seed]
    assert np.array_equal(seed_component(fg, seed), obj)
    # the same from features: two orthogonal directions + noise
    rng = np.random.default_rng(0)
    feats = np.eye(4)[obj.reshape(-1).astype(int)] + 0.05 * rng.normal(size=(obj.size, 4))
    cuts = maskcut_patches(feats, GRID, n_masks=1, tau=0.2)
    assert len(cuts) == 1 and np.array_equal(cuts[0].patches, obj)


def test_first_cut_of_two_objects_isolates_one_of_them():
    feats, a, b = planted_objects()
    W = patch_affinity(feats, tau=0.2)
    vec, _ = fiedler_vector(W)
    fg, seed = orient_bipartition(vec, GRID)
    comp = seed_component(fg, seed)
    assert np.array_equal(comp, a) or np.array_equal(comp, b)  # exactly one object, nothing else


@pytest.mark.parametrize("noise_seed", [0, 1, 2])
def test_iterative_maskcut_finds_both_objects(noise_seed):
    feats, a, b = planted_objects(seed=noise_seed)
    cuts = maskcut_patches(feats, GRID, n_masks=3, tau=0.2)
    assert len(cuts) >= 2
    found = [c.patches for c in cuts[:2]]
    assert ({np.packbits(m).tobytes() for m in found} == {np.packbits(a).tobytes(), np.packbits(b).tobytes()})
    for c in cuts[2:]:  # a third round may only return background, never a piece of an object
        assert not (c.patches & (a | b)).any()
    assert all(0.0 <= c.ncut < 0.2 for c in cuts[:2])  # cheap cuts (noise adds a few cos > tau links)
    assert [c.round for c in cuts[:2]] == [0, 1]
    for i in range(len(cuts)):  # returned masks are disjoint
        for j in range(i):
            assert not (cuts[i].patches & cuts[j].patches).any()
    # n_masks bounds the rounds
    one = maskcut_patches(feats, GRID, n_masks=1, tau=0.2)
    assert len(one) == 1 and np.array_equal(one[0].patches, cuts[0].patches)


def test_maskcut_rejects_tiny_masks_from_round_one():
    feats, a, b = planted_objects()
    # 16/168 = 9.5 % and 25/168 = 14.9 %: a 10 % floor rejects the small object, except in round 0
    cuts = maskcut_patches(feats, GRID, n_masks=3, tau=0.2, min_frac=0.10)
    assert all(c.patches.mean() > 0.10 for c in cuts if c.round >= 1)
    assert not any(np.array_equal(c.patches, a) for c in cuts if c.round >= 1)


def test_maskcut_round_zero_has_no_size_check():
    """CutLER checks size and overlap only from round 1 on: a one-patch object (1/168 <= 1 %) is
    the first mask. (The old loop rejected it in round 0 and returned nothing.)"""
    labels = np.zeros(GRID, dtype=int)
    labels[5, 6] = 1
    feats = np.eye(4)[labels.reshape(-1)]
    cuts = maskcut_patches(feats, GRID, n_masks=3, tau=0.2, min_frac=0.01)
    assert len(cuts) == 1 and cuts[0].round == 0
    assert np.array_equal(cuts[0].patches, labels == 1)


def test_maskcut_iou_rejection_repeats_the_cut_against_an_empty_mask(monkeypatch):
    """CutLER's loop: a candidate with IoU > 0.5 with the previous mask is rejected, the mask of
    that round becomes empty and the graph is unchanged, so the next round finds the same
    candidate, compares it with the empty mask (IoU 0) and accepts it. Rejected rounds count
    towards N. (The old loop stopped at the first rejection.) The cut is scripted as a function
    of the graph: A on the full graph, B once A's patches are disconnected."""
    from trace_edges.proposals import ncut

    A = np.zeros(GRID, dtype=bool)
    A[2:6, 2:8] = True
    B = np.zeros(GRID, dtype=bool)
    B[2:6, 3:9] = True  # IoU(A, B) = 20 / 28 > 0.5
    calls = []

    def scripted_fiedler(W):
        disconnected = np.all(W <= ncut.AFFINITY_EPS, axis=1)
        m = B if disconnected.any() else A
        calls.append(bool(disconnected.any()))
        v = np.where(m.reshape(-1), 1.0, -0.5)
        v[np.flatnonzero(m.reshape(-1))[0]] = 2.0  # the peak lies in m
        return v, 0.0

    monkeypatch.setattr(ncut, "fiedler_vector", scripted_fiedler)
    feats = np.ones((GRID[0] * GRID[1], 3))
    cuts = ncut.maskcut_patches(feats, GRID, n_masks=3, tau=0.2)
    assert [c.round for c in cuts] == [0, 2]  # round 1 rejected (IoU 0.71), round 2 accepts B
    assert np.array_equal(cuts[0].patches, A)
    assert np.array_equal(cuts[1].patches, B & ~A)  # disjoint: B minus A's patches
    # with N = 2 the rejected round uses up the budget
    two = ncut.maskcut_patches(feats, GRID, n_masks=2, tau=0.2)
    assert [c.round for c in two] == [0]
    # a too-small candidate after round 0 is rejected in every remaining round
    Bs = np.zeros(GRID, dtype=bool)
    Bs[10, 12] = True
    B[:] = Bs
    small = ncut.maskcut_patches(feats, GRID, n_masks=3, tau=0.2, min_frac=0.01)
    assert [c.round for c in small] == [0]


def test_upsample_mask():
    grid = np.zeros((4, 4), dtype=bool)
    assert not upsample_mask(grid, (30, 50)).any()
    assert upsample_mask(~grid, (30, 50)).all()
    grid[1:3, 1:3] = True
    up = upsample_mask(grid, (40, 40))  # 10 px per patch: the block is pixels 10..29
    assert up.shape == (40, 40)
    assert up[15:25, 15:25].all() and not up[:5].any() and not up[:, 35:].any()
    assert abs(int(up.sum()) - 400) <= 2 * 40  # about the 20x20 block, edges within half a patch


# ----------------------------------------------------------------------------- the tiny ViT
@pytest.fixture(scope="module")
def tiny_vit_dir(tmp_path_factory):
    return build_tiny_vit(tmp_path_factory.mktemp("vit") / "tiny-dino", seed=0)


@pytest.fixture(scope="module")
def rgb(coco_mini):
    from trace_edges.data.images import load_rgb

    return load_rgb(coco_mini / "images" / "000000087038.jpg")


def test_tiny_vit_build_is_deterministic(tiny_vit_dir, tmp_path):
    again = build_tiny_vit(tmp_path / "again", seed=0)
    other = build_tiny_vit(tmp_path / "other", seed=1)
    w = (tiny_vit_dir / "model.safetensors").read_bytes()
    assert (again / "model.safetensors").read_bytes() == w
    assert (other / "model.safetensors").read_bytes() != w
    cfg = json.loads((tiny_vit_dir / "config.json").read_text())
    assert cfg["model_type"] == "vit" and cfg["patch_size"] == TINY_VIT["patch_size"] == 8


def test_key_features_are_the_last_layers_keys(tiny_vit_dir, rgb):
    vit = load_vit(str(tiny_vit_dir), None, "cpu")
    x = prepare_image(rgb, 64)
    assert x.shape == (1, 3, 64, 64) and x.dtype == torch.float32
    feats, grid = key_features(vit, x)
    assert grid == (8, 8) and feats.shape == (64, TINY_VIT["hidden_size"])
    proj = key_projection(vit)
    assert not proj._forward_hooks  # the hook is gone
    # independent check: the key projection applied to the last layer's (pre-normed) input
    with torch.no_grad():
        out = vit(pixel_values=x, interpolate_pos_encoding=True, output_hidden_states=True)
        last = vit.layers[-1] if hasattr(vit, "layers") else vit.encoder.layer[-1]
        ref = proj(last.layernorm_before(out.hidden_states[-2]))[0, 1:]
    assert np.allclose(feats, ref.double().numpy(), atol=1e-6)


def test_tiny_vit_end_to_end_on_a_coco_image(tiny_vit_dir, rgb):
    params = {"model": str(tiny_vit_dir), "device": "cpu", "resolution": 224}
    masks, scores = maskcut_proposals(rgb, params)
    assert 1 <= len(masks) <= 3
    assert all(m.dtype == bool and m.shape == rgb.shape[:2] and m.any() for m in masks)
    assert np.all((scores > 0) & (scores <= 1)) and np.all(np.diff(scores) <= 0)
    results = results_for_image(87038, masks, scores)
    assert len(results) == len(masks)
    for r, m in zip(results, masks):
        assert r["segmentation"]["size"] == list(rgb.shape[:2]) and isinstance(r["segmentation"]["counts"], str)
        assert np.array_equal(decode_rle(r["segmentation"]), m)
    # deterministic: same image, same model -> identical masks and scores
    again, again_scores = maskcut_proposals(rgb, params)
    assert np.array_equal(scores, again_scores) and all(np.array_equal(x, y) for x, y in zip(masks, again))
    # the registry returns the same function
    assert get_proposer("maskcut") is maskcut_proposals


def test_params_and_model_checks(tiny_vit_dir, rgb):
    p = maskcut_params({})
    assert p["tau"] == 0.2 and p["n_masks"] == 3 and p["patch_size"] == 8 and p["model"] == "build/models/tiny-dino"
    with pytest.raises(ConfigError, match="maskcut.tau"):
        maskcut_params({"tau": 2})
    with pytest.raises(ConfigError, match="patch size 8"):
        maskcut_proposals(rgb, {"model": str(tiny_vit_dir), "device": "cpu", "patch_size": 16})
    with pytest.raises(ConfigError, match="multiple of the patch size"):
        maskcut_proposals(rgb, {"model": str(tiny_vit_dir), "device": "cpu", "resolution": 100})


def test_stage_writes_results_and_provenance(tiny_vit_dir, tmp_path, coco_mini):
    from trace_edges.config import validate
    from trace_edges.data.coco import prepare
    from trace_edges.masks import ann_to_mask
    from trace_edges.stages.proposals import run_proposals

    cfg = validate({"data": {"root": str(coco_mini), "max_images": 2},
                    "proposals": {"method": "maskcut",
                                  "maskcut": {"model": str(tiny_vit_dir), "device": "cpu"}}})
    prepare(cfg["data"], cfg["edge_gt"], tmp_path / "data")
    out = tmp_path / "proposals/maskcut/proposals.json"
    n = run_proposals(cfg["proposals"], tmp_path / "data/manifest.json", out)
    res = json.loads(out.read_text())
    assert n == len(res) >= 2
    manifest = json.loads((tmp_path / "data/manifest.json").read_text())
    sizes = {r["id"]: (r["height"], r["width"]) for r in manifest["images"]}
    assert {r["image_id"] for r in res} <= set(sizes)
    for r in res:
        assert 0 < r["score"] <= 1 and ann_to_mask(r["segmentation"], *sizes[r["image_id"]]).any()
    prov = json.loads(out.with_suffix(".provenance.json").read_text())
    assert prov["model"]["class"] == "ViTModel" and prov["model"]["local"] is True
    assert any(k.endswith("model.safetensors") for k in prov["inputs"])
    assert prov["config_values"]["proposals.maskcut.tau"] == 0.2
    before = out.read_bytes()
    run_proposals(cfg["proposals"], tmp_path / "data/manifest.json", out)  # resumed: same bytes
    assert out.read_bytes() == before
