"""BGP step 3: iterative IoU merging (paper §3.5, tau_BGP = 0.5)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["pairwise_intersections", "merge_masks"]

def _union_box(masks: Sequence[np.ndarray]) -> tuple[slice, slice]:
    any_y = np.zeros(masks[0].shape[0], dtype=bool)
    any_x = np.zeros(masks[0].shape[1], dtype=bool)
    for m in masks:
        any_y |= m.any(axis=1)
        any_x |= m.any(axis=0)
    ys, xs = np.flatnonzero(any_y), np.flatnonzero(any_x)
    if len(ys) == 0:
        return slice(0, 0), slice(0, 0)
    return slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1)


def _atoms(masks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Group pixels by their K-bit membership signature.

    Returns ``(B, counts)``: ``B [A, K]`` float64 0/1, one row per distinct non-empty signature
    ("atom": a set of pixels covered by exactly the same masks), and the pixel count of each.
    Every mask, and every union of masks, is exactly a union of atoms.
    """
    K = len(masks)
    rs, cs = _union_box(masks)
    P = (rs.stop - rs.start) * (cs.stop - cs.start)
    if P == 0:
        return np.zeros((0, K)), np.zeros(0, dtype=np.int64)
    nw = -(-K // 64)
    words = np.zeros((nw, P), dtype=np.uint64)  # bit k % 64 of word k // 64 = pixel in mask k
    for k, m in enumerate(masks):
        bit = np.left_shift(m[rs, cs].ravel().view(np.uint8).astype(np.uint64), np.uint64(k % 64))
        np.bitwise_or(words[k // 64], bit, out=words[k // 64])
    sig = np.ascontiguousarray(words.T)  # [P, nw]
    uniq, counts = np.unique(sig.view(np.dtype((np.void, 8 * nw))).ravel(), return_counts=True)
    U = uniq.view(np.uint64).reshape(-1, nw)  # [A, nw] distinct signatures
    kk = np.arange(K)
    B = ((U[:, kk // 64] >> (kk % 64).astype(np.uint64)) & np.uint64(1)).astype(np.float64)
    nonempty = B.any(axis=1)
    return B[nonempty], counts[nonempty].astype(np.int64)


def pairwise_intersections(masks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Exact pairwise intersection counts and areas of boolean masks.

    Each pixel (inside the bounding box of the union) has a K-bit membership signature; the
    pixels are grouped by signature (``np.unique`` on the bit-packed ``[P, ceil(K/64)]`` uint64
    form), giving a 0/1 matrix ``B [A, K]`` of distinct signatures with pixel counts ``c``. Then
    ``inter = B.T @ diag(c) @ B`` -- the matrix product ``M @ M.T`` of the ``[K, P]`` mask matrix,
    computed on its packed, deduplicated form (A is a few hundred to a few thousand for real
    proposals, P ~ 3e5). Integer-valued float64 arithmetic below 2^53, so the counts are exact.
    Returns ``(inter [K, K] int64, area [K] int64)``.
    """
    masks = [np.asarray(m, dtype=bool) for m in masks]
    K = len(masks)
    if K == 0:
        return np.zeros((0, 0), dtype=np.int64), np.zeros(0, dtype=np.int64)
    B, counts = _atoms(masks)
    inter = np.rint(B.T @ (B * counts[:, None].astype(np.float64))).astype(np.int64)
    return inter, np.diagonal(inter).copy()


def _iou_matrix(inter: np.ndarray, area: np.ndarray) -> np.ndarray:
    union = area[:, None] + area[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    np.fill_diagonal(iou, -1.0)
    return iou


def merge_masks(masks: Sequence[np.ndarray], scores: Sequence[float], *, iou: float = 0.5
                ) -> tuple[list[np.ndarray], np.ndarray]:
    """Iteratively merge the most-overlapping pair while its IoU is strictly above ``iou``.

    Each round takes the pair (i, j), i < j, with the highest IoU among the current masks; ties
    go to the smallest i, then the smallest j (current list order). If that IoU is > ``iou``
    the pair is replaced by one mask at position i: the union of both, with score
    ``max(s_i, s_j)``; mask j is removed. Rounds repeat until no pair exceeds ``iou``. Masks are
    kept as unions of "atoms" (pixels sharing one membership signature, see
    :func:`pairwise_intersections`), so the merged mask's intersections with all others are
    exact integer counts from one small product per round. Empty masks have IoU 0 with
    everything. Returns ``(masks, scores)`` in list order.
    """
    masks = [np.asarray(m, dtype=bool) for m in masks]
    scores = np.asarray(scores, dtype=np.float64).reshape(-1).copy()
    if len(masks) != len(scores):
        raise ValueError(f"merge_masks: {len(masks)} masks but {len(scores)} scores")
    K = len(masks)
    if K < 2:
        return [m.copy() for m in masks], scores
    B, counts = _atoms(masks)  # current mask k = union of the atoms with B[:, k] = 1
    inter = np.rint(B.T @ (B * counts[:, None].astype(np.float64))).astype(np.int64)
    B = B.astype(bool)
    area = np.diagonal(inter).copy()
    IoU = _iou_matrix(inter, area)
    upper = np.triu(np.ones((K, K), dtype=bool), 1)
    IoU[~upper] = -1.0  # only pairs i < j compete
    alive = np.ones(K, dtype=bool)
    cur = [m.copy() for m in masks]
    while True:
        # np.argmax returns the first maximum in row-major order: smallest i, then smallest j
        flat = int(np.argmax(IoU))
        i, j = divmod(flat, K)
        if not IoU[i, j] > iou:
            break
        cur[i] = cur[i] | cur[j]
        cur[j] = np.zeros_like(cur[i])
        alive[j] = False
        scores[i] = max(scores[i], scores[j])
        # the union's atoms give its exact intersection with every other current mask
        B[:, i] |= B[:, j]
        B[:, j] = False
        idx = np.flatnonzero(B[:, i])
        row = (B[idx] * counts[idx, None]).sum(axis=0)  # integer sums, no BLAS in the loop
        area[i] = row[i]
        area[j] = 0
        union = area[i] + area - row
        r = np.where(union > 0, row / np.maximum(union, 1), 0.0)
        r[~alive] = -1.0
        r[i] = -1.0
        IoU[i, :] = np.where(upper[i], r, -1.0)
        IoU[:, i] = np.where(upper[:, i], r, -1.0)
        IoU[j, :] = -1.0
        IoU[:, j] = -1.0
    keep = np.flatnonzero(alive)
    return [cur[k] for k in keep], scores[keep]
