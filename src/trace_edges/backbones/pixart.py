"""PixArt-α (DiT with T5 cross-attention, ε-prediction with learned-sigma channels)."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch

from trace_edges.backbones.base import AttnSite, EpsBackbone

#: T5 sequence length of PixArtAlphaPipeline.__call__ (its default max_sequence_length).
PIXART_MAX_SEQUENCE_LENGTH = 120


class PixArtBackbone(EpsBackbone):
    family: ClassVar[str] = "pixart"
    pipeline_class_name: ClassVar[str] = "PixArtAlphaPipeline"
    denoiser_attr: ClassVar[str] = "transformer"
    text_encoder_attrs: ClassVar[tuple[str, ...]] = ("text_encoder",)
    native_resolution: ClassVar[int] = 1024
    default_model: ClassVar[str] = "PixArt-alpha/PixArt-XL-2-1024-MS"

    @property
    def patch_size(self) -> int:
        return int(self.denoiser.config.patch_size)

    @property
    def resolution_multiple(self) -> int:
        return self.vae_scale_factor * self.patch_size

    null_text_keys: ClassVar[tuple[str, ...]] = ("prompt_embeds", "prompt_attention_mask")

    @classmethod
    def _encode_text(cls, pipe: Any, device: torch.device) -> dict[str, torch.Tensor]:
        prompt_embeds, mask, _, _ = pipe.encode_prompt(
            "", do_classifier_free_guidance=False, num_images_per_prompt=1, device=device,
            clean_caption=False, max_sequence_length=PIXART_MAX_SEQUENCE_LENGTH)
        return {"prompt_embeds": prompt_embeds, "prompt_attention_mask": mask}

    def _null_from_text(self, text: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        added = {"resolution": None, "aspect_ratio": None}
        # The pipeline passes the resolution / aspect-ratio micro-conditions when the transformer
        # uses them (PixArt-XL-2-1024-MS: sample_size 128); (height, width) = (R, R), ratio 1.
        if getattr(self.denoiser, "use_additional_conditions", False):
            r = float(self.resolution)
            added = {"resolution": torch.tensor([[r, r]], device=self.device, dtype=self.dtype),
                     "aspect_ratio": torch.tensor([[1.0]], device=self.device, dtype=self.dtype)}
        return {"encoder_hidden_states": text["prompt_embeds"].to(self.device, self.dtype),
                "encoder_attention_mask": text["prompt_attention_mask"].to(self.device),
                "added_cond_kwargs": added}

    def null_condition(self) -> dict[str, Any]:
        out = dict(self._null)
        out["added_cond_kwargs"] = dict(out["added_cond_kwargs"])
        return out

    def _forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        ts = torch.tensor([t], device=self.device, dtype=torch.long)
        out = self.denoiser(x, timestep=ts, **self._null, return_dict=False)[0]
        if self.denoiser.config.out_channels // 2 == self.latent_channels:  # learned sigma: keep ε
            out = out.chunk(2, dim=1)[0]
        return out

    def attention_sites(self, latent_shape: tuple[int, ...] | None = None) -> list[AttnSite]:
        h, w = self._latent_hw(latent_shape, self.latent_shape)
        p = self.patch_size
        grid = (h // p, w // p)
        return [AttnSite(f"transformer_blocks.{i}.attn1", block.attn1, "self", grid)
                for i, block in enumerate(self.denoiser.transformer_blocks)]
