"""How strongly each loss term pulls on the LoRA adapters: ‖∇_LoRA L_rec‖ vs ‖∇_LoRA Dice‖.

The paper's L_rec "anchors the tuned backbone to global image structure" (§3.4): that needs a
gradient on the adapters comparable to the edge term's. Read literally at t = 0, Î = D(x0 − σ(0)·v)
depends on the model only through σ(0) (SD3: 0.003), so the term cannot act; the default
formulation decodes x̂_0 from a pass at a sampled t > 0 (``student.loss.rec_t``). This module
measures both gradients for one sample (used by ``benchmarks/bench_lrec_gradient.py`` and a test).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from trace_edges.student.loss import dice_loss, reconstruction_loss
from trace_edges.student.model import StudentModel, edge_probability


def _grad_norm(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    sq = sum(float((g.detach().float() ** 2).sum()) for g in grads if g is not None)
    return sq ** 0.5


def lora_gradient_norms(model: StudentModel, latent: torch.Tensor, image: torch.Tensor, labels: torch.Tensor,
                        loss_params: Mapping[str, Any], rec: tuple[int, torch.Tensor] | None) -> dict[str, float]:
    """L2 norms over all LoRA parameters of ∇(w_rec·L_rec) and ∇(w_edge·Dice) for one sample, and the
    two loss values. ``rec`` = (t, noise) of the reconstruction (None: the literal t = 0 reading)."""
    params = model.lora_parameters()
    out = model(latent, reconstruct=True, rec=rec)
    l_rec = reconstruction_loss(image, out.recon)
    l_edge = dice_loss(edge_probability(out.edge), labels, float(loss_params["dice_smooth"]))
    g_rec = float(loss_params["rec_weight"]) * _grad_norm(l_rec, params)
    g_edge = float(loss_params["edge_weight"]) * _grad_norm(l_edge, params)
    return {"rec_grad": g_rec, "edge_grad": g_edge, "ratio": g_rec / g_edge if g_edge > 0 else float("inf"),
            "rec_loss": float(l_rec.detach()), "edge_loss": float(l_edge.detach()),
            "t": 0 if rec is None else int(rec[0])}


__all__ = ["lora_gradient_norms"]
