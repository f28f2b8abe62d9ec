"""The student's loss (paper §3.4): L = w_rec·‖I − Î‖² + w_edge·Dice(E, Ê), ignore pixels excluded.

* ``E`` are the teacher's ternary pseudo-labels: 1 edge, 0 interior, 255 ignore (the uncertain
  band μ − σ ≤ ABDiv ≤ μ + σ). Ignore pixels are removed from **every** sum of the Dice loss,
  so neither their prediction nor their label has any effect (and they get no gradient).
* Dice on the prediction P = (Ê + 1)/2 ∈ [0, 1] (soft, per image, then averaged over the batch):
  Dice = 1 − (2 Σ_m P·E + s) / (Σ_m P + Σ_m E + s), m = labelled pixels, s = ``dice_smooth``.
  An image without labelled pixels contributes 0.
* L_rec = mean over pixels and channels of (I − Î)², I and Î in [-1, 1] at the training
  resolution. ``rec_weight = 0`` drops the term (and the VAE decode) entirely: the paper's ablation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from trace_edges.student.model import edge_probability
from trace_edges.teacher.labels import EDGE, IGNORE, INTERIOR


@dataclass
class LossTerms:
    total: torch.Tensor
    edge: torch.Tensor                  # the Dice loss (unweighted)
    rec: torch.Tensor | None            # the reconstruction MSE (unweighted); None when dropped

    def floats(self) -> dict[str, float | None]:
        return {"loss": float(self.total.detach()), "edge": float(self.edge.detach()),
                "rec": None if self.rec is None else float(self.rec.detach())}


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1) if x.ndim >= 3 else x.reshape(1, -1)


def dice_loss(prob: torch.Tensor, labels: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Masked soft Dice loss, mean over the batch.

    ``prob``: predictions in [0, 1], ``[B, 1, H, W]`` / ``[B, H, W]`` (or one ``[H, W]`` map);
    ``labels``: the same spatial shape, values {0 interior, 1 edge, 255 ignore}.
    """
    p, lab = _flat(prob), _flat(labels).to(prob.device)
    if p.shape != lab.shape:
        raise ValueError(f"prediction {tuple(prob.shape)} and labels {tuple(labels.shape)} differ in shape")
    valid = (lab != IGNORE).to(p.dtype)
    target = (lab == EDGE).to(p.dtype)
    pv = p * valid
    inter = (pv * target).sum(1)
    denom = pv.sum(1) + target.sum(1)
    num, den = 2.0 * inter + smooth, denom + smooth
    dice = torch.where(den > 0, num / den.clamp_min(torch.finfo(p.dtype).tiny), torch.ones_like(den))
    return (1.0 - dice).mean()


def reconstruction_loss(image: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """mean((I − Î)²)."""
    return torch.mean((image.to(recon.device, recon.dtype) - recon) ** 2)


def student_loss(edge: torch.Tensor, labels: torch.Tensor, loss_params: Mapping[str, Any], *,
                 image: torch.Tensor | None = None, recon: torch.Tensor | None = None) -> LossTerms:
    """The total loss from Ê ∈ [-1, 1] (``edge``), the pseudo-labels and, when ``rec_weight > 0``,
    the image I and its reconstruction Î."""
    l_edge = dice_loss(edge_probability(edge), labels, float(loss_params["dice_smooth"]))
    total = float(loss_params["edge_weight"]) * l_edge
    w_rec = float(loss_params["rec_weight"])
    l_rec = None
    if w_rec > 0:
        if image is None or recon is None:
            raise ValueError("rec_weight > 0 needs the image and its reconstruction")
        l_rec = reconstruction_loss(image, recon)
        total = w_rec * l_rec + total
    return LossTerms(total=total, edge=l_edge, rec=l_rec)


def edge_counts(prob: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5) -> tuple[int, int, int]:
    """(TP, FP, FN) of ``prob > threshold`` against the edge labels, over labelled pixels only."""
    p, lab = _flat(prob).detach(), _flat(labels).to(prob.device)
    valid = lab != IGNORE
    pred = (p > threshold) & valid
    edge = (lab == EDGE) & valid
    return int((pred & edge).sum()), int((pred & ~edge).sum()), int((~pred & edge).sum())


def f1_from_counts(tp: int, fp: int, fn: int) -> float:
    """2TP / (2TP + FP + FN); 1.0 when there is nothing to find and nothing was predicted."""
    den = 2 * tp + fp + fn
    return 1.0 if den == 0 else 2 * tp / den


__all__ = ["EDGE", "IGNORE", "INTERIOR", "LossTerms", "dice_loss", "edge_counts", "f1_from_counts",
           "reconstruction_loss", "student_loss"]
