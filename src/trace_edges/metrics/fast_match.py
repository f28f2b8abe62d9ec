"""The BSDS pixel correspondence's matched count, from the same graph, solved without CSA.

pyEdgeEval's ``correspond_pixels`` (``matchEdgeMaps`` of the BSDS benchmark) pairs predicted and
GT boundary pixels one-to-one by a minimum-cost perfect matching (CSA) of this bipartite graph
(``pyEdgeEval/_lib/src/match.cc``):

* **nodes.** The *matchable* predicted pixels (at most ``maxDist`` from a GT pixel), numbered
  ``0..n1-1`` in column-major order (x outer, y inner), and likewise the matchable GT pixels
  ``0..n2-1``. Left nodes: the ``n1`` predicted pixels, then one outlier node per GT pixel
  (``n1 + j``); right nodes: the ``n2`` GT pixels, then one outlier node per predicted pixel
  (``n2 + i``).
* **real edges.** Predicted ``i`` to GT ``j`` at most ``maxDist`` apart, weight ``rint(100 d)``
  (at most ``w_max ~ 576`` on a 640 x 480 image).
* **outlier edges**, all of weight ``ow = ceil(100 * outlierCost)`` (``outlierCost = 100 maxDist``,
  so ``ow ~ 100 w_max``), drawn from the global RNG ``Random::rand`` by ``kOfN(k, n)`` (k sorted
  distinct integers of ``[0, n)``), in this order: for each predicted ``i``, ``d1 = min(6, n1-1)``
  links to the outlier nodes of *other* predicted pixels (``kOfN(d1, n1-1)``, values ``>= i``
  shifted by one); for each GT ``j``, ``d2 = min(6, n2-1)`` links to other GT pixels' outlier
  nodes; then for each ``i < max(n1, n2)``, ``d3 = min(6, n1, n2)`` outlier-outlier links
  (``kOfN(d3, min(n1, n2))``) from the outlier node ``i`` of the larger side to outlier nodes of
  the smaller side.
* **overlay.** Each pixel to its own outlier node, weight ``100 ow``, so that a perfect matching
  always exists.

pyEdgeEval seeds ``Random::rand`` from the time of day when it is loaded; ``trace_edges`` reseeds
it with ``MATCHER_SEED`` before every call (``metrics.bsds_matcher.correspond_pixels``), so the graph is a
function of ``(n1, n2)`` alone. The outlier structure couples the whole image: a pixel left
unmatched must take one of its 6 random outlier nodes, anywhere in the image, and the outlier
nodes left over must pair up through the random outlier-outlier links. The problem therefore does
not split into independent pieces, and where the random links cannot absorb the unmatched pixels
of the best real matching, CSA keeps fewer real pairs (one to a few).

This module computes the *size* of that optimum, exactly on the same graph, in three steps:

1. the real edges' maximum matching (Dinic max-flow, ``scipy.sparse.csgraph.maximum_flow``), of
   size ``nu``;
2. the outlier graph rebuilt exactly: the library's own ``kOfN``, called through ctypes after
   the same reseeding, in matchEdgeMaps' order;
3. the Hungarian method from the real matching, with cost -1 per real edge, 0 per outlier edge
   and +99 per overlay edge (in units of ``ow``): potentials from a König vertex cover of the
   real matching (every reduced cost of a real or outlier edge is then 0 or 1), a max-flow
   augmentation along the tight (zero reduced cost) edges, which completes the matching with
   ``nu`` real pairs wherever the outlier sample can absorb the unmatched pixels, and, while
   nodes are left free, Dijkstra on the reduced costs to raise the potentials.

A perfect matching with ``k`` real pairs and ``o`` overlay edges costs
``w(M) + ow (n1 + n2 - k + 99 o)``; step 3 minimises ``-k + 99 o`` (overlay edges included, cost
+99, so a perfect matching always exists), i.e. the BSDS cost without the tie-break by the real
weight ``w(M)``. The count therefore equals the BSDS matcher's whenever its optimum has the most
real pairs among the perfect matchings of least ``-k + 99 o``: with ``ow ~ 100 w_max``, giving up
one real pair costs more than any re-routing unless the re-routing changes the weight of about
100 pairs, and CSA's choice among optima of equal cost could differ only on an exact tie.
Measured equal on every image-threshold pair of coco_mini (docs/edges.md §5) and on random maps
(tests/test_metrics_edges.py), where the overlay, the deficiency fill and optima below the real
maximum matching all occur.

The GT side is fixed across thresholds, so :class:`GTNeighbourhood` lists once per image every
(position, GT pixel) pair within ``max_dist`` of a GT pixel; a threshold's real edges are then the
pairs whose position is a predicted pixel (one boolean gather). The weights are not needed: the
count of the lexicographic optimum does not depend on them.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import breadth_first_order, dijkstra, maximum_flow

#: pyEdgeEval's ``correspond_pixels`` default outlier cost (times ``max_dist`` in pixels)
OUTLIER_COST = 100.0
#: matchEdgeMaps' integer weight multiplier
MULTIPLIER = 100
#: matchEdgeMaps' outlier degree
DEGREE = 6


class GTNeighbourhood:
    """Every predicted position that can match a GT pixel (matchEdgeMaps' real edges).

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
        self.gt_key = gx.astype(np.int64) * h + gy  # column-major rank key, as matchEdgeMaps numbers nodes
        dv = np.array([v for v, _ in offsets], np.int64)[:, None]
        du = np.array([u for _, u in offsets], np.int64)[:, None]
        # a predicted pixel at (y, x) matches the GT pixel at (y + v, x + u)
        py, px = gy[None, :] - dv, gx[None, :] - du
        ok = (py >= 0) & (py < h) & (px >= 0) & (px < w)
        self.pos = (py * w + px)[ok]
        self.gidx = np.broadcast_to(np.arange(self.n_gt, dtype=np.int64), ok.shape)[ok]

    def real_edges(self, binary: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
        """``(i, j, n1, n2)``: matchEdgeMaps' real edges between predicted node ``i`` and GT node
        ``j`` (its node numbering), for the predicted pixels of ``binary``."""
        flat = np.asarray(binary, dtype=bool).ravel()
        if flat.size != self.shape[0] * self.shape[1]:
            raise ValueError(f"binary map shape {np.shape(binary)} differs from GT shape {self.shape}")
        sel = flat[self.pos]
        pos = self.pos[sel]
        h, w = self.shape
        _, pi = np.unique((pos % w) * h + pos // w, return_inverse=True)
        _, gj = np.unique(self.gt_key[self.gidx[sel]], return_inverse=True)
        n1 = int(pi.max()) + 1 if pi.size else 0
        n2 = int(gj.max()) + 1 if gj.size else 0
        return pi.ravel(), gj.ravel(), n1, n2

    def match_count(self, binary: np.ndarray) -> int:
        """Matched pixels of the BSDS matcher on ``binary`` (predicted pixels)."""
        pi, gj, n1, n2 = self.real_edges(binary)
        if pi.size == 0:
            return 0
        return bsds_matched_count(pi, gj, n1, n2)


def bsds_matched_count(pi: np.ndarray, gj: np.ndarray, n1: int, n2: int) -> int:
    """Real pairs in the BSDS matcher's optimum for real edges ``(pi, gj)`` (node numbering of
    matchEdgeMaps), as the module docstring computes them."""
    p2g = _max_matching(pi, gj, n1, n2)
    ol, orr = outlier_edges(n1, n2)
    l2r = np.full(n1 + n2, -1, np.int64)
    l2r[:n1] = p2g
    l2r = _complete(pi, gj, ol, orr, p2g, l2r, n1, n2)
    return int(((l2r[:n1] >= 0) & (l2r[:n1] < n2)).sum())


def outlier_edges(n1: int, n2: int) -> tuple[np.ndarray, np.ndarray]:
    """matchEdgeMaps' outlier edges (left node, right node), drawn as it draws them: its own
    ``kOfN`` on its RNG reseeded with ``MATCHER_SEED``."""
    from trace_edges.metrics.bsds_matcher import matcher_kofn, reseed_matcher

    kofn = matcher_kofn()
    if kofn is None:
        raise RuntimeError("pyEdgeEval's kOfN symbol not found: use score.edges.matcher: reference")
    reseed_matcher()
    d1, d2 = max(0, min(DEGREE, n1 - 1)), max(0, min(DEGREE, n2 - 1))
    nmin, nmax = min(n1, n2), max(n1, n2)
    d3 = min(DEGREE, nmin)

    def draw(count: int, k: int, n: int) -> np.ndarray:
        out = np.zeros((count, DEGREE), np.int32)
        base, stride = out.ctypes.data, out.strides[0]
        for addr in range(base, base + count * stride, stride):
            kofn(k, n, addr)
        return out[:, :k].astype(np.int64)

    a = draw(n1, d1, n1 - 1)
    a += a >= np.arange(n1)[:, None]  # "exclude diagonal"
    b = draw(n2, d2, n2 - 1)
    b += b >= np.arange(n2)[:, None]
    c = draw(nmax, d3, nmin).ravel()
    i = np.repeat(np.arange(nmax), d3)
    cl, cr = (n1 + i, n2 + c) if n1 < n2 else (n1 + c, n2 + i)
    left = np.concatenate([np.repeat(np.arange(n1), d1), n1 + b.ravel(), cl])
    right = np.concatenate([n2 + a.ravel(), np.repeat(np.arange(n2), d2), cr])
    return left, right


def _max_matching(rows: np.ndarray, cols: np.ndarray, nl: int, nr: int) -> np.ndarray:
    """A maximum matching of the bipartite graph ``rows[e] - cols[e]``: the right node of each
    left node, -1 if free. Dinic max-flow (stable where SciPy's Hopcroft-Karp took up to 0.5 s)."""
    out = np.full(nl, -1, np.int64)
    if rows.size == 0:
        return out
    s, t = nl + nr, nl + nr + 1
    src = np.concatenate([np.full(nl, s), rows, nl + np.arange(nr)])
    dst = np.concatenate([np.arange(nl), nl + cols, np.full(nr, t)])
    cap = sparse.csr_matrix((np.ones(src.size, np.int32), (src, dst)), shape=(t + 1, t + 1))
    flow = maximum_flow(cap, s, t, method="dinic").flow.tocoo()
    m = (flow.data > 0) & (flow.row < nl) & (flow.col >= nl) & (flow.col < nl + nr)
    out[flow.row[m]] = flow.col[m] - nl
    return out


def _complete(pi, gj, ol, orr, p2g, l2r, n1: int, n2: int) -> np.ndarray:
    """Complete the matching ``l2r`` (a maximum matching ``p2g`` of the real edges ``pi - gj``)
    with the outlier edges ``ol - orr`` and the overlay to a perfect matching of least cost (-1
    per real edge, 0 per outlier edge, +99 per overlay edge), by the Hungarian method: augment
    along tight edges (zero reduced cost) as far as possible; while nodes are left free, Dijkstra
    on reduced costs from the free left nodes raises the potentials until a shortest augmenting
    path is tight."""
    n = n1 + n2
    # König cover of the real matching: Z = predicted nodes reachable from free ones by
    # alternating paths; potentials: 1 on predicted nodes outside Z, -1 on GT nodes in Z
    root = n1
    mate = np.full(n2, -1, np.int64)  # the predicted node matched to each GT node
    mate[p2g[p2g >= 0]] = np.flatnonzero(p2g >= 0)
    hop = mate[gj] >= 0
    free = np.flatnonzero(p2g < 0)
    alt = sparse.csr_matrix((np.ones(int(hop.sum()) + free.size, np.int8),
                             (np.concatenate([pi[hop], np.full(free.size, root)]),
                              np.concatenate([mate[gj[hop]], free]))), shape=(n1 + 1, n1 + 1))
    z_pred = np.zeros(n1 + 1, bool)
    z_pred[breadth_first_order(alt, root, directed=True, return_predecessors=False)] = True
    z_pred = z_pred[:n1]
    z_gt = np.zeros(n2, bool)
    z_gt[gj[z_pred[pi]]] = True
    pot = np.zeros(2 * n + 1)
    pot[:n1] = ~z_pred
    pot[n:n + n2] = -z_gt.astype(np.float64)
    # costs in units of the outlier weight, relative to an outlier edge: a real edge -1, the
    # overlay (each pixel to its own outlier node, 100 ow) +99
    el = np.concatenate([pi, ol, np.arange(n)])
    er = n + np.concatenate([gj, orr, n2 + np.arange(n1), np.arange(n2)])
    cost = np.concatenate([np.full(pi.size, -1.0), np.zeros(ol.size), np.full(n, MULTIPLIER - 1.0)])
    source = 2 * n
    graph = None
    while True:
        # augment as far as the tight edges allow: max-flow on the residual network of the
        # matching (free left -> tight unmatched edge -> matched edge backwards -> free right)
        tight = np.abs(cost + pot[el] - pot[er]) < 1e-9
        _augment(l2r, el[tight], er[tight] - n, n)
        if (l2r >= 0).all():
            return l2r
        r2l = np.full(n, -1, np.int64)
        r2l[l2r[l2r >= 0]] = np.flatnonzero(l2r >= 0)
        matched = l2r[el] == er - n
        fwd = cost + pot[el] - pot[er]  # reduced cost of l -> r; r -> l (matched) is its negation
        if (fwd[~matched] < -1e-9).any() or (np.abs(fwd[matched]) > 1e-9).any():
            raise RuntimeError("infeasible potentials in the BSDS deficiency fill (a bug)")
        if graph is None:
            # one arc each way per edge and one from the source to every left node; an absent
            # arc has an infinite weight: the sparse structure is built once, the weights change
            tail = np.concatenate([el, er, np.full(n, source)])
            head = np.concatenate([er, el, np.arange(n)])
            graph = sparse.csr_matrix((np.arange(1, tail.size + 1, dtype=np.float64), (tail, head)),
                                      shape=(source + 1, source + 1))
            order = graph.data.astype(np.int64) - 1
        weight = np.concatenate([np.where(matched, np.inf, np.maximum(fwd, 0.0)),
                                 np.where(matched, 0.0, np.inf),
                                 np.where(l2r < 0, 0.0, np.inf)])
        graph.data = weight[order]
        d = dijkstra(graph, directed=True, indices=source)
        dr = d[n + np.flatnonzero(r2l < 0)]
        if not np.isfinite(dr).any():  # impossible: the overlay makes the graph perfect
            raise RuntimeError("no augmenting path in the BSDS graph (a bug)")
        # raise the potentials until a shortest augmenting path is tight; the matching stays
        # tight and every reduced cost >= 0 (Hungarian method: a perfect matching of tight
        # edges is optimal)
        pot[:source] += np.minimum(d[:source], dr.min())


def _augment(l2r: np.ndarray, el: np.ndarray, er: np.ndarray, n: int) -> None:
    """Enlarge the matching ``l2r`` (left -> right, -1 free; n nodes a side) to a maximum
    matching of the edges ``el[e] - er[e]`` (which include the matched ones), in place."""
    free_l = np.flatnonzero(l2r < 0)
    free_r = np.ones(n, bool)
    free_r[l2r[l2r >= 0]] = False
    free_r = np.flatnonzero(free_r)
    matched = l2r[el] == er
    s, t = 2 * n, 2 * n + 1
    src = np.concatenate([np.full(free_l.size, s), el[~matched], n + er[matched], n + free_r])
    dst = np.concatenate([free_l, n + er[~matched], el[matched], np.full(free_r.size, t)])
    cap = sparse.csr_matrix((np.ones(src.size, np.int32), (src, dst)), shape=(t + 1, t + 1))
    flow = maximum_flow(cap, s, t, method="dinic").flow.tocoo()
    pos = flow.data > 0
    fr, fc = flow.row[pos], flow.col[pos]
    back = (fr >= n) & (fr < s) & (fc < n)  # a matched edge given up
    l2r[fc[back]] = -1
    new = (fr < n) & (fc >= n) & (fc < s)  # a new matched edge
    l2r[fr[new]] = fc[new] - n


__all__ = ["DEGREE", "GTNeighbourhood", "MULTIPLIER", "OUTLIER_COST", "bsds_matched_count", "outlier_edges"]
