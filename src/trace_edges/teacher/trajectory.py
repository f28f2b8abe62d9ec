"""The TRACE teacher on one image: walk the trajectory, compute IEP (Eq. 1) and ABDiv (Eq. 2).

For a clean latent X_0 = E(I) and the step grid τ_0 = 0 < τ_1 < … < τ_N (stride 100 on the
1000-step scale: 0, 99, 199, …, 999), the denoiser runs once per step with the empty prompt,
under :func:`~trace_edges.teacher.capture.capture_qk`. From that step's per-block Q/K:

* the ABDiv map is computed at *every* step (maps are tiny: one value per token), and
* the IEP divergence D(SA(τ_{k-1}) ‖ SA(τ_k)) against the previous step.

``mode: exact`` evaluates each block's attention once per step (:mod:`trace_edges.teacher.sa_map`):
when the aggregated map fits ``teacher.map_budget_mb`` it is accumulated while the denoiser runs
and kept (not Q/K) for the next step's IEP point; otherwise the step's Q/K are kept and walked in
bands of rows, one head at a time (the previous step's rows are recomputed from its Q/K).

t* = argmax_k D is picked at the end, and the ABDiv map at t* is the teacher's edge map.

Trajectory (paper §2.3 is ambiguous, both offered): ``inversion`` (default) steps X deterministically
with the model's own output — DDIM inversion for ε/v models, Euler inversion of the flow ODE for
SD3/FLUX; ``noise`` draws X_τ ~ q(X_τ | X_0) with one seeded noise tensor shared by all steps.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

from trace_edges.teacher.capture import capture_qk
from trace_edges.teacher.divergence import abdiv_from_qk, iep_divergence_from_qk, iep_step
from trace_edges.teacher.sa_map import ACC_ROWS, WORK_MB, SAAccumulator, choose_map_mode, chunked_step, step_from_maps
from trace_edges.teacher.labels import normalize_unit

log = logging.getLogger(__name__)

TRAJECTORIES = ("inversion", "noise")
#: teacher.map_budget_mb's default (the schema's): materialise the aggregated map up to 1 GiB
DEFAULT_MAP_BUDGET_MB = 1024


@dataclass
class TeacherResult:
    """Everything the teacher computes for one image (all on the token grid)."""

    steps: list[int]
    grid: tuple[int, int]
    abdiv: np.ndarray                      # float32 [len(steps), H, W], ABDiv at every step
    divergence_curve: dict[int, float]     # τ_k -> D(SA(τ_{k-1}) ‖ SA(τ_k)), k ≥ 1 (D: params["divergence"])
    t_star: int
    info: dict[str, Any] = field(default_factory=dict)

    def abdiv_at(self, t: int) -> np.ndarray:
        return self.abdiv[self.steps.index(int(t))]

    @property
    def edge(self) -> np.ndarray:
        """ABDiv at the Instance Emergence Point: the teacher's edge map (token grid)."""
        return self.abdiv_at(self.t_star)


def _largest_grid(grids: list[tuple[int, int]]) -> tuple[int, int]:
    return max(grids, key=lambda g: (g[0] * g[1], g))


def run_teacher(backbone: Any, rgb: np.ndarray, params: Mapping[str, Any], *,
                seed: int = 0, on_step: Callable[..., None] | None = None) -> TeacherResult:
    """Run the teacher on one image. ``params`` is the validated ``teacher`` config block
    (``trajectory``, ``stride``, ``mode``, ``divergence``, ``neighbourhood``, ``chunk``, ``eps``).

    ``on_step(t, qs, ks, grids, out_grid, scales)``, if given, sees every step's captured per-site
    Q/K (float32) before they are dropped (the teacher figures materialise SA from them).
    An image encoder (``backbone.kind == "encoder"``, e.g. DINOv2) has the one step ``[0]``: ABDiv
    on its self-attention, no IEP curve, ``t* = 0``."""
    trajectory = params["trajectory"]
    if trajectory not in TRAJECTORIES:
        raise ValueError(f"trajectory must be one of {TRAJECTORIES}, got {trajectory!r}")
    mode, divergence = params["mode"], params["divergence"]
    kw = dict(divergence=divergence, eps=params["eps"], chunk=params["chunk"])
    steps = backbone.timesteps(params["stride"])

    x0 = backbone.encode(rgb)
    noise = None
    if trajectory == "noise":
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        noise = torch.randn(x0.shape, generator=gen, dtype=torch.float32).to(device=x0.device, dtype=x0.dtype)

    maps: list[np.ndarray] = []
    curve: dict[int, float] = {}
    sites = backbone.attention_sites()
    grids = [tuple(site.grid) for site in sites]
    out_grid = _largest_grid(grids)
    map_mode = choose_map_mode(out_grid, params.get("map_budget_mb", DEFAULT_MAP_BUDGET_MB))
    acc = None
    if mode == "exact" and map_mode == "materialised":
        # every block is added into the step's map while the forward runs; its Q/K are then dropped
        # GPU: larger chunks (fewer kernel launches; memory is not the constraint there)
        cpu = x0.device.type == "cpu"
        acc = SAAccumulator(grids, out_grid, device=x0.device, rows=ACC_ROWS if cpu else 4096,
                            work_mb=WORK_MB if cpu else 1024, kernel=params.get("sa_kernel", "auto"))
    store = acc is None or on_step is not None
    prev = None
    x = x0
    t0 = time.perf_counter()
    # lse: the forward's own row log-sum-exp normalises the accumulated softmax (CPU; sa_map.py)
    with torch.no_grad(), capture_qk(backbone, sites, callback=None if acc is None else acc.add,
                                     store=store, lse=acc is not None) as cap:
        for k, t in enumerate(steps):
            if trajectory == "noise":
                x = x0 if t == 0 else backbone.add_noise(x0, noise, t)
            if acc is not None:
                acc.begin()
            out = backbone.predict(x, t)
            captured = cap.pop()
            qs = [c.q.float() for c in captured]
            ks = [c.k.float() for c in captured]
            scales = [c.scale for c in captured]
            if acc is not None:
                sa = acc.end()
                abd, point = step_from_maps(sa, out_grid, acc.prev, neighbourhood=params["neighbourhood"], **kw)
                if point is not None:
                    curve[t] = point
            elif mode == "exact":
                abd, point = chunked_step(qs, ks, grids, out_grid, prev, neighbourhood=params["neighbourhood"],
                                          scales=scales, **kw)
                if point is not None:
                    curve[t] = point
                prev = (qs, ks)
            else:  # fast: the closed form from Q/K (a different quantity; divergence.py)
                abd = abdiv_from_qk(qs, ks, grids, out_grid, mode, neighbourhood=params["neighbourhood"],
                                    scales=scales, **kw)
                if prev is not None:
                    curve[t] = iep_divergence_from_qk(prev, (qs, ks), grids, out_grid, mode, scales=scales, **kw)
                prev = (qs, ks)
            maps.append(abd.float().cpu().numpy())
            if on_step is not None:
                on_step(t, qs, ks, grids, out_grid, scales)
            if trajectory == "inversion" and k + 1 < len(steps):
                x = backbone.step(x, t, steps[k + 1], out)
            del out, captured, qs, ks
    walk_s = time.perf_counter() - t0
    t_star = iep_step(curve, steps)
    log.debug("IEP curve %s -> t* = %d", curve, t_star)
    return TeacherResult(steps=list(steps), grid=_largest_grid(grids), abdiv=np.stack(maps), divergence_curve=curve,
                         t_star=t_star, info={"blocks": len(grids), "grids": sorted(set(grids)),
                                              "map_mode": map_mode if mode == "exact" else "fast",
                                              "sa_kernel": None if acc is None else acc.kernel, "walk_s": walk_s})


def upsample_to_image(grid_map: np.ndarray, height: int, width: int, *, mode: str = "bilinear") -> np.ndarray:
    """A token-grid map resized to the image's H×W (undoing the square resize of the input)."""
    t = torch.as_tensor(np.asarray(grid_map, dtype=np.float32))[None, None]
    if mode == "nearest":
        out = torch.nn.functional.interpolate(t, size=(height, width), mode="nearest")
    else:
        out = torch.nn.functional.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


def teacher_edge_map(grid_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """A token-grid ABDiv map -> the edge-source map: bilinear to H×W, then min-max to [0, 1]."""
    return normalize_unit(upsample_to_image(grid_map, height, width))
