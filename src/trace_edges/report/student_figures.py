"""The student's figures: its training curve (``student/<family>/training_curve.png``, drawn by the
student stage) and the paper Fig. 4 analogue, the student's edges over training beside the teacher's.

Fig. 4: one row per image: image | GT instance edges | teacher (ABDiv at t*) | student at each training
snapshot (e.g. 0 %, 20 %, 40 %, 100 %). Snapshots are the LoRA + decoder weights saved during
training (``student/<family>/snapshots/``), loaded into the same model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage

from trace_edges.data.manifest import load_manifest
from trace_edges.data.images import load_rgb, read_png
from trace_edges.edges.store import EdgeSet
from trace_edges.io import read_json
from trace_edges.report import style


def student_strip_figure(manifest_path: str | Path, teacher_edges: str | Path, model_path: str | Path,
                         out_png: str | Path, out_pdf: str | Path, *, image_ids: Sequence[int] = (),
                         dpi: int = 150, n_images: int = 3, null_prompt: str | Path | None = None) -> None:
    import matplotlib.pyplot as plt

    from trace_edges.student.infer import load_student, load_weights, predict_edge, read_model_json

    style.apply()
    manifest = load_manifest(manifest_path)
    recs = {r["id"]: r for r in manifest["images"]}
    ids = [i for i in image_ids if i in recs][:n_images] or sorted(recs)[:n_images]
    teacher = EdgeSet(teacher_edges)
    meta = read_model_json(model_path)
    snap_dir = Path(model_path).parent / "snapshots"
    index = read_json(snap_dir / "index.json", what="student snapshot index")
    snaps = sorted(index["snapshots"], key=lambda s: s["fraction"])
    model = load_student(model_path, null_prompt=null_prompt)
    maps: dict[float, dict[int, np.ndarray]] = {}
    for snap in snaps:
        load_weights(model, snap_dir / snap["file"])
        maps[snap["fraction"]] = {i: predict_edge(model, load_rgb(recs[i]["file"])) for i in ids}
    has_gt = manifest["gt"] is not None  # an images-only dataset has no GT column
    cols = ["image"] + ["GT instance\nedges"] * has_gt + ["teacher\n(ABDiv at t*)"] + \
        [f"student {100 * s['fraction']:.0f}%\n(step {s['step']})" for s in snaps]
    fig, axes = plt.subplots(len(ids), len(cols), figsize=(1.15 * len(cols), 1.0 * len(ids) + 0.4), squeeze=False)
    for r, iid in enumerate(ids):
        rec = recs[iid]
        gt = [ndimage.binary_dilation(read_png(rec["edge_gt"]) > 0, iterations=1)] if has_gt else []
        panels = [load_rgb(rec["file"]), *gt, teacher.load(iid)] + [maps[s["fraction"]][iid] for s in snaps]
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c])
            if c == 0:
                ax.set_ylabel(str(iid))
    tiny = meta.get("backbone", {}).get("tiny")
    note = " — tiny random model: machinery check, not the paper's result" if tiny else ""
    fig.suptitle(f"Student edges over training vs the teacher (paper Fig. 4 analogue){note}", fontsize=7)
    style.save(fig, out_png, out_pdf, dpi=dpi)


def plot_training_curve(path: str | Path, history: Sequence[Mapping[str, Any]], title: str = "") -> None:
    """The student's per-epoch losses (left) and validation Dice / F1 / SSIM(I, Î) (right), one PNG.

    ``history``: the rows of ``metrics.csv`` (``Trainer.run()["history"]``); missing values are skipped.
    """
    import matplotlib.pyplot as plt

    style.apply()

    ep = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(5.0, 1.9))

    def line(ax, key, label, **kw):
        vals = [np.nan if r.get(key) is None else r[key] for r in history]
        if not all(np.isnan(vals)):
            ax.plot(ep, vals, marker="o", ms=2, label=label, **kw)

    line(axes[0], "train_loss", "train L")
    line(axes[0], "val_loss", "val L")
    line(axes[0], "train_edge", "train Dice loss", ls="--")
    line(axes[0], "val_rec", "val L_rec", ls=":")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss")
    axes[0].legend(frameon=False)
    line(axes[1], "val_dice", "val masked Dice")
    line(axes[1], "val_f1", "val pixel F1@0.5")
    line(axes[1], "val_ssim", "val SSIM(I, Î)", ls=":")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylim(0, 1)
    axes[1].legend(frameon=False)
    if title:
        fig.suptitle(title)
    style.save(fig, path)
