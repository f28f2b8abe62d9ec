"""FLUX.1 (MMDiT with double- and single-stream blocks, RoPE, rectified flow, guidance-distilled)."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch

from trace_edges.backbones.base import AttnSite, FlowBackbone

#: T5 sequence length of FluxPipeline.__call__ (its default max_sequence_length).
FLUX_MAX_SEQUENCE_LENGTH = 512
#: FluxPipeline.__call__'s default guidance_scale; FLUX.1-dev is guidance-distilled and takes it
#: as an input embedding (no CFG). Ignored when the transformer has no guidance embedding (schnell).
FLUX_DEFAULT_GUIDANCE = 3.5


class FluxBackbone(FlowBackbone):
    family: ClassVar[str] = "flux"
    pipeline_class_name: ClassVar[str] = "FluxPipeline"
    denoiser_attr: ClassVar[str] = "transformer"
    text_encoder_attrs: ClassVar[tuple[str, ...]] = ("text_encoder", "text_encoder_2")
    native_resolution: ClassVar[int] = 1024
    default_model: ClassVar[str] = "black-forest-labs/FLUX.1-dev"
    default_guidance: ClassVar[float] = FLUX_DEFAULT_GUIDANCE

    @property
    def resolution_multiple(self) -> int:
        return self.vae_scale_factor * 2  # latents are packed 2x2 into tokens

    def _image_seq_len(self) -> int:
        s = self.resolution // self.vae_scale_factor
        return (s // 2) * (s // 2)

    def _mu(self) -> float | None:
        cfg = self.scheduler.config
        if not cfg.get("use_dynamic_shifting", False):
            return None
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        return float(calculate_shift(self._image_seq_len(), cfg.get("base_image_seq_len", 256),
                                     cfg.get("max_image_seq_len", 4096), cfg.get("base_shift", 0.5),
                                     cfg.get("max_shift", 1.15)))

    null_text_keys: ClassVar[tuple[str, ...]] = ("prompt_embeds", "pooled_prompt_embeds", "text_ids")

    @classmethod
    def _encode_text(cls, pipe: Any, device: torch.device) -> dict[str, torch.Tensor]:
        prompt_embeds, pooled, text_ids = pipe.encode_prompt(
            prompt="", prompt_2=None, device=device, num_images_per_prompt=1,
            max_sequence_length=FLUX_MAX_SEQUENCE_LENGTH)
        return {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled, "text_ids": text_ids}

    def _null_from_text(self, text: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        s = self.resolution // self.vae_scale_factor
        img_ids = self.pipe._prepare_latent_image_ids(1, s // 2, s // 2, self.device, self.dtype)
        guidance = None
        if self.denoiser.config.guidance_embeds:
            guidance = torch.full([1], self.spec["guidance"], device=self.device, dtype=torch.float32)
        return {"encoder_hidden_states": text["prompt_embeds"].to(self.device, self.dtype),
                "pooled_projections": text["pooled_prompt_embeds"].to(self.device, self.dtype),
                "txt_ids": text["text_ids"].to(self.device, self.dtype),
                "img_ids": img_ids,
                "guidance": guidance}

    @property
    def n_text_tokens(self) -> int:
        return int(self._null["encoder_hidden_states"].shape[1])

    def _forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        b, c, h, w = x.shape
        if (h, w) != tuple(self.latent_shape[2:]):
            raise ValueError(f"flux: latents must be {tuple(self.latent_shape[2:])} for this resolution "
                             f"(img_ids are built for it), got {(h, w)}")
        packed = self.pipe._pack_latents(x, b, c, h, w)
        ts = self.model_timesteps[t].reshape(1).to(self.device, x.dtype)  # as the pipeline: t / 1000
        out = self.denoiser(hidden_states=packed, timestep=ts / 1000, **self._null, return_dict=False)[0]
        return self.pipe._unpack_latents(out, h * self.vae_scale_factor, w * self.vae_scale_factor,
                                         self.vae_scale_factor)

    def attention_sites(self, latent_shape: tuple[int, ...] | None = None) -> list[AttnSite]:
        h, w = self._latent_hw(latent_shape, self.latent_shape)
        grid = (h // 2, w // 2)
        sites = [AttnSite(f"transformer_blocks.{i}.attn", blk.attn, "joint", grid)
                 for i, blk in enumerate(self.denoiser.transformer_blocks)]
        sites += [AttnSite(f"single_transformer_blocks.{i}.attn", blk.attn, "single", grid,
                           n_text=self.n_text_tokens)
                  for i, blk in enumerate(self.denoiser.single_transformer_blocks)]
        return sites
