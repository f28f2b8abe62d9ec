"""One attention evaluation per block per step: the teacher's per-step SA, IEP point and ABDiv.

The definitions are those of :mod:`trace_edges.teacher.divergence` (aggregated SA, Eq. 1, Eq. 2);
this module only changes *how often* each block's attention is evaluated and what is kept:

* ``materialised`` (the aggregated map ``N x N x 4 B`` fits ``teacher.map_budget_mb``):
  :class:`SAAccumulator` adds every block into the step's map **while the denoiser runs** (the
  capture callback; the block's Q/K are dropped right after), one query-row chunk at a time with
  the heads summed in a ``chunk x N`` buffer, so each block's attention is evaluated exactly once
  (normalised by the forward's own log-sum-exp where the capture hands it over: no max / sum
  passes; lower-resolution blocks summed per grid at their own resolution, expanded once per step).
  ABDiv and the IEP point are read from the map, and the map (not Q/K) is kept for the next step's
  IEP. Peak extra memory: two maps (previous + current) + one block's working set (``work_mb`` + a
  ``rows x N`` head sum;
  a lower-resolution U-Net level adds its head-mean ``n_b x n_b`` and its key-upsampled rows
  ``n_b x N``).
* ``chunked`` (the map does not fit): :func:`chunked_step` walks the output grid in bands of query
  rows (+ a one-row halo), computing each band's SA rows from Q/K **one head at a time**, so peak
  extra memory is O(chunk * N) whatever the head count. The current step's rows are evaluated once
  for both ABDiv and the IEP point; the previous step's rows are recomputed from its Q/K (keeping
  them is what does not fit). Two evaluations per block per step instead of three.

Both equal the reference definitions (``abdiv(aggregate_attention(...))``, ``iep(...)``) to float
rounding; tests force each mode.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.nn.functional as F

from trace_edges.teacher.divergence import (DEFAULT_EPS, Grid, _pairs, _query_index, _scale, _shift_index,
                                            row_divergence, sa_rows)

log = logging.getLogger(__name__)

MAP_MODES = ("materialised", "chunked")

#: output rows per chunk when adding an upsampled (lower-resolution) block into the map
ACC_ROWS = 256
#: MiB of the per-chunk logits buffer ``heads x rows x n_b`` (CPU; one map of SD3.5-L at 1024 px)
WORK_MB = 64


SA_KERNELS = ("auto", "torch", "triton")


def resolve_kernel(kernel: str, device: torch.device | str) -> str:
    """``teacher.sa_kernel`` -> the path that runs: ``auto`` = triton where it can run (CUDA + Triton),
    else torch; ``triton`` where it cannot is an error naming the fix."""
    from trace_edges.teacher import sa_triton

    if kernel not in SA_KERNELS:
        raise ValueError(f"teacher.sa_kernel must be one of {SA_KERNELS}, got {kernel!r}")
    if kernel == "torch":
        return "torch"
    if not sa_triton.available(device):
        if kernel == "triton":
            raise ValueError(f"teacher.sa_kernel: triton needs a CUDA device and the triton package (device "
                             f"{torch.device(device)}, triton {'missing' if sa_triton.triton is None else 'present'}); "
                             "use sa_kernel: auto or torch")
        return "torch"
    ok, why = sa_triton.self_test(str(torch.device(device)))
    if ok:
        return "triton"
    if kernel == "triton":
        raise ValueError(f"teacher.sa_kernel: triton failed its self-test on {torch.device(device)} ({why}); "
                         "use sa_kernel: torch")
    log.warning("teacher.sa_kernel auto: the Triton kernel failed its self-test on %s (%s); using the PyTorch path",
                torch.device(device), why)
    return "torch"


def map_bytes(out_grid: Grid) -> int:
    """Bytes of one aggregated float32 map on ``out_grid``."""
    n = out_grid[0] * out_grid[1]
    return n * n * 4


def choose_map_mode(out_grid: Grid, budget_mb: float) -> str:
    """``materialised`` when one aggregated map (``N^2 x 4 B``) fits ``budget_mb`` MiB, else ``chunked``.
    (The run holds two maps: the previous step's and the current one.)"""
    return "materialised" if map_bytes(out_grid) <= float(budget_mb) * 2 ** 20 else "chunked"


# ---------------------------------------------------------------------------------------------
# materialised: accumulate while the forward runs
# ---------------------------------------------------------------------------------------------
class SAAccumulator:
    """The aggregated SA of one step, built block by block; keeps the previous step's map.

    >>> acc = SAAccumulator(grids, out_grid)            # doctest: +SKIP
    >>> acc.begin(); [acc.add(c) for c in captured]; sa = acc.end()
    """

    def __init__(self, grids: Sequence[Grid], out_grid: Grid, *, rows: int = ACC_ROWS, work_mb: float = WORK_MB,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, kernel: str = "torch"):
        if not grids:
            raise ValueError("no attention blocks given")
        self.grids = [tuple(g) for g in grids]
        self.out_grid = tuple(out_grid)
        self.n = out_grid[0] * out_grid[1]
        self.rows = max(1, int(rows))                            # output rows per chunk (upsampled blocks)
        self.work_bytes = max(1, int(work_mb * 2 ** 20))         # the all-heads logits buffer of one chunk
        self.device = torch.device(device)
        self.dtype = dtype
        self.kernel = resolve_kernel(kernel, self.device)
        if self.kernel == "triton" and dtype != torch.float32:
            raise ValueError("sa_kernel triton accumulates into a float32 map")
        self.prev: torch.Tensor | None = None
        self.cur: torch.Tensor | None = None
        self._spare: torch.Tensor | None = None
        self._added = 0
        self._qidx: dict[Grid, torch.Tensor] = {}
        self._colsums: dict[Grid, torch.Tensor] = {}
        self._levels: dict[Grid, torch.Tensor] = {}   # per lower-resolution grid: its blocks' rows

    def begin(self) -> None:
        """Start a step: the current map becomes the previous one (its buffer from two steps ago
        is reused: two maps are held at most)."""
        if self.cur is not None:
            self._spare, self.prev = self.prev, self.cur
        buf = self._spare if self._spare is not None else torch.empty(self.n, self.n, device=self.device,
                                                                          dtype=self.dtype)
        self._spare = None
        self.cur = buf.zero_()
        self._added = 0
        self._levels.clear()

    def add(self, c) -> None:
        """Add one block (a :class:`~trace_edges.teacher.capture.CapturedQK` or anything with
        ``q``, ``k``, ``scale``, ``grid``, optionally ``lse`` / ``lse_image_only``) into the current
        map: mean over heads, weight 1/B."""
        self.add_qk(c.q, c.k, tuple(c.grid), c.scale, lse=getattr(c, "lse", None),
                    lse_image_only=bool(getattr(c, "lse_image_only", False)))

    @torch.no_grad()
    def add_qk(self, q: torch.Tensor, k: torch.Tensor, grid: Grid, scale: float | None = None, *,
               lse: torch.Tensor | None = None, lse_image_only: bool = False) -> None:
        """``lse`` (``[heads, n_b]``): the forward's row log-sum-exp (``CapturedQK.lse``). With
        ``lse_image_only`` it is the softmax's own normaliser, so each head's probabilities are one
        product ``[s*q, -lse] . [k, 1]`` and one ``exp``: no max / sum / divide passes. Otherwise
        (joint attention: the forward's keys include text tokens) it stabilises the ``exp`` and the
        rows are normalised over the image keys (one sum, one divide; a chunk whose image mass
        underflows under it falls back to the max-subtracted softmax)."""
        if self.cur is None:
            raise RuntimeError("SAAccumulator.add before begin()")
        if self._added >= len(self.grids):
            raise RuntimeError(f"more blocks than the {len(self.grids)} declared")
        heads, n_b, _ = q.shape
        if n_b != grid[0] * grid[1]:
            raise ValueError(f"{n_b} tokens do not fill the grid {grid}")
        if self.kernel == "triton":   # computes its own log-sum-exp over the image keys
            self._add_triton(q, k, tuple(grid), scale)
            return
        q, k = q.to(self.device, self.dtype), k.to(self.device, self.dtype)
        if lse is not None and tuple(lse.shape) != (heads, n_b):
            raise ValueError(f"lse must be [{heads}, {n_b}], got {tuple(lse.shape)}")
        qs = q * _scale(q, scale)
        if lse is not None:   # the -lse bias rides in the product: one extra "dimension"
            qs = torch.cat([qs, -lse.to(self.device, self.dtype)[..., None]], -1)
            k = torch.cat([k, torch.ones(heads, n_b, 1, device=self.device, dtype=self.dtype)], -1)
        kt = k.transpose(1, 2).contiguous()                      # [heads, d(+1), n_b]
        w = 1.0 / (heads * len(self.grids))
        same = tuple(grid) == self.out_grid
        block = self.cur if same else torch.zeros(n_b, n_b, device=self.device, dtype=self.dtype)
        # all heads of a chunk of query rows in one batched product (few large ops: on a shared CPU
        # every op is a thread barrier), softmax in place in one reused buffer of ~work_mb
        rows = max(1, min(n_b, self.work_bytes // (heads * n_b * block.element_size())))
        work = torch.empty(heads * rows * n_b, device=self.device, dtype=self.dtype)
        hsum = torch.empty(rows, n_b, device=self.device, dtype=self.dtype)
        for r0 in range(0, n_b, rows):
            r1 = min(n_b, r0 + rows)
            lg = work[:heads * (r1 - r0) * n_b].view(heads, r1 - r0, n_b)
            torch.bmm(qs[:, r0:r1], kt, out=lg)
            if lse is None or not _softmax_from_lse(lg, lse_image_only):
                if lse is not None:                               # underflowed: start again
                    torch.bmm(qs[:, r0:r1], kt, out=lg)           # (the max cancels the -lse column)
                lg.sub_(lg.amax(-1, keepdim=True)).exp_()
                lg.div_(lg.sum(-1, keepdim=True))                 # softmax over the keys, per head
            hs = torch.sum(lg, 0, out=hsum[:r1 - r0])
            block[r0:r1].add_(hs, alpha=w if same else 1.0 / heads)
        del work, hsum
        if not same:
            self._add_level(block, tuple(grid))
        self._added += 1

    def _add_triton(self, q: torch.Tensor, k: torch.Tensor, grid: Grid, scale: float | None) -> None:
        """The same sum through the fused kernel, on the captured dtype (bf16 products are exact)."""
        from trace_edges.teacher.sa_triton import head_prob_sum_

        q, k = q.to(self.device), k.to(self.device)
        heads, n_b, _ = q.shape
        same = grid == self.out_grid
        block = self.cur if same else torch.zeros(n_b, n_b, device=self.device, dtype=self.dtype)
        head_prob_sum_(block, q, k, _scale(q, scale), 1.0 / (heads * len(self.grids)) if same else 1.0 / heads)
        if not same:
            self._add_level(block, grid)
        self._added += 1

    def _colsum(self, grid: Grid) -> torch.Tensor:
        """c[j] = total weight key j of ``grid`` receives in the bilinear upsampling to ``out_grid``,
        so the sum of an upsampled row ``a`` is ``a @ c`` (the upsampling is linear)."""
        if grid not in self._colsums:
            n_b = grid[0] * grid[1]
            eye = torch.eye(n_b, device=self.device, dtype=self.dtype).reshape(n_b, 1, *grid)
            up = F.interpolate(eye, size=self.out_grid, mode="bilinear", align_corners=False)
            self._colsums[grid] = up.sum((1, 2, 3))
        return self._colsums[grid]

    def _add_level(self, block: torch.Tensor, grid: Grid) -> None:
        """U_{b->max} keys bilinear + each row renormalised, queries nearest (as aggregate_attention),
        summed per grid at the block's own resolution: each row is divided by the sum it will have
        once upsampled (``block @ c``), so one key upsampling + query expansion per grid and step
        (:meth:`end`) equals the sum of the blocks' own."""
        block.div_((block @ self._colsum(grid))[:, None])
        if grid in self._levels:
            self._levels[grid].add_(block)
        else:
            self._levels[grid] = block

    def _expand_level(self, level: torch.Tensor, grid: Grid, weight: float) -> None:
        up = F.interpolate(level.reshape(-1, 1, *grid), size=self.out_grid, mode="bilinear",
                           align_corners=False).reshape(level.shape[0], self.n)     # [n_b, N]
        (h, w), (H, W) = grid, self.out_grid
        if H % h == 0 and W % w == 0:   # nearest query (i, j) -> (i // fh, j // fw): a broadcast view
            self.cur.view(h, H // h, w, W // w, self.n).add_(up.view(h, 1, w, 1, self.n), alpha=weight)
            return
        if grid not in self._qidx:
            self._qidx[grid] = _query_index(grid, self.out_grid, torch.arange(self.n, device=self.device))
        qi = self._qidx[grid]
        for r0 in range(0, self.n, self.rows):
            r1 = min(self.n, r0 + self.rows)
            self.cur[r0:r1].add_(up[qi[r0:r1]], alpha=weight)

    def end(self) -> torch.Tensor:
        """The step's aggregated map (every declared block must have been added)."""
        if self._added != len(self.grids):
            raise RuntimeError(f"{self._added} of {len(self.grids)} blocks were added this step")
        for grid, level in self._levels.items():
            self._expand_level(level, grid, 1.0 / len(self.grids))
        self._levels.clear()
        return self.cur


#: a chunk's image-key mass under the text-inclusive stabiliser below which the plain softmax is used
_MIN_MASS = 1e-20


def _softmax_from_lse(lg: torch.Tensor, image_only: bool) -> bool:
    """``lg = s*q.k - lse`` in place -> the softmax over its keys. False (``lg`` unusable, recompute)
    when the keys' mass under a text-inclusive ``lse`` underflows."""
    lg.exp_()
    if image_only:
        return True
    mass = lg.sum(-1, keepdim=True)
    if lg.device.type == "cpu" and not bool((mass > _MIN_MASS).all()):
        return False
    lg.div_(mass)
    return True


def abdiv_from_map(sa: torch.Tensor, grid: Grid, divergence: str = "kl", eps: float = DEFAULT_EPS,
                   neighbourhood: int = 4, chunk: int = 1024) -> torch.Tensor:
    """:func:`~trace_edges.teacher.divergence.abdiv` in bands of rows (no ``N x N`` temporaries)."""
    H, W = grid
    div = row_divergence(divergence)
    out = torch.zeros(H * W, dtype=sa.dtype, device=sa.device)
    band = max(1, chunk // W)
    pairs = _pairs(neighbourhood)
    for r0 in range(0, H, band):
        rows = torch.arange(r0, min(H, r0 + band), device=sa.device)
        sl = slice(r0 * W, (r0 + len(rows)) * W)
        for a, b in pairs:
            out[sl] += div(sa[_shift_index(H, W, *a, rows, sa.device)], sa[_shift_index(H, W, *b, rows, sa.device)],
                           eps)
    return out.reshape(H, W)


def iep_point_from_maps(prev: torch.Tensor, cur: torch.Tensor, divergence: str = "kl", eps: float = DEFAULT_EPS,
                        chunk: int = 1024) -> float:
    """D(SA_prev ‖ SA_cur) averaged over query rows (Eq. 1's point), in row chunks."""
    div = row_divergence(divergence)
    n = prev.shape[0]
    total = torch.zeros((), dtype=torch.float64, device=prev.device)
    for r0 in range(0, n, chunk):
        total += div(prev[r0:r0 + chunk], cur[r0:r0 + chunk], eps).sum().double()
    return float(total / n)


def step_from_maps(cur: torch.Tensor, grid: Grid, prev: torch.Tensor | None = None, divergence: str = "kl",
                   eps: float = DEFAULT_EPS, neighbourhood: int = 4,
                   chunk: int = 1024) -> tuple[torch.Tensor, float | None]:
    """ABDiv of ``cur`` and (with ``prev``) the IEP point D(prev ‖ cur): :func:`abdiv_from_map` and
    :func:`iep_point_from_maps` in one walk over bands of rows. For KL each row's ``log(p + eps)``
    is taken once (the definitions take it in every pair it appears in: 8 logs of the map per step
    with 4 neighbours, 1 here, + 1 of ``prev``); the sums are the definition's, difference first."""
    if divergence != "kl":
        return (abdiv_from_map(cur, grid, divergence, eps, neighbourhood, chunk),
                None if prev is None else iep_point_from_maps(prev, cur, divergence, eps, chunk))
    H, W = grid
    dev = cur.device
    out = torch.zeros(H * W, dtype=cur.dtype, device=dev)
    total = torch.zeros((), dtype=torch.float64, device=dev)
    band = max(1, chunk // W)
    pairs = _pairs(neighbourhood)
    for r0 in range(0, H, band):
        r1 = min(H, r0 + band)
        lo, hi = max(0, r0 - 1), min(H, r1 + 1)                   # band + one-row halo
        p = cur[lo * W:hi * W]
        logp = torch.log(p + eps)
        rows = torch.arange(r0, r1, device=dev)
        acc = out[r0 * W:r1 * W]
        for a, b in pairs:
            ia = _shift_index(H, W, *a, rows, dev) - lo * W
            ib = _shift_index(H, W, *b, rows, dev) - lo * W
            d = logp[ia].sub_(logp[ib])                            # log(p_a + eps) - log(p_b + eps)
            acc += _rowdot(p[ia], d)
        if prev is not None:
            pp = prev[r0 * W:r1 * W]
            d = torch.log(pp + eps).sub_(logp[(r0 - lo) * W:(r1 - lo) * W])
            total += _rowdot(pp, d).sum().double()
    return out.reshape(H, W), (None if prev is None else float(total / (H * W)))


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products ``(a * b).sum(-1)`` without the product's temporary."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


# ---------------------------------------------------------------------------------------------
# chunked: bands of rows, one head at a time
# ---------------------------------------------------------------------------------------------
def chunked_step(qs: Sequence[torch.Tensor], ks: Sequence[torch.Tensor], grids: Sequence[Grid], out_grid: Grid,
                 prev: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]] | None = None, *,
                 divergence: str = "kl", eps: float = DEFAULT_EPS, neighbourhood: int = 4,
                 scales: Sequence[float | None] | None = None, chunk: int = 1024) -> tuple[torch.Tensor, float | None]:
    """ABDiv of this step and (with ``prev = (qs, ks)`` of the previous step) the IEP point, in one
    walk over bands of query rows: this step's rows are evaluated once for both."""
    H, W = out_grid
    N = H * W
    div = row_divergence(divergence)
    device = qs[0].device
    out = torch.zeros(H, W, dtype=qs[0].dtype, device=device)
    band = max(1, chunk // max(W, 1) - 2)
    pairs = _pairs(neighbourhood)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for r0 in range(0, H, band):
        r1 = min(H, r0 + band)
        lo, hi = max(0, r0 - 1), min(H, r1 + 1)
        rows = sa_rows(qs, ks, grids, out_grid, torch.arange(lo * W, hi * W, device=device), scales,
                       headwise=True)
        band_rows = torch.arange(r0, r1, device=device)
        acc = torch.zeros((r1 - r0) * W, dtype=rows.dtype, device=device)
        for a, b in pairs:
            acc += div(rows[_shift_index(H, W, *a, band_rows, device) - lo * W],
                       rows[_shift_index(H, W, *b, band_rows, device) - lo * W], eps)
        out[r0:r1] = acc.reshape(r1 - r0, W)
        if prev is not None:
            own = rows[(r0 - lo) * W:(r1 - lo) * W]
            prev_rows = sa_rows(prev[0], prev[1], grids, out_grid, torch.arange(r0 * W, r1 * W, device=device),
                                scales, headwise=True)
            total += div(prev_rows, own, eps).sum().double()
    return out, (float(total / N) if prev is not None else None)


__all__ = ["ACC_ROWS", "WORK_MB", "MAP_MODES", "SA_KERNELS", "SAAccumulator", "abdiv_from_map", "choose_map_mode",
           "chunked_step", "iep_point_from_maps", "map_bytes", "resolve_kernel", "step_from_maps"]
