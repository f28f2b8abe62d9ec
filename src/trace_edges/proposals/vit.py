"""The DINO ViT behind MaskCut: loading, input preparation, last-layer key features, tiny build.

* :func:`load_vit` -- ``transformers.ViTModel.from_pretrained(model, revision=...)`` for a hub id
  (paper preset: ``facebook/dino-vitb8``, DINO ViT-B/8 as in CutLER) or a local directory (the
  embedded default's tiny random ViT), cached per process;
* :func:`prepare_image` -- resize to ``resolution x resolution`` (aspect not kept, as CutLER's
  fixed-size input; Lanczos) and normalise with the ImageNet mean/std DINO was trained with;
* :func:`key_features` -- the keys of the LAST attention layer for every patch token (all heads
  concatenated, CLS dropped): a forward hook on that layer's key projection records its output
  during one forward pass (``interpolate_pos_encoding=True`` for resolutions other than the
  checkpoint's); the hook is removed on exit;
* :func:`build_tiny_vit` -- a ViT of the same class with tiny widths and random weights from a
  seed, saved with ``save_pretrained`` so it loads through the same ``from_pretrained`` path.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trace_edges.hub import IMAGENET_MEAN, IMAGENET_STD, imagenet_pixels, snapshot_commit

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TINY_VIT", "load_vit", "prepare_image", "key_features",
           "key_projection", "build_tiny_vit", "vit_info", "resolve_device"]


#: the tiny ViT's architecture: DINO ViT-B/8's layout (patch 8, pre-norm, qkv bias) at toy widths
TINY_VIT: dict[str, Any] = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, patch_size=8, image_size=224, qkv_bias=True,
                                hidden_act="gelu", layer_norm_eps=1e-6)

# names the key projection has had in transformers' ViT: v5 `k_proj`, v4 `attention.attention.key`
_KEY_NAMES = ("k_proj", "key")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from trace_edges.errors import ConfigError

        raise ConfigError("proposals.maskcut.device is 'cuda' but no CUDA device is available",
                          fix="set proposals.maskcut.device: auto (or cpu)")
    return torch.device(name)


@functools.lru_cache(maxsize=2)
def load_vit(model: str, revision: str | None = None, device: str = "cpu"):
    """The ViT at ``model`` (hub id or local directory), float32, eval mode, on ``device``."""
    from transformers import ViTModel

    from trace_edges.hub import from_pretrained

    vit = from_pretrained(ViTModel, model, revision, what="the MaskCut ViT",
                          build_hint="build it with `trace-edges build-tiny-vit --out-dir DIR` (rule build_tiny_vit)",
                          add_pooling_layer=False, dtype=torch.float32)
    vit.eval().requires_grad_(False)
    return vit.to(resolve_device(device))


def key_projection(vit) -> torch.nn.Module:
    """The key projection (``nn.Linear``) of the last transformer layer."""
    found = [(name, mod) for name, mod in vit.named_modules()
             if isinstance(mod, torch.nn.Linear) and name.rsplit(".", 1)[-1] in _KEY_NAMES]
    if not found:
        raise RuntimeError(f"{type(vit).__name__}: no key projection ({'/'.join(_KEY_NAMES)}) found; "
                           "the transformers ViT layout changed")
    return found[-1][1]  # modules register in layer order: the last one is the last layer's


def prepare_image(rgb: np.ndarray, resolution: int) -> torch.Tensor:
    """``uint8 [H, W, 3]`` -> normalised ``float32 [1, 3, resolution, resolution]``."""
    from PIL import Image

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"prepare_image: expected a uint8 [H, W, 3] image, got {rgb.dtype} {rgb.shape}")
    im = Image.fromarray(rgb).resize((resolution, resolution), Image.Resampling.LANCZOS)
    return imagenet_pixels(im)


@torch.no_grad()
def key_features(vit, pixels: torch.Tensor) -> tuple[np.ndarray, tuple[int, int]]:
    """Last-layer keys of the patch tokens: ``(float64 [h*w, C], (h, w))`` (row-major grid)."""
    patch = int(vit.config.patch_size)
    _, _, H, W = pixels.shape
    if H % patch or W % patch:
        raise ValueError(f"key_features: input {H}x{W} is not a multiple of the patch size {patch}")
    grid = (H // patch, W // patch)
    captured: list[torch.Tensor] = []
    handle = key_projection(vit).register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    try:
        device = next(vit.parameters()).device
        vit(pixel_values=pixels.to(device), interpolate_pos_encoding=True)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"key_features: expected one key projection call, saw {len(captured)}")
    keys = captured[0][0]  # [1 + h*w, C]: CLS first
    n = grid[0] * grid[1]
    if keys.shape[0] != n + 1:
        raise RuntimeError(f"key_features: {keys.shape[0]} tokens for a {grid} patch grid (+ CLS)")
    return keys[1:].to(torch.float64).cpu().numpy(), grid


def vit_info(vit, model: str, revision: str | None) -> dict[str, Any]:
    """Provenance of the loaded ViT: id, revision, resolved hub commit, architecture."""
    cfg = vit.config
    return {
        "model": model,
        "revision": revision,
        "commit": _resolved_commit(model, revision),
        "local": Path(model).exists(),
        "class": type(vit).__name__,
        "patch_size": int(cfg.patch_size),
        "hidden_size": int(cfg.hidden_size),
        "num_hidden_layers": int(cfg.num_hidden_layers),
        "features": "keys of the last attention layer (all heads), patch tokens",
    }


def _resolved_commit(model: str, revision: str | None) -> str | None:
    """The hub commit the weights came from (the HF cache's ``snapshots/<sha>``); None if local."""
    if Path(model).exists():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(model, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - provenance only
        return None
    return snapshot_commit(path)


def build_tiny_vit(out_dir: str | Path, *, seed: int = 0) -> Path:
    """A tiny random ``ViTModel`` (:data:`TINY_VIT`) saved to ``out_dir`` (safetensors, replaced
    atomically). The same seed gives byte-identical weights. Returns ``out_dir``."""
    from transformers import ViTConfig, ViTModel

    from trace_edges.hub import build_atomically

    return build_atomically(lambda _scratch: ViTModel(ViTConfig(**TINY_VIT), add_pooling_layer=False).eval(),
                            out_dir, seed=seed)
