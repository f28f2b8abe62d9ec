"""Stable Diffusion XL (U-Net with two CLIP text encoders and micro-conditioning, ε-prediction)."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch

from trace_edges.backbones.sd15 import UNetBackbone


class SDXLBackbone(UNetBackbone):
    family: ClassVar[str] = "sdxl"
    pipeline_class_name: ClassVar[str] = "StableDiffusionXLPipeline"
    text_encoder_attrs: ClassVar[tuple[str, ...]] = ("text_encoder", "text_encoder_2")
    native_resolution: ClassVar[int] = 1024
    default_model: ClassVar[str] = "stabilityai/stable-diffusion-xl-base-1.0"

    def _vae_upcast(self) -> bool:
        # the SDXL VAE overflows in fp16; the pipeline upcasts it to fp32 (force_upcast)
        return self.dtype == torch.float16 and bool(getattr(self.vae.config, "force_upcast", False))

    null_text_keys: ClassVar[tuple[str, ...]] = ("prompt_embeds", "pooled_prompt_embeds")

    @classmethod
    def _encode_text(cls, pipe: Any, device: torch.device) -> dict[str, torch.Tensor]:
        prompt_embeds, _, pooled, _ = pipe.encode_prompt(
            prompt="", prompt_2=None, device=device, num_images_per_prompt=1,
            do_classifier_free_guidance=False)
        return {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled}

    def _null_from_text(self, text: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        prompt_embeds, pooled = text["prompt_embeds"], text["pooled_prompt_embeds"]
        r = self.resolution
        # the pooled embedding is text_encoder_2's projection: its width is projection_dim
        proj_dim = int(pooled.shape[-1])
        # micro-conditioning exactly as the pipeline: original = target = (R, R), crop (0, 0)
        time_ids = self.pipe._get_add_time_ids((r, r), (0, 0), (r, r), dtype=prompt_embeds.dtype,
                                               text_encoder_projection_dim=proj_dim)
        return {
            "encoder_hidden_states": prompt_embeds.to(self.device, self.dtype),
            "added_cond_kwargs": {"text_embeds": pooled.to(self.device, self.dtype),
                                  "time_ids": time_ids.to(self.device, self.dtype)},
        }

    def null_condition(self) -> dict[str, Any]:
        out = dict(self._null)
        out["added_cond_kwargs"] = dict(out["added_cond_kwargs"])
        return out

    def _latents_norm(self):
        cfg = self.vae.config
        mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
        if mean is None or std is None:
            return None
        c = self.latent_channels
        return (torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1),
                torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1))

    def _scale_latent(self, mean: torch.Tensor) -> torch.Tensor:
        norm = self._latents_norm()
        if norm is None:
            return super()._scale_latent(mean)
        m, s = (v.to(mean.device) for v in norm)  # inverse of the pipeline's z * std / scale + mean
        return (mean - m) * self.vae.config.scaling_factor / s

    def _unscale_latent(self, z: torch.Tensor) -> torch.Tensor:
        norm = self._latents_norm()
        if norm is None:
            return super()._unscale_latent(z)
        m, s = (v.to(z.device) for v in norm)
        return z * s / self.vae.config.scaling_factor + m
