"""Student training: seeded, resumable to the bit, validated every epoch.

Determinism and resume (CPU, same seed, same thread count):

* the data order of epoch ``e`` is a permutation drawn from ``numpy.random.default_rng([seed, e])``
  — a function of (seed, epoch) only, never of a generator's history;
* before optimizer step ``s`` the torch RNG is reseeded from ``SeedSequence([seed, s])`` (only LoRA
  dropout draws from it), so a step's randomness does not depend on what ran before it;
* a checkpoint (every ``checkpoint_every`` steps and after every epoch's validation) holds the
  LoRA + decoder weights, the AdamW state, the step, the finished epochs' metrics, the running
  sums of the current epoch and the RNG states, in ONE safetensors file written atomically (the
  state JSON lives in its metadata; ``last.json`` is a readable copy), so weights and counters
  can never disagree. Resuming from step ``s`` therefore replays exactly the updates an
  uninterrupted run makes after ``s``: the final weights are bit-identical (tested).

A checkpoint is reused only when its key (config, seed, data, code digest; built by the stage)
matches; otherwise training starts over and says so.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from trace_edges.data.images import load_rgb, read_png
from trace_edges.errors import DataError
from trace_edges.io import atomic_path, write_json, write_text
from trace_edges.student.loss import edge_counts, f1_from_counts, reconstruction_loss, student_loss
from trace_edges.student.model import StudentModel, draw_reconstruction, edge_probability, seeded_reconstruction
from trace_edges.teacher.labels import EDGE, IGNORE, INTERIOR

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "trace-student-checkpoint/1"
METRIC_COLUMNS = ("epoch", "step", "train_loss", "train_rec", "train_edge", "val_loss", "val_rec",
                  "val_edge", "val_dice", "val_f1", "val_ssim")
VAL_KEYS = ("val_loss", "val_rec", "val_edge", "val_dice", "val_f1", "val_ssim")


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
@dataclass
class Sample:
    """One training image at the training resolution R (all tensors precomputed once: the VAE is frozen)."""

    id: str
    image: torch.Tensor      # I  [1, 3, R, R] in [-1, 1]
    latent: torch.Tensor     # X_0 = E(I) [1, C, R/f, R/f]
    labels: torch.Tensor     # E  [1, 1, R, R] uint8 {0, 1, 255}


def load_labels(path: str | Path, size: int) -> torch.Tensor:
    """A teacher pseudo-label PNG (made at the training size ``size``²; any other size is resized
    nearest) -> uint8 [1, 1, size, size]."""
    arr = read_png(path, what="teacher pseudo-label PNG")
    fix = "rerun the teacher_labels stage (labels are uint8 PNGs with values 0, 1, 255)"
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise DataError(f"pseudo-labels must be a single-channel uint8 PNG, got {arr.dtype} {arr.shape}",
                        path=path, fix=fix)
    bad = set(np.unique(arr).tolist()) - {EDGE, INTERIOR, IGNORE}
    if bad:
        raise DataError(f"pseudo-labels hold values {sorted(bad)[:5]} outside {{0, 1, 255}}", path=path, fix=fix)
    t = torch.from_numpy(arr.astype(np.float32))[None, None]
    if tuple(arr.shape) != (size, size):
        t = F.interpolate(t, size=(size, size), mode="nearest")
    return t.round().to(torch.uint8)


def make_sample(model: StudentModel, image_id: Any, rgb: np.ndarray, labels_path: str | Path) -> Sample:
    bb = model.backbone
    return Sample(id=str(image_id), image=bb.preprocess(rgb).to(bb.device), latent=bb.encode(rgb),
                  labels=load_labels(labels_path, bb.resolution).to(bb.device))


#: precompute and keep every sample (on the CPU) when they fit in this many bytes; else rebuild
#: each one when it is used (same numbers: preprocessing and the VAE encoding are deterministic)
CACHE_BYTES = 1 << 30


class SampleSet(Sequence):
    """The samples of ``items = [(image id, image file, label PNG)]``, cached when small.

    At the embedded size (16 images at 256 px: ~14 MB) everything is computed once up front; at
    paper scale (thousands of images at 1024 px: ~15 MB each) a sample is rebuilt from disk each
    time it is used instead of holding tens of GB.
    """

    def __init__(self, model: StudentModel, items: Sequence[tuple[Any, str | Path, str | Path]]):
        self.model = model
        self.items = [(str(i), f, p) for i, f, p in items]
        bb = model.backbone
        r, f = bb.resolution, bb.vae_scale_factor
        per = r * r * (3 * 4 + 1) + bb.latent_channels * (r // f) ** 2 * 4
        self.cached = len(self.items) * per <= CACHE_BYTES
        self._cache: list[Sample] | None = None
        if self.cached:
            self._cache = [self._cpu(self._build(k)) for k in range(len(self.items))]

    def _build(self, k: int) -> Sample:
        image_id, file, labels = self.items[k]
        return make_sample(self.model, image_id, load_rgb(file), labels)

    @staticmethod
    def _cpu(s: Sample) -> Sample:
        return Sample(s.id, s.image.cpu(), s.latent.cpu(), s.labels.cpu())

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> Sample:
        if self._cache is None:
            return self._build(k)
        s, dev = self._cache[k], self.model.backbone.device
        return Sample(s.id, s.image.to(dev), s.latent.to(dev), s.labels.to(dev))

    def __iter__(self):
        return (self[k] for k in range(len(self)))


def split_train_val(ids: Sequence[Any], val_fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic held-out split: the ``round(val_fraction·n)`` ids (at least 1 when
    ``val_fraction > 0``, at most n − 1) with the smallest sha256(id). Independent of the seed and
    of the order of ``ids``; both lists keep the input order."""
    ids = [str(i) for i in ids]
    n = len(ids)
    n_val = 0
    if val_fraction > 0 and n >= 2:
        n_val = min(n - 1, max(1, int(round(val_fraction * n))))
    ranked = sorted(ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())
    val = set(ranked[:n_val])
    return [i for i in ids if i not in val], [i for i in ids if i in val]


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The order of the training samples in ``epoch``: a function of (seed, epoch) only."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n).tolist()


def step_seed(seed: int, step: int) -> int:
    """The torch seed set before optimizer step ``step``."""
    return int(np.random.SeedSequence([int(seed), int(step)]).generate_state(1)[0])


def snapshot_steps(fractions: Sequence[float], total: int) -> dict[int, list[float]]:
    """Optimizer step -> the training fractions it stands for (step = round(f·total); 0 = initial weights)."""
    out: dict[int, list[float]] = {}
    for f in fractions:
        out.setdefault(int(round(float(f) * total)), []).append(float(f))
    return dict(sorted(out.items()))


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------
def ssim(image: torch.Tensor, recon: torch.Tensor) -> float:
    """SSIM(I, Î) of two ``[1, 3, R, R]`` images in [-1, 1] (Î clamped), as the paper's L_rec ablation
    reports it: ``skimage.metrics.structural_similarity`` on [0, 1] RGB (data_range 1, 7×7 window,
    channels averaged)."""
    from skimage.metrics import structural_similarity

    a = ((image[0].detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    b = ((recon[0].detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    return float(structural_similarity(a, b, data_range=1.0, channel_axis=2))


@torch.no_grad()
def evaluate(model: StudentModel, samples: Sequence[Sample], loss_params: Mapping[str, Any]) -> dict[str, Any]:
    """Validation: the loss terms (L_rec always computed, for monitoring), the masked soft Dice
    coefficient (mean over images), the pixel F1 at 0.5 over labelled pixels (pooled) and
    SSIM(I, Î) (mean over images). Î uses one fixed reconstruction draw per image
    (:func:`seeded_reconstruction` of its id), the same in every epoch and every student."""
    if not samples:
        return {k: None for k in VAL_KEYS}
    was = model.decoder.training
    model.set_train(False)
    loss = rec = edge = sim = 0.0
    tp = fp = fn = 0
    for s in samples:
        draw = seeded_reconstruction(loss_params["rec_t"], s.latent.shape, s.id)
        out = model(s.latent, reconstruct=True, rec=draw)
        terms = student_loss(out.edge, s.labels, loss_params, image=s.image, recon=out.recon)
        loss += float(terms.total)
        edge += float(terms.edge)
        rec += float(reconstruction_loss(s.image, out.recon))
        sim += ssim(s.image, out.recon)
        a, b, c = edge_counts(edge_probability(out.edge), s.labels)
        tp, fp, fn = tp + a, fp + b, fn + c
    model.set_train(was)
    n = len(samples)
    return {"val_loss": loss / n, "val_rec": rec / n, "val_edge": edge / n, "val_dice": 1.0 - edge / n,
            "val_f1": f1_from_counts(tp, fp, fn), "val_ssim": sim / n}


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------
def save_weights(path: str | Path, tensors: Mapping[str, torch.Tensor],
                 metadata: Mapping[str, str] | None = None) -> None:
    """Write tensors as safetensors, atomically. Give at most one metadata key: safetensors does
    not preserve the order of several, so the bytes would differ between identical runs."""
    from safetensors.torch import save_file

    if metadata and len(metadata) > 1:
        raise ValueError("save_weights: pass a single metadata key (JSON-encode several values)")

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata=dict(metadata) if metadata else None)


def write_metrics_csv(path: str | Path, history: Sequence[Mapping[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(METRIC_COLUMNS)
    for row in history:
        w.writerow(["" if row.get(c) is None else (f"{row[c]:.6g}" if isinstance(row[c], float) else row[c])
                    for c in METRIC_COLUMNS])
    write_text(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------
def _zero_running() -> dict[str, float]:
    return {"n": 0, "loss": 0.0, "edge": 0.0, "rec": 0.0}


class Trainer:
    """Trains ``model`` on ``train`` samples, validating on ``val``; files under ``out_dir``::

        checkpoints/last.safetensors (+ last.json)   resumable state
        snapshots/step_<s>.safetensors, index.json   LoRA + decoder at the ``snapshots`` fractions
        metrics.csv                                  per-epoch train / validation metrics

    Computation only: the training-curve figure is drawn by the stage
    (:func:`trace_edges.report.student_figures.plot_training_curve`, from ``run()``'s ``history``).
    """

    def __init__(self, model: StudentModel, params: Mapping[str, Any], train: Sequence[Sample],
                 val: Sequence[Sample], out_dir: str | Path, *, seed: int, key: str):
        if not train:
            raise DataError("student: no training images (every labelled image went to validation?)",
                            fix="use more images or a smaller student.train.val_fraction")
        self.model, self.params = model, params
        self.train, self.val = train, val  # sequences (a SampleSet builds samples lazily at scale)
        self.out_dir = Path(out_dir)
        self.seed, self.key = int(seed), key
        tp = params["train"]
        self.epochs, self.bs = int(tp["epochs"]), int(tp["batch_size"])
        self.ckpt_every = int(tp["checkpoint_every"])
        self.spe = math.ceil(len(self.train) / self.bs)
        self.total = self.epochs * self.spe
        self.snaps = snapshot_steps(tp["snapshots"], self.total)
        self.loss_params = params["loss"]
        self.opt = torch.optim.AdamW(
            [{"params": model.lora_parameters(), "lr": float(tp["lr_lora"])},
             {"params": model.decoder_parameters(), "lr": float(tp["lr_decoder"])}],
            weight_decay=float(tp["weight_decay"]))
        self.ckpt_path = self.out_dir / "checkpoints" / "last.safetensors"
        self.snap_dir = self.out_dir / "snapshots"
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.running = _zero_running()
        self.resumed_from: int | None = None

    # ------------------------------------------------------------------ checkpoints
    def _state_meta(self, opt_scalars: Mapping[str, Any]) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "key": self.key, "step": self.step, "total_steps": self.total,
                "epochs_done": len(self.history), "history": self.history, "running": self.running,
                "optim_scalars": opt_scalars}

    def save_checkpoint(self) -> None:
        tensors = self.model.student_state()
        scalars: dict[str, dict[str, Any]] = {}
        for idx, st in self.opt.state_dict()["state"].items():
            for k, v in st.items():
                if torch.is_tensor(v):
                    tensors[f"optim.{idx}.{k}"] = v.detach().to("cpu", copy=True).contiguous()
                else:
                    scalars.setdefault(str(idx), {})[k] = v
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
        meta = self._state_meta(scalars)
        save_weights(self.ckpt_path, tensors, {"state": json.dumps(meta)})
        write_json(self.ckpt_path.with_suffix(".json"), meta)  # readable copy; the safetensors is authoritative

    def load_checkpoint(self) -> bool:
        """Resume from ``checkpoints/last.safetensors`` if it exists and its key matches."""
        if not self.ckpt_path.is_file():
            return False
        from safetensors import safe_open

        try:
            with safe_open(str(self.ckpt_path), framework="pt") as f:
                meta = json.loads((f.metadata() or {})["state"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # truncated / foreign file
            log.warning("student: checkpoint %s is unreadable (%s); training starts over", self.ckpt_path, exc)
            return False
        if meta.get("format") != CHECKPOINT_FORMAT or meta.get("key") != self.key:
            log.warning("student: checkpoint %s was made with another config / data / code (key %s, now %s); "
                        "training starts over", self.ckpt_path, str(meta.get("key"))[:12], self.key[:12])
            return False
        self.model.load_student_state(tensors, where=f"checkpoint {self.ckpt_path}")
        sd = self.opt.state_dict()
        state: dict[int, dict[str, Any]] = {}
        for name, t in tensors.items():
            if name.startswith("optim."):
                _, idx, k = name.split(".", 2)
                state.setdefault(int(idx), {})[k] = t
        for idx, d in meta["optim_scalars"].items():
            state.setdefault(int(idx), {}).update(d)
        sd["state"] = state
        self.opt.load_state_dict(sd)
        torch.set_rng_state(tensors["rng.torch"])
        if torch.cuda.is_available():
            states = [tensors[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count()) if f"rng.cuda.{i}" in tensors]
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)
        self.step = int(meta["step"])
        self.history = list(meta["history"])
        self.running = dict(meta["running"])
        self.resumed_from = self.step
        log.info("student: resumed from %s at step %d/%d (%d epochs done)", self.ckpt_path, self.step,
                 self.total, len(self.history))
        return True

    # ------------------------------------------------------------------ snapshots
    def _snapshot_file(self, step: int) -> Path:
        return self.snap_dir / f"step_{step:06d}.safetensors"

    def _clear_snapshots(self) -> None:
        if self.snap_dir.is_dir():
            for p in self.snap_dir.glob("step_*.safetensors"):
                p.unlink()
            (self.snap_dir / "index.json").unlink(missing_ok=True)

    def _snapshot(self) -> None:
        # one metadata key: safetensors does not keep the order of several (bytes would vary)
        save_weights(self._snapshot_file(self.step), self.model.student_state(),
                     {"snapshot": json.dumps({"fractions": self.snaps[self.step], "step": self.step})})

    def snapshot_index(self) -> list[dict[str, Any]]:
        return [{"fraction": f, "step": s, "file": self._snapshot_file(s).name}
                for s, fs in self.snaps.items() for f in fs]

    # ------------------------------------------------------------------ steps
    def _train_step(self, batch: Sequence[int]) -> None:
        torch.manual_seed(step_seed(self.seed, self.step))
        self.opt.zero_grad(set_to_none=True)
        reconstruct = float(self.loss_params["rec_weight"]) > 0
        for i in batch:
            s = self.train[i]
            # (t, noise) of L_rec from the step-seeded RNG: a function of (seed, step, position in batch)
            rec = draw_reconstruction(self.loss_params["rec_t"], s.latent.shape) if reconstruct else None
            out = self.model(s.latent, reconstruct=reconstruct, rec=rec)
            terms = student_loss(out.edge, s.labels, self.loss_params, image=s.image, recon=out.recon)
            (terms.total / len(batch)).backward()
            vals = terms.floats()
            self.running["n"] += 1
            self.running["loss"] += vals["loss"]
            self.running["edge"] += vals["edge"]
            if vals["rec"] is not None:
                self.running["rec"] += vals["rec"]
        self.opt.step()
        self.step += 1

    def _epoch_row(self, epoch: int, val: Mapping[str, Any]) -> dict[str, Any]:
        n = max(1, self.running["n"])
        rec_on = float(self.loss_params["rec_weight"]) > 0
        return {"epoch": epoch + 1, "step": self.step, "train_loss": self.running["loss"] / n,
                "train_rec": self.running["rec"] / n if rec_on else None,
                "train_edge": self.running["edge"] / n, **val}

    def run(self, callback: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Train to the end (resuming when possible). ``callback(step)`` runs after every optimizer
        step (and its snapshot / checkpoint); an exception raised there interrupts training as a
        kill would."""
        # Subnormal floats make some CPU kernels (convolutions) an order of magnitude slower
        # and do appear in training (a 1-layer decoder went from 3 s to 55 s per epoch); flushing
        # them to zero is deterministic, so resume stays bit-exact. Reset to PyTorch's default
        # (off) at the end.
        torch.set_flush_denormal(True)
        try:
            return self._run(callback)
        finally:
            torch.set_flush_denormal(False)

    def _run(self, callback: Callable[[int], None] | None) -> dict[str, Any]:
        from tqdm import tqdm

        if not self.load_checkpoint():
            self._clear_snapshots()
        if self.step == 0 and 0 in self.snaps:
            self._snapshot()
        bar = tqdm(total=self.total, initial=self.step, desc="student train", unit="step", file=sys.stderr,
                   disable=bool(os.environ.get("TRACE_EDGES_NO_PROGRESS")), dynamic_ncols=True, mininterval=1.0)
        t0 = time.perf_counter()
        try:
            for epoch in range(self.epochs):
                if len(self.history) > epoch:
                    continue
                order = epoch_order(len(self.train), self.seed, epoch)
                batches = [order[i:i + self.bs] for i in range(0, len(order), self.bs)]
                self.model.set_train(True)
                for b in range(self.step - epoch * self.spe, self.spe):
                    self._train_step(batches[b])
                    if self.step in self.snaps:
                        self._snapshot()
                    if self.step % self.ckpt_every == 0:
                        self.save_checkpoint()
                    bar.update(1)
                    bar.set_postfix(loss=f"{self.running['loss'] / max(1, self.running['n']):.4f}", refresh=False)
                    if callback is not None:
                        callback(self.step)
                self.model.set_train(False)
                row = self._epoch_row(epoch, evaluate(self.model, self.val, self.loss_params))
                self.history.append(row)
                self.running = _zero_running()
                write_metrics_csv(self.out_dir / "metrics.csv", self.history)
                self.save_checkpoint()
                log.info("student epoch %d/%d (step %d): train loss %.4f | val loss %s, masked Dice %s, F1 %s",
                         epoch + 1, self.epochs, self.step, row["train_loss"], _fmt(row["val_loss"]),
                         _fmt(row["val_dice"]), _fmt(row["val_f1"]))
        finally:
            bar.close()
        write_metrics_csv(self.out_dir / "metrics.csv", self.history)
        write_json(self.snap_dir / "index.json", {"total_steps": self.total, "snapshots": self.snapshot_index()})
        log.info("student: %d steps in %.1f s (this run%s)", self.total, time.perf_counter() - t0,
                 "" if self.resumed_from is None else f", resumed at step {self.resumed_from}")
        return {"steps": self.step, "steps_per_epoch": self.spe, "history": self.history,
                "final": self.history[-1] if self.history else {}, "resumed_from": self.resumed_from}


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}"


__all__ = ["CACHE_BYTES", "CHECKPOINT_FORMAT", "METRIC_COLUMNS", "Sample", "SampleSet", "Trainer", "VAL_KEYS",
           "epoch_order", "evaluate", "load_labels", "ssim",
           "make_sample", "snapshot_steps", "split_train_val", "step_seed",
           "write_metrics_csv"]
