"""Stable Diffusion 1.5 (U-Net, ε-prediction) and the U-Net machinery shared with SDXL."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch

from trace_edges.backbones.base import AttnSite, EpsBackbone


def _halve(n: int) -> int:
    # Downsample2D: conv 3x3, stride 2, padding 1 -> ceil(n / 2)
    return (n + 1) // 2


def unet_attention_sites(unet: torch.nn.Module, h: int, w: int) -> list[AttnSite]:
    """``attn1`` of every ``BasicTransformerBlock`` of a ``UNet2DConditionModel``, in execution
    order (down blocks, mid block, up blocks), with the token grid of its resolution level.

    Down block ``i`` runs at the size reached after ``i`` downsamplers; up block ``j`` runs at
    the size of down block ``n - 1 - j`` (the skip it consumes); the mid block at the lowest.
    ``attn2`` (cross-attention to the text) is never a site.
    """
    sites: list[AttnSite] = []
    sizes: list[tuple[int, int]] = []
    cur = (h, w)
    for block in unet.down_blocks:
        sizes.append(cur)
        if getattr(block, "downsamplers", None):
            cur = (_halve(cur[0]), _halve(cur[1]))

    def add(prefix: str, block: torch.nn.Module, grid: tuple[int, int]) -> None:
        for a, t2d in enumerate(getattr(block, "attentions", None) or []):
            for b, tb in enumerate(getattr(t2d, "transformer_blocks", [])):
                attn1 = getattr(tb, "attn1", None)
                if attn1 is None or getattr(attn1, "is_cross_attention", False):
                    continue
                sites.append(AttnSite(f"{prefix}.attentions.{a}.transformer_blocks.{b}.attn1", attn1,
                                      "self", grid))

    for i, block in enumerate(unet.down_blocks):
        add(f"down_blocks.{i}", block, sizes[i])
    if getattr(unet, "mid_block", None) is not None:
        add("mid_block", unet.mid_block, sizes[-1])
    n = len(unet.down_blocks)
    for j, block in enumerate(unet.up_blocks):
        add(f"up_blocks.{j}", block, sizes[n - 1 - j])
    return sites


class UNetBackbone(EpsBackbone):
    denoiser_attr: ClassVar[str] = "unet"

    @property
    def resolution_multiple(self) -> int:
        # every U-Net level halves exactly: VAE factor x 2^(levels - 1)
        return self.vae_scale_factor * 2 ** (len(self.denoiser.config.block_out_channels) - 1)

    def attention_sites(self, latent_shape: tuple[int, ...] | None = None) -> list[AttnSite]:
        h, w = self._latent_hw(latent_shape, self.latent_shape)
        return unet_attention_sites(self.denoiser, h, w)

    def _forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        ts = torch.tensor([t], device=self.device, dtype=torch.long)
        return self.denoiser(x, ts, **self._null, return_dict=False)[0]


class SD15Backbone(UNetBackbone):
    family: ClassVar[str] = "sd15"
    pipeline_class_name: ClassVar[str] = "StableDiffusionPipeline"
    text_encoder_attrs: ClassVar[tuple[str, ...]] = ("text_encoder",)
    native_resolution: ClassVar[int] = 512
    default_model: ClassVar[str] = "stable-diffusion-v1-5/stable-diffusion-v1-5"

    @classmethod
    def _load_kwargs(cls, spec: Mapping[str, Any]) -> dict[str, Any]:
        # never load the safety checker / its feature extractor (unused; 1.2 GB)
        return {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}

    @classmethod
    def _encode_text(cls, pipe: Any, device: torch.device) -> dict[str, torch.Tensor]:
        prompt_embeds, _ = pipe.encode_prompt("", device, num_images_per_prompt=1,
                                              do_classifier_free_guidance=False)
        return {"prompt_embeds": prompt_embeds}

    def _null_from_text(self, text: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        return {"encoder_hidden_states": text["prompt_embeds"].to(self.device, self.dtype)}
