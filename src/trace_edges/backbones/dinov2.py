"""DINOv2 (a ViT image encoder): the paper's non-diffusion control of Table 5 (DINOv2-G).

Not a diffusion model: there is no noising trajectory, so there is no Instance Emergence Point.
As the paper describes its non-diffusion rows ("ABDiv applied directly to their SA", digest §2.1),
the teacher reads the encoder's self-attention of the clean image once and computes ABDiv on it:
:meth:`timesteps` is ``[0]`` whatever the stride, the IEP curve is empty and ``t* = 0``.

The adapter has the same surface the teacher uses on a diffusion :class:`~.base.Backbone`
(``encode``, ``predict``, ``attention_sites``, ``timesteps``, ``model_info``), with
``kind = "encoder"``:

* ``encode``: resize to ``resolution x resolution`` (PIL bicubic, aspect not kept, as for the
  diffusion backbones) and normalise with the ImageNet mean/std DINOv2 was trained with;
* ``predict(x, 0)``: one encoder forward (``Dinov2Model``; its embeddings interpolate the position
  encoding to any multiple of the patch size);
* ``attention_sites``: every layer's ``attention`` module, kind ``"vit"``. Transformers' ViTs have
  no attention-processor API: :func:`trace_edges.teacher.capture.capture_qk` records them through
  a PyTorch forward pre-hook (nothing is patched) that recomputes the layer's ``q_proj`` / ``k_proj``
  on the patch tokens; the CLS (and any register) tokens are dropped and each row is renormalised
  over the patch keys, as the image->image block of joint attention is (docs/backbones.md).

Loading: ``transformers.Dinov2Model.from_pretrained(model, revision=...)`` for a hub id (paper
preset: ``facebook/dinov2-giant``, 1.1B, patch 14) or a local directory (the embedded default's tiny
random model, :func:`trace_edges.backbones.tiny.build_tiny` ``("dinov2", ...)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import torch

from trace_edges.backbones.base import AttnSite, normalize_spec, resize_rgb
from trace_edges.errors import ConfigError
from trace_edges.hub import imagenet_pixels, snapshot_commit


class Dinov2Backbone:
    """The DINOv2 encoder behind the teacher's interface (no trajectory; see the module doc)."""

    family: ClassVar[str] = "dinov2"
    kind: ClassVar[str] = "encoder"
    #: 518 px = DINOv2's own high-resolution training size (37 x 37 patches of 14 px)
    native_resolution: ClassVar[int] = 518
    default_model: ClassVar[str] = "facebook/dinov2-giant"

    def __init__(self, spec: Mapping[str, Any], device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        self.spec = normalize_spec(spec, type(self))
        self.resolution: int = self.spec["resolution"]
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = self._load()
        self.model.to(self.device).eval().requires_grad_(False)
        self.patch_size = int(self.model.config.patch_size)
        if self.resolution % self.patch_size:
            raise ConfigError(f"backbone dinov2: resolution {self.resolution} is not a multiple of the "
                              f"patch size {self.patch_size}",
                              fix=f"use e.g. {max(1, round(self.resolution / self.patch_size)) * self.patch_size}")

    def _load(self):
        from transformers import Dinov2Model

        from trace_edges.hub import from_pretrained

        return from_pretrained(Dinov2Model, self.spec["model"], self.spec["revision"], what="Dinov2Model",
                               build_hint="build the tiny model with `trace-edges build-tiny --family dinov2 "
                                          "--out-dir DIR` (rule build_tiny_models)", dtype=self.dtype)

    # ------------------------------------------------------------------ the teacher's interface
    @property
    def grid(self) -> tuple[int, int]:
        n = self.resolution // self.patch_size
        return (n, n)

    def timesteps(self, stride: int) -> list[int]:
        """``[0]``: an encoder has no noising trajectory (``stride`` is ignored)."""
        return [0]

    def encode(self, rgb: np.ndarray) -> torch.Tensor:
        """``uint8 [H, W, 3]`` -> normalised pixels ``[1, 3, R, R]`` (the encoder's input)."""
        return imagenet_pixels(resize_rgb(rgb, self.resolution)).to(self.device, self.dtype)

    def predict(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """One encoder forward on the clean image (``t`` must be 0): the last hidden state."""
        if int(t) != 0:
            raise ConfigError(f"backbone dinov2 is an image encoder: it has no timestep {t}",
                              fix="use the step grid of timesteps() ([0])")
        with torch.no_grad():
            return self.model(pixel_values=x.to(self.device, self.dtype)).last_hidden_state

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        if int(t) != 0:
            raise ConfigError("backbone dinov2 has no noising trajectory", fix="use timesteps() ([0])")
        return x0

    def step(self, x: torch.Tensor, t_from: int, t_to: int, model_out: torch.Tensor) -> torch.Tensor:
        raise ConfigError("backbone dinov2 has no inversion trajectory", fix="use timesteps() ([0])")

    def attention_sites(self, latent_shape: tuple[int, ...] | None = None) -> list[AttnSite]:
        grid = self.grid if latent_shape is None else (int(latent_shape[-2]) // self.patch_size,
                                                       int(latent_shape[-1]) // self.patch_size)
        return [AttnSite(f"encoder.layer.{i}.attention", layer.attention, "vit", grid)
                for i, layer in enumerate(self.model.encoder.layer)]

    # ------------------------------------------------------------------ provenance
    def model_info(self) -> dict[str, Any]:
        import transformers

        cfg = self.model.config
        return {
            "family": self.family,
            "model": self.spec["model"],
            "revision": self.spec["revision"],
            "commit": snapshot_commit(getattr(cfg, "_name_or_path", None)),
            "local": Path(self.spec["model"]).exists(),
            "model_class": type(self.model).__name__,
            "dtype": str(self.dtype).replace("torch.", ""),
            "resolution": self.resolution,
            "kind": self.kind,
            "patch_size": self.patch_size,
            "hidden_size": int(cfg.hidden_size),
            "num_hidden_layers": int(cfg.num_hidden_layers),
            "transformers": transformers.__version__,
        }

    def __repr__(self) -> str:
        return f"Dinov2Backbone(model={self.spec['model']!r}, resolution={self.resolution})"
