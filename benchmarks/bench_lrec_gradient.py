#!/usr/bin/env python3
"""‖∇_LoRA L_rec‖ vs ‖∇_LoRA Dice‖: does the reconstruction term reach the adapters? (issue 14.3)

On the embedded default's teacher backbone (the tiny random SD3 at 256 px unless ``--configfile``
says otherwise), for the first ``--images`` coco_mini images with the REAL teacher pseudo-labels
(``run_teacher`` + ``ternarize`` at the configured ``teacher`` block, as the teacher_labels stage
makes them), a student of the configured architecture is built and the L2 norm over all LoRA
parameters of the gradient of each weighted term is measured:

* ``t0``: Î decoded from the t = 0 pass (x̂_0 = x0 − σ(0)·v, the literal reading);
* ``sampled``: Î decoded from a pass at t ~ U{rec_t} on x_t = q(x_t | x0, noise), the default
  (``student.loss.rec_t``); ``--draws`` draws per image (deterministic per image and draw).

Both at the student's initial weights (peft: LoRA B = 0, so the gradient sits on B) and after
``--warm-steps`` training steps on the same images (B ≠ 0: the gradient then also reaches A).
Writes ``results/benchmarks/lrec_gradient.json``: per sample norms and ratios, and per setting the
median ratio ‖∇L_rec‖ / ‖∇Dice‖. Usage:

    python benchmarks/bench_lrec_gradient.py                  # embedded default, CPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import machine_info  # noqa: E402


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configfile", action="append", default=[], help="overlay(s) on config.yaml")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--draws", type=int, default=3, help="(t, noise) draws per image for the sampled formulation")
    p.add_argument("--warm-steps", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "results/benchmarks/lrec_gradient.json"))
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = _parse(argv)
    import numpy as np
    import torch

    from trace_edges.backbones.loader import load_configured_backbone
    from trace_edges.backbones.tiny import tiny_model_dir
    from trace_edges.config import load_config
    from trace_edges.data.images import load_rgb
    from trace_edges.io import write_json
    from trace_edges.student.gradients import lora_gradient_norms
    from trace_edges.student.loss import student_loss
    from trace_edges.student.model import StudentModel, seeded_reconstruction
    from trace_edges.teacher.labels import ternarize
    from trace_edges.teacher.trajectory import run_teacher, upsample_to_image

    torch.set_num_threads(args.threads)
    import yaml

    from trace_edges.config import deep_merge

    over: dict = {}
    for f in args.configfile:
        over = deep_merge(over, yaml.safe_load(Path(f).read_text()) or {})
    cfg = load_config(ROOT / "config.yaml", overrides=over)
    tp, sp = cfg["teacher"], cfg["student"]
    bspec = dict(tp["backbone"], device=args.device)
    if bspec.get("tiny") and not Path(bspec["model"]).exists():
        bspec["model"] = str(tiny_model_dir(bspec["family"], seed=cfg["seed"]))
    files = sorted((ROOT / cfg["data"]["root"] / cfg["data"]["images_dir"]).glob("*.jpg"))[: args.images]

    teacher_bb = load_configured_backbone(bspec)
    res = teacher_bb.resolution
    samples = []
    for f in files:
        rgb = load_rgb(f)
        r = run_teacher(teacher_bb, rgb, tp, seed=cfg["seed"])
        lab = upsample_to_image(ternarize(r.edge, float(tp["label_k"])), res, res, mode="nearest")
        samples.append((f.stem, rgb, torch.from_numpy(lab.round().astype(np.uint8))[None, None]))
    del teacher_bb

    model = StudentModel(load_configured_backbone(bspec), sp, seed=cfg["seed"])
    bb = model.backbone
    data = [(sid, bb.preprocess(rgb), bb.encode(rgb), lab) for sid, rgb, lab in samples]
    lp, t_range = sp["loss"], sp["loss"]["rec_t"]

    def measure(stage: str) -> list[dict]:
        rows = []
        for sid, image, latent, lab in data:
            rows.append({"stage": stage, "image": sid, "formulation": "t0",
                         **lora_gradient_norms(model, latent, image, lab, lp, None)})
            for d in range(args.draws):
                rec = seeded_reconstruction(t_range, latent.shape, f"{sid}/{d}")
                rows.append({"stage": stage, "image": sid, "formulation": "sampled", "draw": d,
                             **lora_gradient_norms(model, latent, image, lab, lp, rec)})
        return rows

    t0 = time.perf_counter()
    rows = measure("init")
    opt = torch.optim.AdamW([{"params": model.lora_parameters(), "lr": float(sp["train"]["lr_lora"])},
                             {"params": model.decoder_parameters(), "lr": float(sp["train"]["lr_decoder"])}])
    for step in range(args.warm_steps):
        sid, image, latent, lab = data[step % len(data)]
        opt.zero_grad(set_to_none=True)
        out = model(latent, reconstruct=True, rec=seeded_reconstruction(t_range, latent.shape, f"warm/{step}"))
        student_loss(out.edge, lab, lp, image=image, recon=out.recon).total.backward()
        opt.step()
    rows += measure(f"after_{args.warm_steps}_steps")

    summary = {}
    for stage in dict.fromkeys(r["stage"] for r in rows):
        for form in ("t0", "sampled"):
            sel = [r for r in rows if r["stage"] == stage and r["formulation"] == form]
            summary[f"{stage}/{form}"] = {
                "median_ratio": statistics.median(r["ratio"] for r in sel),
                "min_ratio": min(r["ratio"] for r in sel), "max_ratio": max(r["ratio"] for r in sel),
                "median_rec_grad": statistics.median(r["rec_grad"] for r in sel),
                "median_edge_grad": statistics.median(r["edge_grad"] for r in sel), "n": len(sel)}
    out = {"what": "L2 norm over all LoRA parameters of the gradient of w_rec*L_rec and of w_edge*Dice, per sample",
           "backbone": {k: bspec[k] for k in ("family", "model", "resolution")},
           "sigma_0": bb.sigma(0) if bb.kind == "flow" else None,
           "rec_t": list(t_range), "loss": dict(lp), "images": [s[0] for s in samples], "draws": args.draws,
           "warm_steps": args.warm_steps, "threads": args.threads, "wall_s": round(time.perf_counter() - t0, 1),
           "machine": {**machine_info(), "note": "shared 2-core machine (other jobs running)"},
           "summary": summary, "rows": rows}
    write_json(args.out, out)
    for k, v in summary.items():
        print(f"{k:28s} median ratio {v['median_ratio']:.3g} (min {v['min_ratio']:.3g}, max {v['max_ratio']:.3g}); "
              f"|grad rec| {v['median_rec_grad']:.3g}, |grad Dice| {v['median_edge_grad']:.3g}")
    return out


if __name__ == "__main__":
    main()
