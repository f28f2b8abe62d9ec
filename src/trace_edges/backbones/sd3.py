"""Stable Diffusion 3 / 3.5 (MMDiT, rectified flow). The paper's default is SD3.5-Large."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch

from trace_edges.backbones.base import AttnSite, FlowBackbone

#: T5 sequence length used by StableDiffusion3Pipeline.__call__ (its default max_sequence_length).
SD3_MAX_SEQUENCE_LENGTH = 256


class SD3Backbone(FlowBackbone):
    family: ClassVar[str] = "sd3"
    pipeline_class_name: ClassVar[str] = "StableDiffusion3Pipeline"
    denoiser_attr: ClassVar[str] = "transformer"
    text_encoder_attrs: ClassVar[tuple[str, ...]] = ("text_encoder", "text_encoder_2", "text_encoder_3")
    native_resolution: ClassVar[int] = 1024
    default_model: ClassVar[str] = "stabilityai/stable-diffusion-3.5-large"

    @classmethod
    def _load_kwargs(cls, spec: Mapping[str, Any]) -> dict[str, Any]:
        if spec["drop_t5"]:
            # the pipeline's documented way to run without T5-XXL: its embeddings become zeros
            return {"text_encoder_3": None, "tokenizer_3": None}
        return {}

    @property
    def patch_size(self) -> int:
        return int(self.denoiser.config.patch_size)

    @property
    def resolution_multiple(self) -> int:
        return self.vae_scale_factor * self.patch_size

    null_text_keys: ClassVar[tuple[str, ...]] = ("prompt_embeds", "pooled_prompt_embeds")

    @classmethod
    def _encode_text(cls, pipe: Any, device: torch.device) -> dict[str, torch.Tensor]:
        prompt_embeds, _, pooled, _ = pipe.encode_prompt(
            prompt="", prompt_2=None, prompt_3=None, device=device, num_images_per_prompt=1,
            do_classifier_free_guidance=False, max_sequence_length=SD3_MAX_SEQUENCE_LENGTH)
        return {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled}

    def _null_from_text(self, text: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        return {"encoder_hidden_states": text["prompt_embeds"].to(self.device, self.dtype),
                "pooled_projections": text["pooled_prompt_embeds"].to(self.device, self.dtype)}

    def _forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        ts = self.model_timesteps[t].reshape(1).to(self.device)  # sigma * 1000, float32 as the pipeline
        return self.denoiser(hidden_states=x, timestep=ts, **self._null, return_dict=False)[0]

    def attention_sites(self, latent_shape: tuple[int, ...] | None = None) -> list[AttnSite]:
        h, w = self._latent_hw(latent_shape, self.latent_shape)
        p = self.patch_size
        grid = (h // p, w // p)
        sites: list[AttnSite] = []
        for i, block in enumerate(self.denoiser.transformer_blocks):
            sites.append(AttnSite(f"transformer_blocks.{i}.attn", block.attn, "joint", grid))
            if getattr(block, "attn2", None) is not None:  # SD3.5-Medium dual attention: image only
                sites.append(AttnSite(f"transformer_blocks.{i}.attn2", block.attn2, "self", grid))
        return sites
