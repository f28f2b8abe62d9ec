"""The BSDS pixel correspondence, split into independent pieces and solved exactly.

The BSDS matcher (``matchEdgeMaps`` in pyEdgeEval's ``correspond_pixels``) pairs predicted and
GT boundary pixels one-to-one. Its assignment graph has

* a *real* edge between a predicted and a GT pixel at most ``max_dist`` (pixels) apart, of
  integer weight ``w = rint(100 d)``;
* *outlier* edges of weight ``ow = ceil(100 * outlier_cost)`` (``outlier_cost = 100 max_dist``),
  by which a pixel stays unmatched: each pixel is linked to 6 outlier nodes drawn at random
  (``kOfN``, seeded RNG), the outlier nodes to each other likewise, plus a perfect-match
  "overlay" of weight ``100 ow``;

and CSA finds its minimum-cost perfect matching. A perfect matching with ``k`` real pairs uses
``n1 + n2 - k`` outlier edges, so its cost is ``w(M) + ow (n1 + n2 - k)``. Were every pixel linked
to every outlier node, the optimum would be exactly the matching ``M`` of the real-edge graph
minimising ``w(M) - ow |M|``, and that problem splits into the connected components of the
real-edge graph (pixels farther apart than ``max_dist`` share no edge). The BSDS graph's outlier
links are a sparse random sample instead: they couple all pixels, and when the sample cannot
absorb exactly the unmatched pixels of that optimum, CSA settles for a costlier matching
(typically one or two real pairs fewer). This module solves the complete-outlier problem, per
component, exactly:

* **small components** (``min(n1, n2) * w_max < ow``, i.e. fewer than ~100 pixels on the smaller
  side): every extra real pair lowers the cost (an augmenting path adds at most ``min(n1, n2)``
  edges of weight ``<= w_max``, and the cost function of a bipartite matching is convex in its
  size), so the optimum is a maximum-cardinality matching: Hopcroft–Karp
  (``scipy.sparse.csgraph.maximum_bipartite_matching``), all small components in one call;
* **large components**: a minimum-weight perfect matching (LAPJVsp,
  ``scipy.sparse.csgraph.min_weight_full_bipartite_matching``) of the standard reduction of
  "matching with a penalty for unmatched nodes" to an assignment: rows = predicted pixels +
  one dummy per GT pixel, columns = GT pixels + one dummy per predicted pixel; a real edge costs
  ``2 w``, a pixel-to-its-own-dummy edge ``ow``, a dummy-to-dummy edge (the transpose of a real
  edge) 0 (all shifted by +1, which every perfect matching pays equally, because SciPy reads an
  explicit 0 as no edge). Its optimum is ``2 (w(M) - ow |M|)`` plus a constant.

The counts (matched predicted pixels = matched GT pixels = ``|M|``) are therefore those of the
optimal complete-outlier matching; they differ from the BSDS matcher's where its random outlier
sample makes it sub-optimal, and (never observed, it needs an exact integer coincidence) where
optimal matchings of different sizes tie. ``docs/edges.md`` §5 gives the measured differences.

The GT side is fixed across thresholds, so :class:`GTNeighbourhood` lists once per image every
(position, GT pixel, weight) triple within ``max_dist`` of a GT pixel; a threshold's graph is then
the triples whose position is a predicted pixel (one boolean gather).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components, maximum_bipartite_matching
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

#: pyEdgeEval's ``correspond_pixels`` default outlier cost (times ``max_dist`` in pixels)
OUTLIER_COST = 100.0
#: matchEdgeMaps' integer weight multiplier
MULTIPLIER = 100


class GTNeighbourhood:
    """Every predicted position that can match a GT pixel, with the BSDS integer weight.

    ``max_dist`` is the fraction of the image diagonal, as in ``correspond_pixels``.
    """

    def __init__(self, gt: np.ndarray, max_dist: float, outlier_cost: float = OUTLIER_COST):
        gt = np.asarray(gt, dtype=bool)
        if gt.ndim != 2:
            raise ValueError(f"GT must be 2-D, got shape {gt.shape}")
        h, w = gt.shape
        self.shape = gt.shape
        # the same floating-point steps as pyEdgeEval's Cython wrapper and matchEdgeMaps
        idiag = math.sqrt(h * h + w * w)
        oc = outlier_cost * max_dist * idiag
        md = max_dist * idiag
        self.outlier_weight = int(math.ceil(oc * MULTIPLIER))
        r = int(math.ceil(md))
        offsets = [(v, u) for v in range(-r, r + 1) for u in range(-r, r + 1)
                   if not float(u * u + v * v) > md * md]
        gy, gx = np.nonzero(gt)
        self.n_gt = int(gy.size)
        pos, gidx, weight = [], [], []
        gid = np.arange(self.n_gt, dtype=np.int64)
        for v, u in offsets:  # a predicted pixel at (y, x) matches the GT pixel at (y + v, x + u)
            py, px = gy - v, gx - u
            ok = (py >= 0) & (py < h) & (px >= 0) & (px < w)
            pos.append(py[ok].astype(np.int64) * w + px[ok])
            gidx.append(gid[ok])
            weight.append(np.full(int(ok.sum()), int(np.rint(math.sqrt(u * u + v * v) * MULTIPLIER)),
                                  dtype=np.int64))
        self.pos = np.concatenate(pos) if pos else np.zeros(0, np.int64)
        self.gidx = np.concatenate(gidx) if gidx else np.zeros(0, np.int64)
        self.weight = np.concatenate(weight) if weight else np.zeros(0, np.int64)

    def match_count(self, binary: np.ndarray) -> int:
        """Size of the optimal complete-outlier matching of ``binary`` (predicted pixels) to the GT."""
        flat = np.asarray(binary, dtype=bool).ravel()
        if flat.size != self.shape[0] * self.shape[1]:
            raise ValueError(f"binary map shape {np.shape(binary)} differs from GT shape {self.shape}")
        sel = flat[self.pos]
        if not sel.any():
            return 0
        # node ids: predicted pixels in raster order (unmatchable ones are isolated nodes)
        pred_id = np.cumsum(flat, dtype=np.int64) - 1
        pos = self.pos[sel]
        return _optimal_matching_size(pred_id[pos], self.gidx[sel], self.weight[sel],
                                      int(pred_id[-1]) + 1, self.n_gt, self.outlier_weight)


def _optimal_matching_size(pi: np.ndarray, gj: np.ndarray, wt: np.ndarray, n1: int, n2: int,
                           ow: int) -> int:
    pi, n1 = _compact(pi)
    gj, n2 = _compact(gj)
    n = n1 + n2
    graph = sparse.csr_matrix((np.ones(pi.size, np.int8), (pi, n1 + gj)), shape=(n, n))
    n_comp, label = connected_components(graph, directed=True, connection="weak")
    side1 = np.bincount(label[:n1], minlength=n_comp)
    side2 = np.bincount(label[n1:], minlength=n_comp)
    # Small components: the optimum has maximum cardinality. The cost of the best matching is
    # convex in its size, and the last augmentation adds at most min(n1, n2) edges of weight
    # <= w_max, which is < ow.
    small = np.minimum(side1, side2) * max(int(wt.max()), 1) < ow
    edge_comp = label[pi]
    edge_small = small[edge_comp]
    total = 0
    if edge_small.any():
        # Hopcroft-Karp on all small components at once; GT pixels as rows (SciPy's
        # implementation is much slower with the, more numerous, predicted pixels as rows)
        b = sparse.csr_matrix((np.ones(int(edge_small.sum()), np.int8),
                               (gj[edge_small], pi[edge_small])), shape=(n2, n1))
        total += int((maximum_bipartite_matching(b, perm_type="column") >= 0).sum())
    if not edge_small.all():
        # LAPJVsp per large component (superlinear: one call per component beats one for all)
        big = np.flatnonzero(~edge_small)
        big = big[np.argsort(edge_comp[big], kind="stable")]
        starts = np.flatnonzero(np.diff(edge_comp[big], prepend=-1))
        for lo, hi in zip(starts, [*starts[1:], big.size]):
            idx = big[lo:hi]
            total += _penalised_matching_size(pi[idx], gj[idx], wt[idx], ow)
    return total


def _penalised_matching_size(pi: np.ndarray, gj: np.ndarray, wt: np.ndarray, ow: int) -> int:
    """|M| of the matching minimising ``w(M) - ow |M|`` (LAPJVsp on the dummy-node reduction)."""
    pi, a = _compact(pi)
    gj, b = _compact(gj)
    ia, ib = np.arange(a), np.arange(b)
    rows = np.concatenate([pi, ia, a + ib, a + gj])
    cols = np.concatenate([gj, b + ia, ib, b + pi])
    data = np.concatenate([2 * wt + 1, np.full(a, ow + 1), np.full(b, ow + 1),
                           np.ones(pi.size, np.int64)]).astype(np.float64)
    m = sparse.csr_matrix((data, (rows, cols)), shape=(a + b, a + b))
    r, c = min_weight_full_bipartite_matching(m)
    return int(((r < a) & (c < b)).sum())


def _compact(ids: np.ndarray) -> tuple[np.ndarray, int]:
    """``ids`` renumbered 0..n-1 in increasing order, and n."""
    used = np.zeros(int(ids.max()) + 1, bool)
    used[ids] = True
    new = np.cumsum(used, dtype=np.int64) - 1
    return new[ids], int(new[-1]) + 1


__all__ = ["GTNeighbourhood", "MULTIPLIER", "OUTLIER_COST"]
