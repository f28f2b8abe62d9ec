"""Normalized cut on a patch graph and MaskCut's iterative bipartition (CutLER, Wang et al. 2023).

Pure numpy/scipy on patch features; no model, no image. Each function does one step:

* :func:`patch_affinity` -- cosine similarity of the patch features, thresholded: ``W_ij = 1``
  where ``cos > tau``, else ``eps`` (a dense, connected graph);
* :func:`fiedler_vector` -- the second smallest solution of ``(D - W) x = lambda D x``
  (Shi & Malik's relaxed normalized cut) with ``scipy.linalg.eigh``;
* :func:`orient_bipartition` -- split at the mean of ``x`` and pick the foreground side;
* :func:`seed_component` -- the 4-connected component of the foreground holding the seed;
* :func:`ncut_value` -- ``cut(S, S') / vol(S) + cut(S, S') / vol(S')`` of a patch set;
* :func:`maskcut_patches` -- CutLER's iterative loop: cut, keep the seed's component, remove its
  patches from the graph (their affinities set to ``eps``), cut again, ``n_masks`` rounds.

The algorithm follows the MaskCut description of the CutLER paper and its public release (the
choices where the two differ are parameters; docs/bgp.md §6 lists them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg, ndimage

__all__ = ["CutMask", "patch_affinity", "fiedler_vector", "orient_bipartition", "seed_component",
           "ncut_value", "mask_iou", "maskcut_patches", "AFFINITY_EPS"]

#: affinity of two patches whose cosine similarity is at most tau (CutLER: 1e-5)
AFFINITY_EPS = 1e-5


@dataclass(frozen=True)
class CutMask:
    """One MaskCut mask on the patch grid."""

    patches: np.ndarray  # bool [h, w]
    ncut: float          # normalized-cut value of the seed component in the graph it was cut from
    round: int           # iteration (0-based) that produced it
    seed: int            # flat patch index of the seed


def patch_affinity(feats: np.ndarray, tau: float, eps: float = AFFINITY_EPS) -> np.ndarray:
    """Binary cosine affinity ``[N, N]`` (float64) of patch features ``[N, C]``.

    ``W_ij = 1`` if ``cos(f_i, f_j) > tau`` else ``eps``. A zero feature vector has cosine 0 to
    every patch (itself included). The matrix is symmetric with positive entries.
    """
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"patch_affinity: expected features [N, C], got {f.shape}")
    norm = np.linalg.norm(f, axis=1, keepdims=True)
    unit = np.divide(f, norm, out=np.zeros_like(f), where=norm > 0)
    cos = unit @ unit.T
    cos = 0.5 * (cos + cos.T)  # exact symmetry whatever the BLAS summation order
    return np.where(cos > tau, 1.0, float(eps))


def fiedler_vector(W: np.ndarray) -> tuple[np.ndarray, float]:
    """Second smallest generalized eigenpair of ``(D - W) x = lambda D x``, ``D = diag(W 1)``.

    ``D`` is diagonal and positive, so the pencil is reduced exactly to the standard symmetric
    problem ``L y = lambda y`` with ``L = I - D^-1/2 W D^-1/2`` and ``x = D^-1/2 y``; only the
    second smallest eigenpair is computed (``scipy.linalg.eigh``, ``subset_by_index=[1, 1]``, MRRR
    driver ``evr``): about 3x faster than the generalized driver on the same matrix, same
    solution. Returns ``(x [N], lambda)`` with ``x^T D x = 1`` (the normalisation of the
    generalized problem). The sign of ``x`` is whatever LAPACK returns;
    :func:`orient_bipartition` makes it irrelevant.
    """
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1] or W.shape[0] < 2:
        raise ValueError(f"fiedler_vector: expected a square matrix with N >= 2, got {W.shape}")
    d = W.sum(axis=1)
    if not np.all(d > 0):
        raise ValueError("fiedler_vector: every node needs a positive degree")
    s = 1.0 / np.sqrt(d)
    L = -(s[:, None] * W * s[None, :])
    L[np.diag_indices_from(L)] += 1.0
    L = 0.5 * (L + L.T)
    vals, vecs = linalg.eigh(L, subset_by_index=[1, 1], driver="evr")
    return s * vecs[:, 0], float(vals[0])


def _corner_count(fg: np.ndarray) -> int:
    return int(fg[0, 0]) + int(fg[0, -1]) + int(fg[-1, 0]) + int(fg[-1, -1])


def orient_bipartition(vec: np.ndarray, grid: tuple[int, int], *, corner_limit: int = 3
                       ) -> tuple[np.ndarray, int]:
    """Split the patches at the mean of ``vec`` and choose which side is the foreground.

    The foreground is the side ``vec > mean`` unless (a) it covers ``corner_limit`` or more of the
    grid's four corner patches (object-centric prior: an object rarely fills the corners), or
    (b) it does not hold the patch of largest ``|vec|`` (the most salient patch lies on the
    foreground side); then it is the other side. The seed is the patch with the most extreme
    value on the foreground side. Returns ``(fg bool [h, w], seed flat index)``.
    """
    h, w = grid
    v = np.asarray(vec, dtype=np.float64).reshape(-1)
    if v.size != h * w:
        raise ValueError(f"orient_bipartition: vector of {v.size} entries for a {h}x{w} grid")
    fg = (v > v.mean()).reshape(h, w)
    peak = int(np.argmax(np.abs(v)))
    if _corner_count(fg) >= corner_limit or not fg.reshape(-1)[peak]:
        fg = ~fg
        v = -v
    seed = int(np.argmax(np.where(fg.reshape(-1), v, -np.inf)))
    return fg, seed


def seed_component(fg: np.ndarray, seed: int) -> np.ndarray:
    """The 4-connected component of ``fg`` (bool [h, w]) containing the flat index ``seed``
    (empty if the seed is not foreground)."""
    fg = np.asarray(fg, dtype=bool)
    labels, _ = ndimage.label(fg)  # default structure: 4-connectivity
    lab = labels.reshape(-1)[seed]
    if lab == 0:
        return np.zeros_like(fg)
    return labels == lab


def ncut_value(W: np.ndarray, mask: np.ndarray) -> float:
    """Normalized cut ``cut(S, S') / vol(S) + cut(S, S') / vol(S')`` of ``S = mask`` in ``[0, 2]``
    (2.0 when S or its complement is empty)."""
    s = np.asarray(mask, dtype=bool).reshape(-1)
    if not s.any() or s.all():
        return 2.0
    d = W.sum(axis=1)
    vol_s, vol_t = float(d[s].sum()), float(d[~s].sum())
    cut = float(W[np.ix_(s, ~s)].sum())
    return cut / vol_s + cut / vol_t


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def maskcut_patches(feats: np.ndarray, grid: tuple[int, int], *, n_masks: int = 3, tau: float = 0.2,
                    eps: float = AFFINITY_EPS, corner_limit: int = 3, min_frac: float = 0.01,
                    max_iou: float = 0.5) -> list[CutMask]:
    """MaskCut on patch features ``[h*w, C]`` (row-major over ``grid = (h, w)``), following the
    loop of CutLER's ``maskcut_forward`` (maskcut/maskcut.py) round for round.

    Round ``i`` (exactly ``n_masks`` rounds; a rejected round counts):

    1. ``W`` = :func:`patch_affinity` of the features, with every patch of an earlier *accepted*
       mask disconnected (its row and column set to ``eps``: CutLER zeroes its feature);
    2. ``x`` = :func:`fiedler_vector` of ``W``; foreground side and seed by :func:`orient_bipartition`;
    3. the candidate is the seed's 4-connected foreground component (:func:`seed_component`);
    4. from round 1 on (never in round 0) the candidate is rejected when it covers at most
       ``min_frac`` of the patches or has IoU > ``max_iou`` with the *previous round's* mask,
       where a rejected round's mask is empty (CutLER sets ``current_mask`` to zeros). A rejected
       round removes nothing, so the next round cuts the same graph again: a size rejection
       repeats until the rounds run out, while an IoU rejection is followed by the same
       candidate compared with an empty mask (IoU 0), which is then accepted if large enough;
    5. an accepted candidate's patches are removed from the graph; the returned mask excludes
       patches that earlier masks already hold (CutLER's ``bipartition - masked_out``), so
       returned masks are disjoint, and a mask left empty by that is not returned.

    Returns the accepted, non-empty masks in round order (at most ``n_masks``).
    """
    h, w = grid
    f = np.asarray(feats, dtype=np.float64)
    if f.shape[0] != h * w:
        raise ValueError(f"maskcut_patches: {f.shape[0]} feature rows for a {h}x{w} grid")
    if h * w < 2:
        return []
    base = patch_affinity(f, tau, eps)
    removed = np.zeros(h * w, dtype=bool)
    taken = np.zeros((h, w), dtype=bool)
    previous = np.zeros((h, w), dtype=bool)  # CutLER's current_mask (empty after a rejected round)
    cached: tuple | None = None  # the cut of the current graph: it only changes when a mask is accepted
    out: list[CutMask] = []
    for rnd in range(int(n_masks)):
        if cached is None:
            W = base.copy()
            W[removed, :] = eps
            W[:, removed] = eps
            vec, _ = fiedler_vector(W)
            fg, seed = orient_bipartition(vec, (h, w), corner_limit=corner_limit)
            cached = (W, seed, seed_component(fg, seed))
        W, seed, comp = cached
        if rnd >= 1 and (comp.mean() <= min_frac or mask_iou(comp, previous) > max_iou):
            previous = np.zeros_like(comp)
            continue
        ncut = ncut_value(W, comp)
        previous = comp
        removed |= comp.reshape(-1)
        cached = None
        new = comp & ~taken
        taken |= comp
        if new.any():
            out.append(CutMask(patches=new, ncut=ncut, round=rnd, seed=seed))
    return out
