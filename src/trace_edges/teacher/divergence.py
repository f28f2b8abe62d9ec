"""Aggregated self-attention (paper §3.1), IEP (Eq. 1) and ABDiv (Eq. 2).

Two layers, kept apart on purpose:

* **Reference definitions** on materialised maps, written to be read next to the paper:
  :func:`aggregate_attention` builds SA ∈ [0,1]^{N×N} (rows sum to 1), :func:`iep` picks t* from
  ``{τ: SA_τ}`` and :func:`abdiv` turns one SA into an H×W edge map.
* **Q/K paths** that never hold an N×N map: :func:`abdiv_from_qk` / :func:`iep_from_qk` with
  ``mode="exact"`` compute the very same numbers (to float tolerance) by walking query rows in
  chunks (peak extra memory O(chunk·N)); ``mode="fast"`` averages per-head, per-block KLs
  computed in closed form from Q and K with a fused attention call — a *different* quantity
  (mean of KLs instead of KL of means), offered as a measured option, never as the default.

Conventions (the paper is silent on all of them; see docs/teacher.md):

* Per block ``b`` the inputs are ``q, k: [heads, n_b, head_dim]`` on a token grid ``(h_b, w_b)``
  with ``n_b = h_b·w_b`` (row-major), and a softmax scale (default ``head_dim**-0.5``).
* Multi-scale fusion U_{b→max}: each block's head-averaged map is brought to ``out_grid`` with the
  **key** dimensions upsampled bilinearly (``align_corners=False``) and each row renormalised to
  sum to 1, and the **query** dimensions upsampled nearest (output query (i, j) reads block query
  (⌊i·h_b/H⌋, ⌊j·w_b/W⌋), as ``F.interpolate(mode="nearest")`` does). Then a plain mean over blocks.
* KL uses ``eps`` inside the logs: KL(p‖q) = Σ p·(log(p+ε) − log(q+ε)), ε = 1e-12 by default.
* ABDiv borders use replicate padding: the row "outside" the grid is the border row itself.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

Grid = tuple[int, int]
DIVERGENCES = ("kl", "jsd", "mse", "mae")
DEFAULT_EPS = 1e-12


# ---------------------------------------------------------------------------------------------
# divergences between rows (distributions over keys): inputs [..., N] -> [...]
# ---------------------------------------------------------------------------------------------
def kl_rows(p: torch.Tensor, q: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    return (p * (torch.log(p + eps) - torch.log(q + eps))).sum(-1)


def jsd_rows(p: torch.Tensor, q: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    m = 0.5 * (p + q)
    return 0.5 * kl_rows(p, m, eps) + 0.5 * kl_rows(q, m, eps)


def mse_rows(p: torch.Tensor, q: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    return ((p - q) ** 2).mean(-1)


def mae_rows(p: torch.Tensor, q: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    return (p - q).abs().mean(-1)


_ROW_DIV: dict[str, Callable[..., torch.Tensor]] = {"kl": kl_rows, "jsd": jsd_rows, "mse": mse_rows, "mae": mae_rows}


def row_divergence(name: str) -> Callable[..., torch.Tensor]:
    try:
        return _ROW_DIV[name]
    except KeyError:
        raise ValueError(f"unknown divergence {name!r}; choose one of {DIVERGENCES}") from None


# ---------------------------------------------------------------------------------------------
# aggregation (reference materialisation)
# ---------------------------------------------------------------------------------------------
def _check_block(q: torch.Tensor, k: torch.Tensor, grid: Grid) -> None:
    if q.ndim != 3 or k.shape != q.shape:
        raise ValueError(f"q and k must both be [heads, n_tokens, head_dim], got {tuple(q.shape)} and {tuple(k.shape)}")
    if q.shape[1] != grid[0] * grid[1]:
        raise ValueError(f"{q.shape[1]} tokens do not fill the grid {grid}")


def _scale(q: torch.Tensor, scale: float | None) -> float:
    return q.shape[-1] ** -0.5 if scale is None else float(scale)


def _upsample_keys(rows: torch.Tensor, grid: Grid, out_grid: Grid) -> torch.Tensor:
    """[c, n_b] distributions on ``grid`` -> [c, N] on ``out_grid`` (bilinear, renormalised)."""
    if tuple(grid) == tuple(out_grid):
        return rows
    c = rows.shape[0]
    up = F.interpolate(rows.reshape(c, 1, *grid), size=tuple(out_grid), mode="bilinear", align_corners=False)
    up = up.reshape(c, -1)
    return up / up.sum(-1, keepdim=True)


def _query_index(grid: Grid, out_grid: Grid, query_idx: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour map from output-grid query indices to block query indices."""
    H, W = out_grid
    h, w = grid
    i = torch.div(query_idx, W, rounding_mode="floor")
    j = query_idx - i * W
    bi = torch.clamp((i * h) // H, max=h - 1)
    bj = torch.clamp((j * w) // W, max=w - 1)
    return bi * w + bj


def block_attention(q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Head-averaged self-attention of one block: mean_h softmax(s·q_h·k_hᵀ) -> [n, n]."""
    s = _scale(q, scale)
    return torch.softmax(s * q @ k.transpose(-1, -2), dim=-1).mean(0)


def aggregate_attention(qs: Sequence[torch.Tensor], ks: Sequence[torch.Tensor], grids: Sequence[Grid],
                        out_grid: Grid, scales: Sequence[float | None] | None = None) -> torch.Tensor:
    """SA(X_t) = (1/B) Σ_b U_{b→max}(mean_h softmax(s·Q_b K_bᵀ)) as a materialised [N, N] map.

    This is the reference definition (O(N²) memory); use :func:`abdiv_from_qk` / :func:`iep_from_qk`
    for anything at real resolution.
    """
    if not qs:
        raise ValueError("no attention blocks given")
    scales = list(scales) if scales is not None else [None] * len(qs)
    H, W = out_grid
    N = H * W
    all_q = torch.arange(N, device=qs[0].device)
    total = None
    for q, k, grid, sc in zip(qs, ks, grids, scales):
        _check_block(q, k, grid)
        a = block_attention(q, k, sc)                          # [n_b, n_b]
        rows = _upsample_keys(a, grid, out_grid)               # [n_b, N]
        rows = rows[_query_index(grid, out_grid, all_q)]       # [N, N]
        total = rows if total is None else total + rows
    return total / len(qs)


# ---------------------------------------------------------------------------------------------
# IEP (Eq. 1) and ABDiv (Eq. 2) on materialised maps
# ---------------------------------------------------------------------------------------------
def iep(maps_by_step: Mapping[int, torch.Tensor], divergence: str = "kl",
        eps: float = DEFAULT_EPS) -> tuple[int, dict[int, float]]:
    """Instance Emergence Point: t* = argmax_k D(SA(τ_{k-1}) ‖ SA(τ_k)), D averaged over query rows.

    ``maps_by_step`` maps timestep τ -> SA(X_τ); steps are taken in ascending τ. Returns ``t*`` and
    the curve ``{τ_k: D}`` for k ≥ 1 (ties: the earliest step).
    """
    steps = sorted(maps_by_step)
    if len(steps) < 2:
        raise ValueError("IEP needs at least two steps")
    div = row_divergence(divergence)
    curve = {t: float(div(maps_by_step[tp], maps_by_step[t], eps).mean())
             for tp, t in zip(steps[:-1], steps[1:])}
    return _argmax_step(curve), curve


def _argmax_step(curve: Mapping[int, float]) -> int:
    best_t, best_v = None, -math.inf
    for t in sorted(curve):
        if curve[t] > best_v:
            best_t, best_v = t, curve[t]
    return int(best_t)


def iep_step(curve: Mapping[int, float], steps: Sequence[int]) -> int:
    """t* for a trajectory: the argmax of the IEP curve (Eq. 1; ties: the earliest step), or the
    only step when there is no curve (a one-step "trajectory": an image encoder such as DINOv2,
    whose self-attention is read once, as the paper's non-diffusion controls)."""
    if curve:
        return _argmax_step(curve)
    if len(steps) != 1:
        raise ValueError(f"an empty IEP curve for a {len(steps)}-step trajectory")
    return int(steps[0])


def _pairs(neighbourhood: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Opposite-neighbour offset pairs (a, b): D(row(p+a) ‖ row(p+b))."""
    pairs = [((1, 0), (-1, 0)), ((0, 1), (0, -1))]
    if neighbourhood == 8:
        pairs += [((1, 1), (-1, -1)), ((1, -1), (-1, 1))]
    elif neighbourhood != 4:
        raise ValueError("neighbourhood must be 4 or 8")
    return pairs


def _shift_index(H: int, W: int, di: int, dj: int, rows: torch.Tensor, device) -> torch.Tensor:
    """Flat indices of (i+di, j+dj) for grid rows ``rows`` (all columns), replicate-clamped."""
    i = torch.clamp(rows + di, 0, H - 1)[:, None]
    j = torch.clamp(torch.arange(W, device=device) + dj, 0, W - 1)[None, :]
    return (i * W + j).reshape(-1)


def abdiv(sa: torch.Tensor, grid: Grid, divergence: str = "kl", eps: float = DEFAULT_EPS,
          neighbourhood: int = 4) -> torch.Tensor:
    """ABDiv(SA)_{i,j} = D(SA_{i+1,j} ‖ SA_{i-1,j}) + D(SA_{i,j+1} ‖ SA_{i,j-1}) -> [H, W].

    ``sa`` is a materialised [N, N] map on ``grid`` (H, W); replicate padding at the borders.
    ``neighbourhood=8`` adds the two diagonal pairs (the paper's 8-neighbour ablation).
    """
    H, W = grid
    if sa.shape != (H * W, H * W):
        raise ValueError(f"SA must be [{H * W}, {H * W}] for grid {grid}, got {tuple(sa.shape)}")
    div = row_divergence(divergence)
    rows = torch.arange(H, device=sa.device)
    out = torch.zeros(H * W, dtype=sa.dtype, device=sa.device)
    for a, b in _pairs(neighbourhood):
        out += div(sa[_shift_index(H, W, *a, rows, sa.device)], sa[_shift_index(H, W, *b, rows, sa.device)], eps)
    return out.reshape(H, W)


# ---------------------------------------------------------------------------------------------
# exact paths from Q/K: chunked rows, never N×N
# ---------------------------------------------------------------------------------------------
def sa_rows(qs: Sequence[torch.Tensor], ks: Sequence[torch.Tensor], grids: Sequence[Grid], out_grid: Grid,
            query_idx: torch.Tensor, scales: Sequence[float | None] | None = None, *,
            headwise: bool = False) -> torch.Tensor:
    """Rows ``query_idx`` of the aggregated SA, computed from Q/K: [len(query_idx), N].

    ``headwise``: heads one at a time, so the extra memory is O(len(query_idx) * N) whatever the
    head count (the chunked path of :mod:`trace_edges.teacher.sa_map`); otherwise all heads at once."""
    scales = list(scales) if scales is not None else [None] * len(qs)
    total = None
    for q, k, grid, sc in zip(qs, ks, grids, scales):
        bq = _query_index(grid, out_grid, query_idx)
        uniq, inv = torch.unique(bq, return_inverse=True)
        s = _scale(q, sc)
        if headwise:
            acc = None
            for h in range(q.shape[0]):
                p = torch.softmax(s * q[h, uniq] @ k[h].T, dim=-1)    # [u, n_b]
                acc = p if acc is None else acc.add_(p)
            a = acc / q.shape[0]
        else:
            a = torch.softmax(s * q[:, uniq] @ k.transpose(-1, -2), dim=-1).mean(0)   # [u, n_b]
        rows = _upsample_keys(a, grid, out_grid)[inv]                              # [c, N]
        total = rows if total is None else total + rows
    return total / len(qs)


def _band_rows(H: int, W: int, N: int, chunk: int) -> int:
    """Grid rows per band so that a band plus its halo holds about ``chunk`` query rows."""
    return max(1, chunk // max(W, 1) - 2)


def abdiv_from_qk(qs: Sequence[torch.Tensor], ks: Sequence[torch.Tensor], grids: Sequence[Grid], out_grid: Grid,
                  mode: str = "exact", *, divergence: str = "kl", eps: float = DEFAULT_EPS, neighbourhood: int = 4,
                  scales: Sequence[float | None] | None = None, chunk: int = 1024) -> torch.Tensor:
    """ABDiv from per-block Q/K without materialising SA.

    ``mode="exact"`` equals ``abdiv(aggregate_attention(...))`` (up to float rounding) and walks the
    output grid in bands of rows (plus a one-row halo) holding about ``chunk`` query rows, so peak
    extra memory is O(chunk·N). ``mode="fast"``: see :func:`abdiv_fast`.
    """
    for q, k, g in zip(qs, ks, grids):
        _check_block(q, k, g)
    if mode == "fast":
        return abdiv_fast(qs, ks, grids, out_grid, neighbourhood=neighbourhood, scales=scales, divergence=divergence)
    if mode != "exact":
        raise ValueError(f"mode must be 'exact' or 'fast', got {mode!r}")
    H, W = out_grid
    N = H * W
    div = row_divergence(divergence)
    device = qs[0].device
    out = torch.zeros(H, W, dtype=qs[0].dtype, device=device)
    band = _band_rows(H, W, N, chunk)
    pairs = _pairs(neighbourhood)
    for r0 in range(0, H, band):
        r1 = min(H, r0 + band)
        lo, hi = max(0, r0 - 1), min(H, r1 + 1)                  # band plus halo (replicate at borders)
        q_idx = torch.arange(lo * W, hi * W, device=device)
        rows = sa_rows(qs, ks, grids, out_grid, q_idx, scales)   # [(hi-lo)·W, N]
        band_rows = torch.arange(r0, r1, device=device)
        acc = torch.zeros((r1 - r0) * W, dtype=rows.dtype, device=device)
        for a, b in pairs:
            ia = _shift_index(H, W, *a, band_rows, device) - lo * W
            ib = _shift_index(H, W, *b, band_rows, device) - lo * W
            acc += div(rows[ia], rows[ib], eps)
        out[r0:r1] = acc.reshape(r1 - r0, W)
    return out


def iep_divergence_from_qk(prev: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]],
                           curr: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]],
                           grids: Sequence[Grid], out_grid: Grid, mode: str = "exact", *,
                           divergence: str = "kl", eps: float = DEFAULT_EPS,
                           scales: Sequence[float | None] | None = None, chunk: int = 1024) -> float:
    """One point of the IEP curve, D(SA(τ_prev) ‖ SA(τ)) averaged over query rows, from Q/K.

    ``prev`` and ``curr`` are ``(qs, ks)`` of two consecutive steps (same blocks and grids).
    ``mode="exact"`` equals the reference on materialised maps, in O(chunk·N) memory.
    """
    (qp, kp), (qc, kc) = prev, curr
    if mode == "fast":
        return iep_fast(prev, curr, grids, scales=scales, divergence=divergence)
    if mode != "exact":
        raise ValueError(f"mode must be 'exact' or 'fast', got {mode!r}")
    H, W = out_grid
    N = H * W
    div = row_divergence(divergence)
    device = qp[0].device
    total = torch.zeros((), dtype=torch.float64, device=device)
    for c0 in range(0, N, chunk):
        idx = torch.arange(c0, min(N, c0 + chunk), device=device)
        total += div(sa_rows(qp, kp, grids, out_grid, idx, scales),
                     sa_rows(qc, kc, grids, out_grid, idx, scales), eps).sum().double()
    return float(total / N)


def iep_from_qk(qk_by_step: Mapping[int, tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]],
                grids: Sequence[Grid], out_grid: Grid, mode: str = "exact", *, divergence: str = "kl",
                eps: float = DEFAULT_EPS, scales: Sequence[float | None] | None = None,
                chunk: int = 1024) -> tuple[int, dict[int, float]]:
    """:func:`iep` from per-step Q/K (``{τ: (qs, ks)}``). The teacher itself streams the steps and
    keeps only the previous one (see trajectory.py); this form is for tests and benchmarks."""
    steps = sorted(qk_by_step)
    if len(steps) < 2:
        raise ValueError("IEP needs at least two steps")
    curve = {t: iep_divergence_from_qk(qk_by_step[tp], qk_by_step[t], grids, out_grid, mode,
                                       divergence=divergence, eps=eps, scales=scales, chunk=chunk)
             for tp, t in zip(steps[:-1], steps[1:])}
    return _argmax_step(curve), curve


# ---------------------------------------------------------------------------------------------
# fast paths: closed-form per-head KL from a fused attention call (V = K)
# ---------------------------------------------------------------------------------------------
def attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                       chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """``(softmax(s·qkᵀ)·v, logsumexp(s·qkᵀ))`` for [heads, n, d] inputs, never [n, n] at once.

    Uses PyTorch's fused CPU flash-attention kernel when available (it returns the log-sum-exp);
    otherwise (or on other devices) computes the same in query chunks.
    """
    if q.device.type == "cpu" and q.dtype in (torch.float32, torch.float64, torch.bfloat16):
        op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
        if op is not None:
            try:
                out, lse = op(q[None], k[None], v[None], scale=scale)[:2]
                return out[0], lse[0].to(q.dtype)
            except (RuntimeError, TypeError):  # pragma: no cover - depends on the torch build
                pass
    outs, lses = [], []
    for c0 in range(0, q.shape[1], chunk):
        logits = scale * q[:, c0:c0 + chunk] @ k.transpose(-1, -2)
        lse = torch.logsumexp(logits, dim=-1)
        outs.append(torch.exp(logits - lse[..., None]) @ v)
        lses.append(lse)
    return torch.cat(outs, 1), torch.cat(lses, 1)


def abdiv_fast(qs: Sequence[torch.Tensor], ks: Sequence[torch.Tensor], grids: Sequence[Grid], out_grid: Grid, *,
               neighbourhood: int = 4, scales: Sequence[float | None] | None = None,
               divergence: str = "kl") -> torch.Tensor:
    """Mean over blocks and heads of the per-head ABDiv, each KL in closed form:

    KL(A_p ‖ A_q) = s·(q_p − q_q)·m_p − lse_p + lse_q,  m = softmax(s·QKᵀ)·K,  lse = row log-sum-exp.

    Each block's map lives on its own grid and is resized to ``out_grid`` (bilinear) before the
    mean. Only KL has this closed form.
    """
    if divergence != "kl":
        raise ValueError("mode='fast' exists only for divergence='kl' (the closed form); use mode='exact'")
    scales = list(scales) if scales is not None else [None] * len(qs)
    total = None
    for q, k, (h, w), sc in zip(qs, ks, grids, scales):
        s = _scale(q, sc)
        m, lse = attention_with_lse(q, k, k, s)                     # [heads, n, d], [heads, n]
        qg = q.reshape(q.shape[0], h, w, -1)
        mg = m.reshape(m.shape[0], h, w, -1)
        lg = lse.reshape(lse.shape[0], h, w)
        rows = torch.arange(h, device=q.device)
        cols = torch.arange(w, device=q.device)
        acc = torch.zeros(q.shape[0], h, w, dtype=q.dtype, device=q.device)
        for (ai, aj), (bi, bj) in _pairs(neighbourhood):
            ia = torch.clamp(rows + ai, 0, h - 1)[:, None]
            ja = torch.clamp(cols + aj, 0, w - 1)[None, :]
            ib = torch.clamp(rows + bi, 0, h - 1)[:, None]
            jb = torch.clamp(cols + bj, 0, w - 1)[None, :]
            qa, qb, ma = qg[:, ia, ja], qg[:, ib, jb], mg[:, ia, ja]
            acc += s * ((qa - qb) * ma).sum(-1) - lg[:, ia, ja] + lg[:, ib, jb]
        block = acc.mean(0)
        if (h, w) != tuple(out_grid):
            block = F.interpolate(block[None, None], size=tuple(out_grid), mode="bilinear", align_corners=False)[0, 0]
        total = block if total is None else total + block
    return total / len(qs)


def iep_fast(prev: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]],
             curr: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]], grids: Sequence[Grid], *,
             scales: Sequence[float | None] | None = None, divergence: str = "kl") -> float:
    """Mean over blocks, heads and query rows of KL(A'_p ‖ A_p) between consecutive steps, closed form:

    KL = s·q'_p·m'_p − lse'_p − s·q_p·c_p + lse_p,  m' = softmax(s·Q'K'ᵀ)·K',  c = softmax(s·Q'K'ᵀ)·K.
    """
    if divergence != "kl":
        raise ValueError("mode='fast' exists only for divergence='kl' (the closed form); use mode='exact'")
    (qp, kp), (qc, kc) = prev, curr
    scales = list(scales) if scales is not None else [None] * len(qp)
    vals = []
    for q1, k1, q2, k2, sc in zip(qp, kp, qc, kc, scales):
        s = _scale(q1, sc)
        m1, lse1 = attention_with_lse(q1, k1, k1, s)
        c, _ = attention_with_lse(q1, k1, k2, s)
        _, lse2 = attention_with_lse(q2, k2, k2, s)
        kl = s * (q1 * m1).sum(-1) - lse1 - s * (q2 * c).sum(-1) + lse2
        vals.append(kl.double().mean())
    return float(torch.stack(vals).mean())
