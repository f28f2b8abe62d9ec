"""BGP: walls, split, IRN random-walk propagation, merge, and the whole pipeline.

Known-answer tests on synthetic scenes, plus a naive dense reference of the random walk.
"""

from __future__ import annotations

import numpy as np
import pytest

from trace_edges.bgp import bgp_params, bgp_stages, run_bgp
from trace_edges.bgp.merge import merge_masks, pairwise_intersections
from trace_edges.bgp.propagate import (build_affinity, build_transition, neighbour_offsets,
                                       pool_edge, pool_mask, propagate_masks, propagate_scores,
                                       random_walk, segment_points, upsample_bilinear,
                                       chebyshev_power_coeffs)
from trace_edges.bgp.split import split_mask, split_masks
from trace_edges.bgp.walls import edge_walls
from trace_edges.errors import ConfigError, DataError


def iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 0.0


def rect(shape, y0, y1, x0, x1):
    m = np.zeros(shape, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def outline(mask: np.ndarray) -> np.ndarray:
    """1-pixel outer boundary of a mask (the background pixels 4-adjacent to it): the object's
    contour drawn just outside it, as an edge detector marks the step between two regions."""
    from scipy import ndimage
    return ndimage.binary_dilation(mask) & ~mask


# --------------------------------------------------------------------------------------------
# Naive reference of the IRN walk (dense, loops over every pair); used only here.
# --------------------------------------------------------------------------------------------

def naive_supercover(y0, x0, y1, x1):
    """Cells whose closed unit square meets the segment between two cell centres, by brute
    force: the segment meets the square iff it is not strictly on one side of some separating
    axis (the square's 2 axes and the segment's normal), in exact integer arithmetic (x4)."""
    cells = set()
    for y in range(min(y0, y1) - 1, max(y0, y1) + 2):
        for x in range(min(x0, x1) - 1, max(x0, x1) + 2):
            # scale by 2 so the square's corners are integers
            ay, ax, by, bx = 2 * y0, 2 * x0, 2 * y1, 2 * x1
            cy, cx = 2 * y, 2 * x
            if max(ay, by) < cy - 1 or min(ay, by) > cy + 1:
                continue
            if max(ax, bx) < cx - 1 or min(ax, bx) > cx + 1:
                continue
            ny, nx = bx - ax, -(by - ay)  # normal of the segment
            side = [ny * (py - ay) + nx * (px - ax) for py in (cy - 1, cy + 1) for px in (cx - 1, cx + 1)]
            if min(side) > 0 or max(side) < 0:
                continue
            cells.add((y, x))
    return cells


def naive_transition(edge_grid: np.ndarray, radius: int, beta: float) -> np.ndarray:
    h, w = edge_grid.shape
    N = h * w
    A = np.zeros((N, N))
    for i in range(N):
        yi, xi = divmod(i, w)
        for j in range(N):
            yj, xj = divmod(j, w)
            dy, dx = yj - yi, xj - xi
            if i == j:
                A[i, j] = 1.0
                continue
            if dy * dy + dx * dx >= radius * radius:
                continue
            pts = naive_supercover(yi, xi, yj, xj)
            A[i, j] = 1.0 - max(edge_grid[p] for p in pts)
    Ab = A ** beta
    return Ab / Ab.sum(axis=1, keepdims=True)


def naive_scores(masks, edge, *, steps, beta, radius, stride, background, normalise=True):
    eg = pool_edge(edge, stride)
    keep = 1.0 - eg
    cols = [(pool_mask(m, stride) * keep).ravel() for m in masks]
    if background:
        union = np.logical_or.reduce(masks)
        cols.append((pool_mask(~union, stride) * keep).ravel())
    S0 = np.stack(cols, axis=1)
    T = naive_transition(eg, radius, beta)
    S = np.linalg.matrix_power(T, steps) @ S0
    if not normalise:
        return S.reshape(eg.shape + (-1,))
    mx = S.max(axis=0)
    return (S / np.where(mx > 0, mx, 1)).reshape(eg.shape + (-1,))


def naive_irn_labels(G, shape, stride, threshold):
    """IRN's make_sem_seg_labels decision at full resolution: upsample every map, divide by the
    global maximum, prepend a constant background map, argmax (first maximum wins)."""
    ups = np.stack([upsample_bilinear(g, shape, stride) for g in G])
    ups = ups / ups.max()
    padded = np.concatenate([np.full((1,) + tuple(shape), float(threshold)), ups])
    return np.argmax(padded, axis=0) - 1


def naive_propagated_masks(masks, edge, *, rule, steps, beta, radius, stride, threshold, background):
    """Both decision rules on full-resolution maps (dense walk; no crops, no deduplication)."""
    shape = edge.shape
    per_mask = rule == "per_mask"
    S = naive_scores(masks, edge, steps=steps, beta=beta, radius=radius, stride=stride,
                     background=background and per_mask, normalise=per_mask)
    G = np.moveaxis(S, -1, 0)
    if per_mask:
        ups = [upsample_bilinear(g, shape, stride) for g in G]
        new = [(u > threshold) & (u >= ups[-1]) if background else u > threshold for u in ups[:len(masks)]]
    else:
        lab = naive_irn_labels(G, shape, stride, threshold)
        new = [lab == k for k in range(len(masks))]
    return [n if n.any() else m for n, m in zip(new, masks)]


def two_squares_scene(size=64):
    """Two touching 24x24 squares (left, right) on a background; edges on both outlines."""
    shape = (size, size)
    a = rect(shape, 16, 40, 8, 32)
    b = rect(shape, 16, 40, 32, 56)
    edge = np.zeros(shape)
    edge[outline(a | b)] = 1.0
    edge[16:40, 32] = 1.0  # the separating line (1 px, first column of b)
    return shape, a, b, edge


# --------------------------------------------------------------------------------------------
# walls
# --------------------------------------------------------------------------------------------

def test_walls_mean_std_known_answer():
    e = np.zeros((10, 10))
    e[5, :] = 1.0  # mean 0.1, std 0.3 -> threshold 0.4
    w = edge_walls(e)
    assert w.sum() == 10 and w[5].all()
    e2 = e.copy()
    e2[2, 2] = 0.35  # mean ~0.1035, std ~0.3 -> below mu + sigma
    assert not edge_walls(e2)[2, 2]
    assert edge_walls(e2, k=0.0)[2, 2]  # above the mean


def test_walls_fixed_and_constant():
    e = np.full((8, 8), 0.2)
    e[3, 3] = 0.6
    assert edge_walls(e, mode="fixed", value=0.5).sum() == 1
    assert edge_walls(e, mode="fixed", value=0.6).sum() == 0  # strict
    assert not edge_walls(np.full((8, 8), 0.7)).any()
    assert not edge_walls(np.full((8, 8), 0.7), mode="fixed", value=0.5).any()
    assert not edge_walls(np.zeros((8, 8))).any()


def test_walls_reject_bad_maps():
    with pytest.raises(DataError):
        edge_walls(np.full((4, 4), np.nan))
    with pytest.raises(DataError):
        edge_walls(np.full((4, 4), 2.0))
    with pytest.raises(DataError):
        edge_walls(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError):
        edge_walls(np.eye(4), mode="otsu")


# --------------------------------------------------------------------------------------------
# split
# --------------------------------------------------------------------------------------------

def test_split_two_squares_exact():
    shape, a, b, edge = two_squares_scene()
    walls = edge > 0.5
    line = np.zeros(shape, dtype=bool)
    line[:, 32] = True
    pieces = split_mask(a | b, line, min_area=10)
    assert len(pieces) == 2
    assert np.array_equal(pieces[0], a)
    assert np.array_equal(pieces[1], b & ~line)
    # with the outline walls too, the pieces are the squares minus their outline pixels
    pieces = split_mask(a | b, walls, min_area=10)
    assert len(pieces) == 2
    assert np.array_equal(pieces[0] | pieces[1], (a | b) & ~walls)


def test_split_reattach_partitions_the_mask():
    shape, a, b, edge = two_squares_scene()
    walls = edge > 0.5
    sliver = rect(shape, 16, 40, 54, 56)  # 2-px strip cut off b by a second line: dropped
    walls2 = walls.copy()
    walls2[16:40, 53] = True
    pieces = split_mask(a | b, walls2, min_area=60, reattach=True)
    assert len(pieces) == 2
    assert np.array_equal(pieces[0] | pieces[1], a | b)  # every pixel of the mask is kept
    assert not (pieces[0] & pieces[1]).any()
    line = rect(shape, 16, 40, 32, 33)
    # the wall pixels at x = 32 are 1 px from both pieces: the EDT gives them to one side
    assert np.array_equal(pieces[0] & ~line, a) and np.array_equal(pieces[1] & ~line, b & ~line)
    assert (pieces[1] & sliver).sum() == sliver.sum()  # the dropped sliver joins its neighbour
    # without reattach the wall pixels and the sliver are left out
    plain = split_mask(a | b, walls2, min_area=60)
    assert np.array_equal(plain[0] | plain[1], (a | b) & ~walls2 & ~sliver)


def test_split_swallowed_and_small():
    shape = (32, 32)
    m = rect(shape, 10, 14, 10, 20)
    walls = np.zeros(shape, dtype=bool)
    walls[8:16, 8:22] = True  # the mask lies entirely under edges
    out = split_mask(m, walls, min_area=4)
    assert len(out) == 1 and np.array_equal(out[0], m)
    # a mask smaller than min_area is kept, not deleted
    out = split_mask(m, np.zeros(shape, bool), min_area=1000)
    assert len(out) == 1 and np.array_equal(out[0], m)
    # a small piece is dropped when a big one survives
    big = rect(shape, 0, 20, 0, 20) | rect(shape, 22, 24, 22, 24)
    out = split_mask(big, np.zeros(shape, bool), min_area=10)
    assert len(out) == 1 and np.array_equal(out[0], rect(shape, 0, 20, 0, 20))
    # empty mask
    out = split_mask(np.zeros(shape, bool), walls)
    assert len(out) == 1 and not out[0].any()


def test_split_connectivity():
    shape = (10, 10)
    m = np.zeros(shape, dtype=bool)
    m[0:3, 0:3] = True
    m[3:6, 3:6] = True  # touches the first block diagonally only
    no_walls = np.zeros(shape, dtype=bool)
    assert len(split_mask(m, no_walls, connectivity=1, min_area=1)) == 2
    assert len(split_mask(m, no_walls, connectivity=2, min_area=1)) == 1


def test_split_masks_parents_and_scores():
    shape, a, b, edge = two_squares_scene()
    walls = edge > 0.5
    other = rect(shape, 45, 60, 5, 20)
    pieces, scores, parent = split_masks([a | b, other], [0.9, 0.3], walls, min_area=10)
    assert len(pieces) == 3
    assert list(parent) == [0, 0, 1]
    assert list(scores) == [0.9, 0.9, 0.3]
    assert np.array_equal(pieces[2], other)


# --------------------------------------------------------------------------------------------
# propagation: transition matrix
# --------------------------------------------------------------------------------------------

def test_segment_points_symmetric_and_offsets():
    for dy in range(-5, 6):
        for dx in range(-5, 6):
            fwd = {tuple(p) for p in segment_points(dy, dx)}
            back = {(dy + int(p[0]), dx + int(p[1])) for p in segment_points(-dy, -dx)}
            assert fwd == back
            assert (0, 0) in fwd and (dy, dx) in fwd
            assert fwd == naive_supercover(0, 0, dy, dx)
    assert {tuple(p) for p in segment_points(1, 1)} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert {tuple(p) for p in segment_points(0, 3)} == {(0, 0), (0, 1), (0, 2), (0, 3)}
    assert {tuple(p) for p in segment_points(1, 2)} == {(0, 0), (0, 1), (1, 1), (1, 2)}
    # (1, 3) passes exactly through the corner (1/2, 3/2): all four cells around it count
    assert {tuple(p) for p in segment_points(1, 3)} == {(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (1, 3)}
    offs = neighbour_offsets(5)
    assert len(offs) == 34  # 68 neighbours with dy^2 + dx^2 < 25, IRN's search directions
    assert all(dy * dy + dx * dx < 25 for dy, dx in offs)


def test_transition_rows_symmetry_and_wall():
    rng = np.random.default_rng(0)
    e = rng.uniform(0, 0.5, size=(12, 14))
    e[:, 7] = 1.0  # a full-height wall of value 1
    A = build_affinity(e, radius=5)
    assert abs(A - A.T).max() == 0  # exactly symmetric
    assert np.all(A.diagonal() == 1.0)
    T = build_transition(e, radius=5, beta=10, stride=1)
    np.testing.assert_allclose(np.asarray(T.sum(axis=1)).ravel(), 1.0, atol=1e-12)
    Td = T.toarray()
    cols = np.arange(12 * 14) % 14
    left, right = cols < 7, cols > 7
    assert Td[np.ix_(left, right)].max() == 0.0
    assert Td[np.ix_(right, left)].max() == 0.0
    wall = cols == 7
    assert np.all(Td[np.ix_(wall, ~wall)] == 0.0)  # a wall cell only keeps its self-loop
    np.testing.assert_allclose(Td, naive_transition(e, 5, 10), atol=1e-12)


def test_transition_is_sparse_and_pooled():
    e = np.zeros((40, 48))
    e[:, 21] = 1.0  # a 1-px wall survives stride-4 max pooling
    T = build_transition(e, radius=5, beta=10, stride=4)
    assert T.shape == (10 * 12, 10 * 12)
    assert T.format == "csr"
    assert T.nnz < 69 * 120
    eg = pool_edge(e, 4)
    assert eg.shape == (10, 12) and np.all(eg[:, 5] == 1.0) and eg.sum() == 10


def test_pool_mask_partial_blocks():
    m = np.ones((5, 7), dtype=bool)
    g = pool_mask(m, 4)
    assert g.shape == (2, 2) and np.all(g == 1.0)  # partial border blocks average real pixels only
    m[0, 0] = False
    assert pool_mask(m, 4)[0, 0] == pytest.approx(15 / 16)


# --------------------------------------------------------------------------------------------
# propagation: fast path == naive reference
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("background", [True, False])
def test_fast_walk_equals_naive(background):
    rng = np.random.default_rng(1)
    shape = (26, 30)
    e = rng.uniform(0, 0.3, size=shape)
    e[8:20, 12:14] = 0.95
    masks = [rect(shape, 2, 10, 2, 12), rect(shape, 12, 24, 16, 28), rect(shape, 5, 20, 5, 25)]
    for stride, steps, radius in ((1, 256, 5), (2, 256, 5), (2, 40, 4), (3, 256, 3)):
        kw = dict(steps=steps, beta=10, radius=radius, stride=stride, background=background)
        fast = propagate_scores(masks, e, **kw)["scores"]
        ref = naive_scores(masks, e, **kw)
        assert fast.shape == ref.shape
        np.testing.assert_allclose(fast, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("rule", ["irn", "per_mask"])
def test_propagate_masks_equals_naive_full_resolution(rule):
    """Each rule's fast path (Chebyshev walk, cropped upsampling, IRN's global max found without
    upsampling every map) gives exactly the masks of the dense full-resolution computation."""
    rng = np.random.default_rng(11)
    shape = (26, 30)
    e = rng.uniform(0, 0.3, size=shape)
    e[8:20, 12:14] = 0.95
    masks = [rect(shape, 2, 10, 2, 12), rect(shape, 12, 24, 16, 28), rect(shape, 5, 20, 5, 25),
             rect(shape, 22, 25, 1, 4)]
    n_changed = 0
    for stride, steps, radius, thr in ((1, 256, 5, 0.25), (2, 256, 5, 0.25), (3, 40, 4, 0.1), (4, 256, 3, 0.5)):
        kw = dict(steps=steps, beta=10, radius=radius, stride=stride, threshold=thr, background=True)
        fast = propagate_masks(masks, e, rule=rule, **kw)
        ref = naive_propagated_masks(masks, e, rule=rule, **kw)
        for f, r in zip(fast, ref):
            np.testing.assert_array_equal(f, r)
        n_changed += sum(not np.array_equal(f, m) for f, m in zip(fast, masks))
    assert n_changed > 0  # propagation did something in these cases


def _upsampler_cases():
    """``((H, W), stride, (h, w), upsampler)`` for image sizes that do and do not divide the stride."""
    from trace_edges.bgp.propagate import _Upsampler

    for (H, W), stride in (((37, 45), 4), ((64, 48), 8), ((20, 20), 1), ((33, 17), 3)):
        h, w = -(-H // stride), -(-W // stride)
        yield (H, W), stride, (h, w), _Upsampler((H, W), (h, w), stride)


def test_irn_assign_equals_full_argmax_with_ties():
    from trace_edges.bgp.propagate import _Upsampler, irn_assign
    rng = np.random.default_rng(12)
    for (H, W), stride, (h, w), up in _upsampler_cases():
        for trial in range(4):
            G = rng.uniform(size=(5, h, w)) ** 4
            G[1] = G[0]                       # a tie: channel 0 keeps it
            G[3] = 0.0                        # an empty map never wins
            if trial == 1:
                G[4] = np.full((h, w), 0.3)   # a flat map: ties with the background after scaling
            labels, M = irn_assign(G, up, 0.25)
            ref = naive_irn_labels(G, (H, W), stride, 0.25)
            np.testing.assert_array_equal(labels, ref)
            assert M == max(upsample_bilinear(g, (H, W), stride).max() for g in G)
            assert not (labels == 1).any() and not (labels == 3).any()
    labels, M = irn_assign(np.zeros((2, 4, 4)), _Upsampler((8, 8), (4, 4), 2), 0.25)
    assert M == 0.0 and (labels == -1).all()


def test_rules_differ_irn_uses_the_global_maximum():
    """Two closed enclosures of 720 px each. A seeds all of the left one, B only 36 px of the
    right one. The walk cannot cross the walls, so B's mass (36 px worth) spreads over its
    enclosure at ~36/720 = 0.05 of A's score. per_mask divides B by its own maximum: B fills its
    enclosure. IRN divides by the global maximum (A's): B's spread stays under 0.25, it wins no
    pixel and is returned unchanged (propagation never deletes)."""
    from scipy import ndimage
    shape = (48, 48)
    left, right = rect(shape, 4, 44, 4, 22), rect(shape, 4, 44, 26, 44)
    e = np.zeros(shape)
    for box in (left, right):
        e[ndimage.binary_dilation(box) & ~box] = 1.0
    a, b = left.copy(), rect(shape, 20, 26, 32, 38)
    kw = dict(steps=256, beta=10, radius=5, stride=2, threshold=0.25)
    own = propagate_masks([a, b], e, rule="per_mask", background=True, **kw)
    irn = propagate_masks([a, b], e, rule="irn", **kw)
    assert np.array_equal(own[0], a) and np.array_equal(irn[0], a)
    assert (own[1] & right).sum() >= 0.95 * right.sum() and not (own[1] & ~right).any()
    assert np.array_equal(irn[1], b)
    with pytest.raises(ValueError, match="unknown rule"):
        propagate_masks([a], e, rule="nope")


def test_default_rule_is_irns_argmax():
    """Issue 14 item 5: with no rule given, propagation (and BGP with the schema defaults) is IRN's
    decision: the dense walk's scores divided by the one global maximum, argmax against a constant
    background score of 0.25 (naive_irn_labels). The scene of the test above separates the rules:
    the old default (per_mask) grows B over its whole enclosure, IRN's rule leaves it unchanged."""
    from scipy import ndimage
    shape = (48, 48)
    left, right = rect(shape, 4, 44, 4, 22), rect(shape, 4, 44, 26, 44)
    e = np.zeros(shape)
    for box in (left, right):
        e[ndimage.binary_dilation(box) & ~box] = 1.0
    e[20:24, 8:12] = 0.3  # a soft obstacle inside the left enclosure
    a, b = rect(shape, 6, 40, 6, 14), rect(shape, 20, 26, 32, 38)
    # 30 steps: the scores are not yet flat inside the enclosure, so no pixel ties with 0.25 (at
    # convergence a pixel next to a wall is exactly 0.25 * M and float rounding would decide it)
    kw = dict(steps=30, beta=10, radius=5, stride=2)
    G = np.moveaxis(naive_scores([a, b], e, background=False, normalise=False, **kw), -1, 0)
    ups = np.stack([upsample_bilinear(g, shape, 2) for g in G])
    assert np.abs(ups / ups.max() - 0.25).min() > 1e-7
    lab = naive_irn_labels(G, shape, 2, 0.25)
    ref = [lab == k if (lab == k).any() else m for k, m in enumerate((a, b))]
    assert not np.array_equal(ref[0], a) and np.array_equal(ref[1], b)  # A grows, B wins no pixel

    default = propagate_masks([a, b], e, **kw)
    for got, want in zip(default, ref):
        np.testing.assert_array_equal(got, want)
    old = propagate_masks([a, b], e, rule="per_mask", **kw)
    assert not np.array_equal(old[1], ref[1])  # the earlier default differs here

    p = bgp_params({})
    assert p["propagate"]["rule"] == "irn" and p["propagate"]["threshold"] == 0.25
    stages = bgp_stages([a, b], [0.9, 0.5], e, {"propagate": {"stride": 2, "steps": 30}})
    pieces = stages["split"][0]
    G = np.moveaxis(naive_scores(pieces, e, background=False, normalise=False, **kw), -1, 0)
    lab = naive_irn_labels(G, shape, 2, 0.25)
    for k, (got, piece) in enumerate(zip(stages["propagated"][0], pieces)):
        np.testing.assert_array_equal(got, lab == k if (lab == k).any() else piece)


@pytest.mark.parametrize("steps", [0, 1, 7, 64, 256, 1000])
def test_random_walk_equals_matrix_power(steps):
    rng = np.random.default_rng(2)
    e = rng.uniform(0, 0.6, size=(9, 11))
    e[4, :6] = 1.0
    S0 = rng.uniform(size=(99, 3))
    S0[:, 1] = 0.0
    S0[17, 1] = 1.0  # a point seed: the hardest case for relative accuracy
    ref = np.linalg.matrix_power(naive_transition(e, 5, 10), steps) @ S0
    T = build_transition(e, radius=5, beta=10, stride=1)
    for method in ("chebyshev", "power"):
        S = random_walk(T, S0, steps, method=method)
        np.testing.assert_allclose(S, ref, atol=1e-9 * np.abs(ref).max(), rtol=0)


def test_chebyshev_coefficients():
    c = chebyshev_power_coeffs(256)
    assert len(c) - 1 < 128  # far fewer sparse products than 256 steps
    assert sum(c) == pytest.approx(1.0, abs=1e-11)  # x^n at x = 1, minus the dropped tail
    assert all(v >= 0 for v in c) and all(c[k] == 0 for k in range(1, len(c), 2))
    x = np.linspace(-1, 1, 2001)
    approx = np.polynomial.chebyshev.chebval(x, c)
    assert np.abs(approx - x ** 256).max() <= 1e-12
    assert chebyshev_power_coeffs(3) == pytest.approx((0.0, 0.75, 0.0, 0.25))


def test_propagation_never_crosses_closed_wall():
    shape = (60, 60)
    e = np.zeros(shape)
    ring = rect(shape, 10, 40, 10, 40) & ~rect(shape, 14, 36, 14, 36)
    e[ring] = 1.0
    inside = rect(shape, 14, 36, 14, 36)
    seed = rect(shape, 18, 24, 18, 24)
    for stride in (1, 2, 4):
        res = propagate_scores([seed], e, steps=256, stride=stride, background=False)
        g = res["scores"][:, :, 0]
        inside_g = pool_mask(inside, stride) > 0
        ring_g = pool_edge(e, stride) >= 1.0
        outside_g = ~inside_g & ~ring_g
        assert g[outside_g].max() == 0.0  # exactly zero mass outside the enclosure
        assert g[ring_g].max() == 0.0
        assert g.max() == pytest.approx(1.0)
    out = propagate_masks([seed], e, stride=2, background=False)[0]
    assert not (out & ~rect(shape, 10, 40, 10, 40)).any()
    assert iou(out, inside) > 0.8  # the seed filled its enclosure


def test_diagonal_wall_blocks_the_walk():
    """A 1-cell diagonal wall is only 8-connected; diagonal steps must not slip through it."""
    n = 20
    e = np.zeros((n, n))
    yy, xx = np.mgrid[:n, :n]
    e[yy + xx == n - 1] = 1.0
    seed = (yy + xx < n - 1) & (yy < 5) & (xx < 5)
    g = propagate_scores([seed], e, steps=256, stride=1, background=False)["scores"][:, :, 0]
    assert g[yy + xx > n - 1].max() == 0.0
    assert g[yy + xx < n - 1].min() > 0.5  # and the seed filled its whole side


def test_upsample_crop_matches_full():
    rng = np.random.default_rng(3)
    g = rng.uniform(size=(7, 9))
    full = upsample_bilinear(g, (27, 34), 4)
    crop = upsample_bilinear(g, (27, 34), 4, slice(3, 20), slice(5, 30))
    np.testing.assert_allclose(crop, full[3:20, 5:30])
    # pixel centres of block c sample grid coordinate c (stride-aligned, align_corners=False)
    flat = upsample_bilinear(np.full((7, 9), 0.3), (27, 34), 4)
    np.testing.assert_allclose(flat, 0.3)


# --------------------------------------------------------------------------------------------
# propagation + whole pipeline: known answers
# --------------------------------------------------------------------------------------------

def test_bgp_splits_two_touching_squares():
    shape, a, b, edge = two_squares_scene()
    masks, scores = run_bgp([a | b], [0.8], edge, {"propagate": {"stride": 2}, "split": {"min_area": 16}})
    assert len(masks) == 2
    assert np.allclose(scores, 0.8)
    ious = sorted([max(iou(m, a), iou(m, b)) for m in masks])
    assert ious[0] > 0.9
    assert {int(np.argmax([iou(m, a), iou(m, b)])) for m in masks} == {0, 1}
    assert iou(masks[0], masks[1]) == 0.0
    # coarser grids (16x16 and 8x8 cells): still two masks, one per square
    for stride in (4, 8):
        masks, _ = run_bgp([a | b], [0.8], edge, {"split": {"min_area": 16}, "propagate": {"stride": stride}})
        assert len(masks) == 2
        assert {int(np.argmax([iou(m, a), iou(m, b)])) for m in masks} == {0, 1}
        assert min(max(iou(m, a), iou(m, b)) for m in masks) > 0.5  # 24 px = 3 cells at stride 8


def test_bgp_merges_fragments_of_one_object():
    shape = (64, 64)
    obj = rect(shape, 12, 52, 8, 56)
    edge = np.zeros(shape)
    edge[outline(obj)] = 1.0
    left = rect(shape, 16, 48, 12, 26)
    right = rect(shape, 16, 48, 38, 52)  # a gap of 12 px without any edge in between
    assert iou(left, right) == 0.0
    params = {"propagate": {"stride": 2, "rule": "per_mask"}, "split": {"min_area": 16}}
    stages = bgp_stages([left, right], [0.4, 0.6], edge, params)
    prop, _ = stages["propagated"]
    assert iou(prop[0], prop[1]) > 0.5  # after propagation both fragments fill the object
    masks, scores = stages["final"]
    assert len(masks) == 1
    assert scores[0] == pytest.approx(0.6)
    assert iou(masks[0], obj) > 0.9
    assert not (masks[0] & ~obj).any()
    # IRN's rule partitions the pixels: the fragments grow into complementary halves of the
    # object and never overlap, so the merge step cannot fuse them
    params["propagate"]["rule"] = "irn"
    stages = bgp_stages([left, right], [0.4, 0.6], edge, params)
    prop, _ = stages["propagated"]
    assert not (prop[0] & prop[1]).any() and iou(prop[0] | prop[1], obj) > 0.9
    assert len(stages["final"][0]) == 2


def test_bgp_keeps_swallowed_mask():
    shape = (48, 48)
    edge = np.zeros(shape)
    edge[10:30, 10:30] = 1.0
    m = rect(shape, 14, 26, 14, 26)  # entirely under edges of value 1: empty seed, no piece
    masks, scores = run_bgp([m], [0.5], edge, {"split": {"min_area": 8}})
    assert len(masks) == 1 and np.array_equal(masks[0], m) and scores[0] == 0.5


def test_bgp_sorting_max_masks_and_params():
    shape = (40, 40)
    edge = np.zeros(shape)
    ms = [rect(shape, 0, 10, 0, 10), rect(shape, 20, 30, 20, 30), rect(shape, 0, 10, 25, 35)]
    masks, scores = run_bgp(ms, [0.1, 0.7, 0.4], edge,
                            {"max_masks": 2, "propagate": {"enabled": False}, "split": {"min_area": 4}})
    assert list(scores) == [0.7, 0.4]
    assert np.array_equal(masks[0], ms[1]) and np.array_equal(masks[1], ms[2])
    p = bgp_params({})
    assert p["propagate"]["steps"] == 256 and p["propagate"]["beta"] == 10 and p["propagate"]["radius"] == 5
    assert p["merge"]["iou"] == 0.5 and p["edge_threshold"]["mode"] == "mean_std"
    with pytest.raises(ConfigError):
        bgp_params({"merge": {"tau": 0.5}})
    with pytest.raises(ValueError):
        run_bgp(ms, [0.1], edge, {})
    assert run_bgp([], [], edge, {}) == ([], pytest.approx(np.zeros(0)))


def test_bgp_stages_keys_and_consistency():
    shape, a, b, edge = two_squares_scene()
    st = bgp_stages([a | b, a], [0.5, 0.9], edge, {"split": {"min_area": 16}, "propagate": {"stride": 2}})
    assert set(st) >= {"walls", "split", "propagated", "merged", "final", "params"}
    pieces, ps, parent = st["split"]
    assert len(st["propagated"][0]) == len(pieces) == len(ps) == len(parent)
    assert st["walls"].dtype == bool and st["walls"].shape == shape


# --------------------------------------------------------------------------------------------
# merge
# --------------------------------------------------------------------------------------------

def test_merge_iou_exactly_half_does_not_merge():
    shape = (10, 10)
    a = rect(shape, 0, 4, 0, 3)   # 12 px
    b = rect(shape, 0, 4, 1, 4)   # 12 px, intersection 8, union 16 -> IoU 0.5
    assert iou(a, b) == 0.5
    masks, scores = merge_masks([a, b], [0.2, 0.3], iou=0.5)
    assert len(masks) == 2
    masks, scores = merge_masks([a, b], [0.2, 0.3], iou=0.49)
    assert len(masks) == 1 and np.array_equal(masks[0], a | b) and scores[0] == 0.3


def test_merge_iterative_chain_and_order():
    shape = (20, 40)
    a = rect(shape, 0, 10, 0, 10)
    b = rect(shape, 0, 10, 1, 11)   # IoU(a, b) = 90/110
    c = rect(shape, 0, 10, 3, 12)   # IoU(a|b, c) = 80/120 = 0.667 after the first merge
    d = rect(shape, 12, 20, 30, 40)
    masks, scores = merge_masks([d, a, b, c], [0.1, 0.5, 0.9, 0.2], iou=0.5)
    assert len(masks) == 2
    assert np.array_equal(masks[0], d) and scores[0] == 0.1
    assert np.array_equal(masks[1], a | b | c) and scores[1] == 0.9
    # no pair above tau: unchanged, in order
    masks, scores = merge_masks([d, a], [0.1, 0.5], iou=0.5)
    assert np.array_equal(masks[0], d) and np.array_equal(masks[1], a)


def test_merge_tie_breaking_is_deterministic():
    shape = (10, 30)
    a = rect(shape, 0, 4, 0, 4)
    b = rect(shape, 0, 4, 0, 4)
    c = rect(shape, 0, 4, 0, 4)
    # all pairs IoU 1: (0, 1) merges first, then (0, 2)
    masks, scores = merge_masks([a, b, c], [0.3, 0.2, 0.9], iou=0.5)
    assert len(masks) == 1 and scores[0] == 0.9
    x = rect(shape, 0, 4, 10, 14)
    y = rect(shape, 0, 4, 11, 15)   # IoU(x, y) = 12/20 = 0.6
    z = rect(shape, 0, 4, 12, 16)   # IoU(y, z) = 0.6, IoU(x, z) = 8/24
    masks, _ = merge_masks([x, y, z], [0.1, 0.2, 0.3], iou=0.55)
    # tie between (0, 1) and (1, 2): (0, 1) wins; then IoU(x|y, z) = 12/24 = 0.5, not > 0.55
    assert len(masks) == 2
    assert np.array_equal(masks[0], x | y) and np.array_equal(masks[1], z)


def test_pairwise_intersections_exact_vs_naive():
    rng = np.random.default_rng(4)
    masks = [rng.uniform(size=(23, 31)) < p for p in (0.05, 0.2, 0.5, 0.9)]
    masks.append(np.zeros((23, 31), dtype=bool))
    masks += [rect((23, 31), 2, 20, 3, 9), rect((23, 31), 0, 23, 0, 31)]
    inter, area = pairwise_intersections(masks)
    for i, a in enumerate(masks):
        assert area[i] == a.sum()
        for j, b in enumerate(masks):
            assert inter[i, j] == np.logical_and(a, b).sum()


def test_merge_matches_naive_loop():
    rng = np.random.default_rng(5)
    shape = (30, 30)
    masks = []
    for _ in range(12):
        y, x = rng.integers(0, 20, size=2)
        hh, ww = rng.integers(4, 12, size=2)
        masks.append(rect(shape, y, y + hh, x, x + ww))
    scores = rng.uniform(size=12)

    def naive(ms, ss, tau):
        ms, ss = [m.copy() for m in ms], list(ss)
        while True:
            best, bi, bj = -1.0, -1, -1
            for i in range(len(ms)):
                for j in range(i + 1, len(ms)):
                    v = iou(ms[i], ms[j])
                    if v > best:
                        best, bi, bj = v, i, j
            if best <= tau:
                return ms, np.array(ss)
            ms[bi] = ms[bi] | ms[bj]
            ss[bi] = max(ss[bi], ss[bj])
            del ms[bj], ss[bj]

    for tau in (0.2, 0.3, 0.5):
        got, gs = merge_masks(masks, scores, iou=tau)
        ref, rs = naive(masks, scores, tau)
        assert len(got) == len(ref)
        assert all(np.array_equal(g, r) for g, r in zip(got, ref))
        np.testing.assert_array_equal(gs, rs)


def test_upsampler_equals_full_upsampling():
    rng = np.random.default_rng(6)
    for (H, W), stride, (h, w), up in _upsampler_cases():
        for _ in range(5):
            g = rng.uniform(size=(h, w)) ** 3
            bg = rng.uniform(size=(h, w)) ** 2
            full_g = upsample_bilinear(g, (H, W), stride)
            full_bg = upsample_bilinear(bg, (H, W), stride)
            np.testing.assert_array_equal(up.mask(g, 0.25, None), full_g > 0.25)
            np.testing.assert_array_equal(up.full(bg), full_bg)   # bit-identical, not just close
            np.testing.assert_array_equal(up.mask(g, 0.25, up.full(bg)), (full_g > 0.25) & (full_g >= full_bg))
