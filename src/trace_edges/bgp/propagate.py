"""BGP step 2: edge-constrained random-walk propagation (IRN, Ahn et al. CVPR 2019).

On a grid downsampled by ``stride`` (edges max-pooled so that thin walls survive, seeds
area-averaged) we build the IRN transition matrix

    a_ij = 1 - max_{k on the discrete segment i->j} E(k)     for |i - j| < radius (Euclidean),
    a_ii = 1,
    T    = D^-1 A^{o beta},   D = diag(row sums of A^{o beta}),

and propagate every seed column at once, ``S = T^t S0``, with ``S0[:, k] = m_k * (1 - E)``.
The scores are upsampled bilinearly to image size and turned into masks by one of two rules:

* ``rule="irn"`` (default; IRN's ``step/make_sem_seg_labels.py`` and ``make_ins_seg_labels.py``):
  every upsampled map is divided by the *global* maximum over all maps and pixels, a constant
  background map of value ``threshold`` is put first, and each pixel goes to the argmax (the
  background, then the lower mask index, wins ties). The masks are disjoint.
* ``rule="per_mask"`` (an option; this project's earlier default): each column is normalised by its *own*
  maximum and, when ``background`` is on, one extra column ``(1 - union of masks) * (1 - E)``
  is propagated too; mask ``k`` becomes the pixels where ``S_k > threshold`` and (with the
  background column) ``S_k >= S_bg``. Masks may overlap.

Conventions (IRN's code where it exists, see docs/bgp.md):

* neighbourhood: offsets with ``dy^2 + dx^2 < radius^2`` (strict, as IRN's
  ``get_search_paths_dst``): 68 neighbours for radius 5, plus the self-loop;
* self-affinity ``a_ii = 1`` (IRN's ``affinity_sparse2dense`` adds ``torch.ones`` on the
  diagonal), so every row has a positive sum and a pixel walled in on all sides keeps its value;
* the maximum "on the segment i->j" is over every cell the straight segment between the two
  cell centres touches, corners included (its supercover: :func:`segment_points`), so a
  diagonally connected wall blocks diagonal steps, and the segment j->i is the same cell set
  (A is exactly symmetric);
* ``T`` is row-stochastic: ``S_new[i] = sum_j T_ij S[j]`` is an edge-aware average over i's
  neighbours, which is IRN's ``x @ trans_mat`` with its column-normalised matrix, transposed.

``T`` is a ``scipy.sparse`` CSR matrix (never dense). ``T^t S0`` is evaluated for all columns at
once in float64, by default as a truncated Chebyshev expansion of ``x^t`` (112 sparse products
instead of 256 for t = 256, polynomial error <= 1e-12 on the spectrum; :func:`random_walk`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from trace_edges.bgp.walls import bbox_slices, check_edge

__all__ = [
    "grid_shape", "pool_edge", "pool_mask", "segment_points", "neighbour_offsets",
    "build_affinity", "build_transition", "chebyshev_power_coeffs", "random_walk",
    "propagate_scores", "upsample_bilinear", "propagate_masks", "irn_assign", "CHEB_TAIL", "DEFAULT_STRIDE",
    "RULES",
]

#: decision rules of :func:`propagate_masks` (the schema's ``bgp.propagate.rule``)
RULES = ("irn", "per_mask")


# ---------------------------------------------------------------------------------------------
# Grid helpers
# ---------------------------------------------------------------------------------------------

def grid_shape(shape: tuple[int, int], stride: int) -> tuple[int, int]:
    """Grid size for an image of ``shape`` at ``stride``: ``ceil(H / s), ceil(W / s)``."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    return -(-shape[0] // stride), -(-shape[1] // stride)


def pool_edge(edge: np.ndarray, stride: int) -> np.ndarray:
    """Max-pool an edge map over ``stride x stride`` blocks (partial blocks at the border use
    the pixels they have), so a 1-pixel wall survives downsampling."""
    edge = np.asarray(edge, dtype=np.float64)
    if stride == 1:
        return edge.copy()
    h, w = grid_shape(edge.shape, stride)
    pad = np.zeros((h * stride, w * stride), dtype=np.float64)  # edges are >= 0: padding never wins
    pad[: edge.shape[0], : edge.shape[1]] = edge
    return pad.reshape(h, stride, w, stride).max(axis=(1, 3))


@lru_cache(maxsize=32)
def _block_counts(shape: tuple[int, int], stride: int) -> np.ndarray:
    """Number of real image pixels in each grid block (border blocks may be partial)."""
    h, w = grid_shape(shape, stride)
    ny = np.minimum(stride, shape[0] - np.arange(h) * stride)
    nx = np.minimum(stride, shape[1] - np.arange(w) * stride)
    return (ny[:, None] * nx[None, :]).astype(np.float64)


def pool_mask(mask: np.ndarray, stride: int) -> np.ndarray:
    """Area-average a boolean mask over ``stride x stride`` blocks: the fraction of each block's
    real pixels that the mask covers (in [0, 1])."""
    mask = np.asarray(mask, dtype=bool)
    if stride == 1:
        return mask.astype(np.float64)
    H, W = mask.shape
    h, w = grid_shape(mask.shape, stride)
    out = np.zeros((h, w), dtype=np.float64)
    box = bbox_slices(mask)
    if box is None:
        return out
    # crop to the block-aligned bounding box: pooling cost follows the mask, not the image
    by0, by1 = box[0].start // stride, (box[0].stop - 1) // stride + 1
    bx0, bx1 = box[1].start // stride, (box[1].stop - 1) // stride + 1
    crop = np.zeros(((by1 - by0) * stride, (bx1 - bx0) * stride), dtype=np.uint16)
    src = mask[by0 * stride: min(by1 * stride, H), bx0 * stride: min(bx1 * stride, W)]
    crop[: src.shape[0], : src.shape[1]] = src
    sums = crop.reshape(by1 - by0, stride, bx1 - bx0, stride).sum(axis=(1, 3), dtype=np.int64)
    out[by0:by1, bx0:bx1] = sums / _block_counts(mask.shape, stride)[by0:by1, bx0:bx1]
    return out


# ---------------------------------------------------------------------------------------------
# Affinity and transition matrices
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=256)
def _segment_points_cached(dy: int, dx: int) -> tuple[tuple[int, int], ...]:
    from fractions import Fraction

    half = Fraction(1, 2)
    pts = []
    for y in range(min(0, dy), max(0, dy) + 1):
        for x in range(min(0, dx), max(0, dx) + 1):
            lo, hi = Fraction(0), Fraction(1)  # t-interval of the segment inside the cell square
            for d, c in ((dy, y), (dx, x)):
                if d == 0:
                    if abs(c) > half:
                        lo, hi = Fraction(1), Fraction(0)
                    continue
                t1, t2 = (c - half) / d, (c + half) / d
                lo, hi = max(lo, min(t1, t2)), min(hi, max(t1, t2))
            if lo <= hi:
                pts.append((y, x))
    return tuple(sorted(pts))


def segment_points(dy: int, dx: int) -> np.ndarray:
    """Cells touched by the straight segment from cell (0, 0) to cell (dy, dx).

    The edge map is piecewise constant on cells, so "the maximum of E on the segment i -> j"
    is taken over every cell whose closed square ``[y-1/2, y+1/2] x [x-1/2, x+1/2]`` the
    continuous segment between the two cell centres meets (the segment's *supercover*, corner
    contacts included; exact rational arithmetic). Including corner contacts means a wall that
    is only diagonally (8-)connected still blocks the walk: the step between two diagonal
    neighbours also checks the two cells sharing that corner. The set is symmetric: the segment
    j -> i touches the same cells. Returns an ``[m, 2]`` int array, both end cells included.
    """
    return np.asarray(_segment_points_cached(int(dy), int(dx)), dtype=np.int64).reshape(-1, 2)


@lru_cache(maxsize=16)
def neighbour_offsets(radius: int) -> tuple[tuple[int, int], ...]:
    """The 'forward' half of the neighbourhood: offsets ``(dy, dx) != 0`` with
    ``dy^2 + dx^2 < radius^2`` and ``(dy > 0) or (dy == 0 and dx > 0)``; the other half is
    their mirror image (IRN's search directions for ``max_radius = radius``)."""
    r = int(radius)
    out = []
    for dy in range(0, r):
        for dx in range(-r + 1, r):
            if dy == 0 and dx <= 0:
                continue
            if dy * dy + dx * dx < r * r:
                out.append((dy, dx))
    return tuple(out)


def build_affinity(edge_grid: np.ndarray, *, radius: int = 5) -> sp.csr_matrix:
    """Symmetric IRN affinity matrix on a grid (``float64`` CSR, ``N = h * w`` nodes, row-major).

    ``A_ij = 1 - max E`` over the segment between cells i and j (both ends included) for
    ``0 < |i - j| < radius``, ``A_ii = 1``; entries that are exactly 0 (a wall of value 1 on the
    segment) are not stored.
    """
    e = np.asarray(edge_grid, dtype=np.float64)
    h, w = e.shape
    N = h * w
    idx = np.arange(N, dtype=np.int64).reshape(h, w)
    rows, cols, vals = [np.arange(N, dtype=np.int64)], [np.arange(N, dtype=np.int64)], [np.ones(N)]
    for dy, dx in neighbour_offsets(radius):
        # source cells i = (y, x) whose partner j = (y + dy, x + dx) is inside the grid;
        # every segment point lies in the box spanned by i and j, so it is inside too.
        ys0, ys1 = 0, h - dy
        xs0, xs1 = max(0, -dx), min(w, w - dx)
        if ys1 <= ys0 or xs1 <= xs0:
            continue
        emax = None
        for py, px in segment_points(dy, dx):
            sl = e[ys0 + py: ys1 + py, xs0 + px: xs1 + px]
            emax = sl.copy() if emax is None else np.maximum(emax, sl)
        a = 1.0 - emax
        src = idx[ys0:ys1, xs0:xs1]
        dst = idx[ys0 + dy: ys1 + dy, xs0 + dx: xs1 + dx]
        keep = a > 0
        a, src, dst = a[keep], src[keep], dst[keep]
        rows += [src, dst]
        cols += [dst, src]
        vals += [a, a]
    A = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(N, N))
    A.sort_indices()
    return A


def build_transition(edge: np.ndarray, *, radius: int = 5, beta: float = 10.0, stride: int = 1,
                     dtype: type = np.float64) -> sp.csr_matrix:
    """IRN transition matrix ``T = D^-1 A^{o beta}`` (CSR, rows sum to 1) for an image-resolution
    edge map, on the grid obtained by max-pooling ``edge`` with ``stride``."""
    e = check_edge(edge)
    A = build_affinity(pool_edge(e, stride), radius=radius)
    A.data = A.data ** float(beta)
    d = np.asarray(A.sum(axis=1)).ravel()  # >= 1 thanks to the self-loop
    T = sp.diags(1.0 / d) @ A
    T = sp.csr_matrix(T, dtype=dtype)
    T.eliminate_zeros()  # A^beta may underflow to 0
    T.sort_indices()
    return T


#: Grid stride of the walk when none is given: the finest stride whose BGP run over the 16
#: coco_mini images stays under ~20 s on one core (docs/bgp.md, "Benchmark numbers"). ``run_bgp``
#: uses the schema's ``bgp.propagate.stride`` instead.
DEFAULT_STRIDE = 12

#: Tail mass of the dropped Chebyshev terms of x^t (see :func:`chebyshev_power_coeffs`).
CHEB_TAIL = 1e-12


@lru_cache(maxsize=64)
def chebyshev_power_coeffs(steps: int, tail: float = CHEB_TAIL) -> tuple[float, ...]:
    """Chebyshev coefficients of ``x^steps`` on [-1, 1], truncated to the shortest prefix whose
    dropped terms sum to at most ``tail``.

    ``x^n = 2^(1-n) * sum_j C(n, j) T_{n-2j}(x)`` (the ``T_0`` term halved). The coefficients are a
    binomial distribution (total 1, spread ~ sqrt(n)), so keeping degrees ``<= m`` with
    ``m ~ sqrt(2 n ln(1/tail))`` (m = 112 for n = 256, tail = 1e-12) changes the polynomial by at
    most ``tail`` anywhere on [-1, 1].
    """
    from fractions import Fraction
    from math import comb

    n = int(steps)
    c = [0.0] * (n + 1)
    for j in range(n // 2 + 1):
        k = n - 2 * j
        v = Fraction(comb(n, j), 2 ** (n - 1))
        c[k] = float(v / 2 if k == 0 else v)
    m, dropped = n, 0.0
    while m > 0 and dropped + c[m] <= tail:
        dropped += c[m]
        m -= 1
    return tuple(c[: m + 1])


def random_walk(T: sp.csr_matrix, S0: np.ndarray, steps: int, *, method: str = "chebyshev",
                tail: float = CHEB_TAIL) -> np.ndarray:
    """``S = T^steps S0`` for all columns of ``S0`` at once, with sparse products only.

    ``method="power"`` applies ``T`` ``steps`` times. ``method="chebyshev"`` (default) evaluates
    the same matrix power as a truncated Chebyshev expansion of ``x^steps`` with the three-term
    recurrence ``X_{k+1} = 2 T X_k - X_{k-1}``: about ``sqrt(2 steps ln(1/tail))`` products
    instead of ``steps`` (112 instead of 256). This is valid because ``T = D^-1 A`` with a
    symmetric ``A`` is similar to the symmetric ``D^-1/2 A D^-1/2`` whose spectrum lies in
    [-1, 1]; the polynomial error there is at most ``tail`` (measured relative error on real
    images: ~1e-9, see docs/bgp.md). Falls back to the power method whenever it would need as
    many products.
    """
    S = np.asarray(S0, dtype=T.dtype)
    if steps <= 0 or S.shape[1] == 0:
        return S.copy()
    if method not in ("chebyshev", "power"):
        raise ValueError(f"random_walk: unknown method {method!r}")
    c = chebyshev_power_coeffs(int(steps), tail) if method == "chebyshev" else ()
    if method == "power" or len(c) - 1 >= steps:
        S = np.ascontiguousarray(S)
        for _ in range(steps):
            S = T @ S
        return S
    x_prev = np.ascontiguousarray(S)
    out = c[0] * x_prev
    if len(c) == 1:
        return out
    x_cur = T @ x_prev
    out += c[1] * x_cur
    tmp = np.empty_like(out)
    for ck in c[2:]:
        x_next = T @ x_cur
        x_next *= 2.0
        x_next -= x_prev
        np.multiply(x_next, ck, out=tmp)
        out += tmp
        x_prev, x_cur = x_cur, x_next
    return out


# ---------------------------------------------------------------------------------------------
# Propagation of masks
# ---------------------------------------------------------------------------------------------

def propagate_scores(masks: Sequence[np.ndarray], edge: np.ndarray, *, steps: int = 256,
                     beta: float = 10.0, radius: int = 5, stride: int = DEFAULT_STRIDE,
                     background: bool = True,
                     method: str = "chebyshev", normalise: bool = True) -> dict:
    """Run the random walk and return the grid scores, each column divided by its maximum
    when ``normalise`` (else the raw ``T^t S0``).

    Returns a dict with ``scores`` (``[h, w, C]`` float64: one column per mask, then the
    background column when ``background``), ``seed_mass`` (``[C]``, the sum of each seed column;
    0 means an empty seed), ``grid`` (``(h, w)``) and ``nnz`` (stored entries of ``T``).
    """
    e = check_edge(edge)
    H, W = e.shape
    h, w = grid_shape((H, W), stride)
    keep = 1.0 - pool_edge(e, stride)
    cols = []
    union = np.zeros((H, W), dtype=bool)
    for m in masks:
        m = np.asarray(m, dtype=bool)
        if m.shape != (H, W):
            raise ValueError(f"propagate: mask shape {m.shape} != edge shape {(H, W)}")
        cols.append((pool_mask(m, stride) * keep).ravel())
        if background:
            union |= m
    if background:
        cols.append((pool_mask(~union, stride) * keep).ravel())
    S0 = np.stack(cols, axis=1) if cols else np.zeros((h * w, 0))
    seed_mass = S0.sum(axis=0)
    T = build_transition(e, radius=radius, beta=beta, stride=stride)
    S = random_walk(T, S0, steps, method=method)
    if normalise:
        mx = S.max(axis=0) if S.shape[0] else np.zeros(S.shape[1])
        S = S / np.where(mx > 0, mx, 1.0)
    return {"scores": S.reshape(h, w, -1), "seed_mass": seed_mass, "grid": (h, w), "nnz": int(T.nnz)}


def _interp_axis(n_out: int, n_in: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear source cells and weights along one axis (``align_corners=False``, like
    ``F.interpolate(scale_factor=stride)``: pixel x samples grid coordinate
    ``(x + 0.5) / stride - 0.5``, clamped to the grid)."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) / stride - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0


def upsample_bilinear(grid: np.ndarray, shape: tuple[int, int], stride: int,
                      rows: slice | None = None, cols: slice | None = None) -> np.ndarray:
    """Bilinearly upsample a ``[h, w]`` grid to image ``shape`` (or to the crop ``rows, cols`` of
    it), with the same sampling as :func:`_interp_axis`."""
    H, W = shape
    h, w = grid.shape
    y0, y1, fy = _interp_axis(H, h, stride)
    x0, x1, fx = _interp_axis(W, w, stride)
    if rows is not None:
        y0, y1, fy = y0[rows], y1[rows], fy[rows]
    if cols is not None:
        x0, x1, fx = x0[cols], x1[cols], fx[cols]
    rows_ = grid[y0] * (1 - fy)[:, None] + grid[y1] * fy[:, None]  # rows first, then columns
    return rows_[:, x0] * (1 - fx) + rows_[:, x1] * fx


def _pixel_range(c0: int, c1: int, i0: np.ndarray, i1: np.ndarray) -> slice:
    """Pixels whose two interpolation cells include a cell in ``[c0, c1]`` (a contiguous range,
    since ``i0`` and ``i1`` are non-decreasing)."""
    start = int(np.searchsorted(i1, c0, side="left"))
    stop = int(np.searchsorted(i0, c1, side="right"))
    return slice(start, stop)


class _Upsampler:
    """Turns grid scores into full-resolution masks, upsampling only where it matters.

    Only the pixels whose interpolation quad touches a cell above ``threshold`` can exceed it,
    so each mask is upsampled inside that box only, separably: rows first (``[rows, w]``), then
    columns. Identical to thresholding :func:`upsample_bilinear` of the whole map.
    """

    def __init__(self, shape: tuple[int, int], grid: tuple[int, int], stride: int):
        self.shape, self.stride = shape, stride
        self.y0, self.y1, self.fy = _interp_axis(shape[0], grid[0], stride)
        self.x0, self.x1, self.fx = _interp_axis(shape[1], grid[1], stride)

    def _crop(self, g: np.ndarray, rs: slice, cs: slice) -> np.ndarray:
        fy = self.fy[rs, None]
        rows = g[self.y0[rs]] * (1 - fy) + g[self.y1[rs]] * fy  # [rows, w]
        fx = self.fx[cs]
        return rows[:, self.x0[cs]] * (1 - fx) + rows[:, self.x1[cs]] * fx

    def full(self, g: np.ndarray) -> np.ndarray:
        """The whole upsampled map (bit-identical to every crop of it: the same arithmetic per pixel)."""
        return self._crop(g, slice(None), slice(None))

    def box(self, hot: np.ndarray) -> tuple[slice, slice] | None:
        """The pixel box whose interpolation quads touch a ``hot`` cell (None if none is)."""
        cy = np.flatnonzero(hot.any(axis=1))
        if len(cy) == 0:
            return None
        cx = np.flatnonzero(hot.any(axis=0))
        return (_pixel_range(cy[0], cy[-1], self.y0, self.y1),
                _pixel_range(cx[0], cx[-1], self.x0, self.x1))

    def mask(self, g: np.ndarray, threshold: float, bg_full: np.ndarray | None) -> np.ndarray:
        """``upsampled(g) > threshold`` (and ``>= bg_full``, the upsampled background, when given)."""
        H, W = self.shape
        out = np.zeros((H, W), dtype=bool)
        box = self.box(g > threshold)  # outside the box of hot cells no pixel can exceed the threshold
        if box is None:
            return out
        rs, cs = box
        up = self._crop(g, rs, cs)
        sel = up > threshold
        if bg_full is not None:
            sel &= up >= bg_full[rs, cs]
        out[rs, cs] = sel
        return out


#: Relative slack of the crop boxes of :func:`irn_assign`: a bilinear value is a convex combination
#: of its quad's cells, so it exceeds their maximum by rounding only (a few ulps). Boxes chosen with
#: this slack are larger, never smaller, than needed: the result stays exact.
_BOX_SLACK = 1e-9


def _upsampled_max(G: np.ndarray, up: _Upsampler) -> float:
    """``max`` over all maps and pixels of the upsampled ``G [K, h, w]`` (scores >= 0), exactly as
    on the full maps, upsampling only the boxes that can hold a larger value: maps are visited by
    decreasing grid maximum, which bounds their upsampled values, and the scan stops once no map
    can beat the running maximum."""
    ub = G.reshape(len(G), -1).max(axis=1) if G.size else np.zeros(len(G))
    best = 0.0
    for k in np.argsort(-ub, kind="stable"):
        if ub[k] * (1 + _BOX_SLACK) <= best:
            break
        box = up.box(G[k] > best * (1 - _BOX_SLACK))
        if box is not None:
            best = max(best, float(up._crop(G[k], *box).max()))
    return best


def irn_assign(G: np.ndarray, up: _Upsampler, threshold: float) -> tuple[np.ndarray, float]:
    """IRN's decision on raw grid scores ``G [K, h, w]`` (>= 0).

    With ``U_k`` the bilinear upsampling of ``G[k]`` and ``M = max_k max U_k`` (IRN's
    ``rw_up / torch.max(rw_up)``), each pixel gets ``argmax([threshold, U_0 / M, ..., U_{K-1} / M])
    - 1`` (IRN pads a constant ``sem_seg_bg_thres`` / ``ins_seg_bg_thres`` channel first; argmax
    keeps the first maximum, so the background wins ties, then the lower index). Returns
    ``(labels int32 [H, W] with -1 = background, M)``; all background when ``M == 0``.

    Identical to that full computation (tested), but each map is upsampled only inside the box of
    pixels whose quad touches a cell that could pass ``threshold * M``.
    """
    H, W = up.shape
    labels = np.full((H, W), -1, dtype=np.int32)
    M = _upsampled_max(G, up)
    if not M > 0:
        return labels, M
    best = np.full((H, W), float(threshold))
    for k in range(len(G)):
        box = up.box(G[k] > threshold * M * (1 - _BOX_SLACK))
        if box is None:
            continue
        rs, cs = box
        u = up._crop(G[k], rs, cs) / M
        b = best[rs, cs]
        sel = u > b  # strict: an earlier channel (the background first) keeps ties
        b[sel] = u[sel]
        labels[rs, cs][sel] = k
    return labels, M


def propagate_masks(masks: Sequence[np.ndarray], edge: np.ndarray, *, steps: int = 256,
                    beta: float = 10.0, radius: int = 5, stride: int = DEFAULT_STRIDE,
                    threshold: float = 0.25, background: bool = True,
                    rule: str = "irn") -> list[np.ndarray]:
    """Propagate every mask inside the edge boundaries (IRN random walk; see module docstring).

    Returns one boolean mask per input mask:

    * ``rule="irn"``: the pixels where the mask's upsampled score, divided by the global maximum
      over all masks, is above ``threshold`` and the largest of all masks' (:func:`irn_assign`).
      ``background`` is not used (IRN's background is the constant ``threshold``).
    * ``rule="per_mask"``: the pixels where the mask's own-max-normalised, upsampled score
      exceeds ``threshold`` and, with ``background``, is at least the propagated background's.

    A mask whose seed is empty on the grid (it lies entirely under edges of value 1) or whose
    propagated mask would be empty is returned unchanged: propagation never deletes a proposal.
    Identical input masks are propagated once (so under ``irn`` they share one result instead of
    the first taking every pixel).
    """
    if rule not in RULES:
        raise ValueError(f"propagate_masks: unknown rule {rule!r} (one of {', '.join(RULES)})")
    masks = [np.asarray(m, dtype=bool) for m in masks]
    if not masks:
        return []
    e = check_edge(edge)
    H, W = e.shape
    first: dict[bytes, int] = {}
    owner = [first.setdefault(np.packbits(m).tobytes(), len(first)) for m in masks]
    uniq: list[np.ndarray] = [None] * len(first)  # type: ignore[list-item]
    for k, o in enumerate(owner):
        if uniq[o] is None:
            uniq[o] = masks[k]
    per_mask = rule == "per_mask"
    res = propagate_scores(uniq, e, steps=steps, beta=beta, radius=radius, stride=stride,
                           background=background and per_mask, normalise=per_mask)
    G = np.ascontiguousarray(np.moveaxis(res["scores"], -1, 0))  # [K(+1), h, w]: one contiguous map per mask
    up = _Upsampler((H, W), res["grid"], stride)
    out_u = []
    if per_mask:
        bg_full = up.full(G[-1]) if background else None  # upsampled once, not once per mask
        for k, m in enumerate(uniq):
            new = up.mask(G[k], threshold, bg_full) if res["seed_mass"][k] > 0 else None
            out_u.append(new if new is not None and new.any() else m.copy())
    else:
        labels, _ = irn_assign(G, up, threshold)
        for k, m in enumerate(uniq):
            new = labels == k if res["seed_mass"][k] > 0 else None
            out_u.append(new if new is not None and new.any() else m.copy())
    out, used = [], set()
    for o in owner:
        out.append(out_u[o] if o not in used else out_u[o].copy())
        used.add(o)
    return out
