"""The paper's checkpoints as data: real denoiser / VAE configs, built at real size with random weights.

No weights can be downloaded here, but an architecture with random weights costs exactly what the
real one costs (time, memory) and exercises every shape. :data:`REAL_ARCHS` holds, per family, the
values of the checkpoint's ``config.json`` files that the diffusers / transformers constructors
take (everything else is left at the class default, which is what the checkpoint's config also
says), with the hub id and the revision they describe (``main`` as of diffusers 0.3x; the
checkpoints' configs have not changed on ``main`` since their release).

* :func:`build_denoiser`: the real-size denoiser (or DINOv2-g encoder) with random weights from a
  seed, in a dtype, on a device (``"meta"`` builds nothing: shapes only), optionally truncated to
  its first ``depth`` transformer blocks (FLUX: ``(double, single)``);
* :func:`build_vae`: the real-size VAE;
* :func:`real_backbone`: the family's own adapter (:mod:`trace_edges.backbones`) on an in-memory
  pipeline of the two, **without text encoders**: the null-prompt conditioning is a seeded random
  tensor of the real text encoders' output shapes (what random-weight encoders would give), so the
  denoiser's cross / joint attention runs at its real sequence length.

Used by ``benchmarks/bench_teacher_scale.py`` (the real-size rehearsal) and
``tests/test_real_archs.py`` (the tiny builders take the same code paths as these configs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from trace_edges.families import FAMILIES


@dataclass(frozen=True)
class RealArch:
    """One checkpoint: where it lives, its denoiser / VAE configs, its null-prompt shapes."""

    family: str
    hub_id: str
    revision: str
    denoiser_class: str                     # diffusers / transformers class name
    denoiser: dict[str, Any]
    resolution: int                         # the native size the paper runs it at (pixels)
    vae: dict[str, Any] | None = None       # AutoencoderKL kwargs (None: an encoder, no VAE)
    text: dict[str, Any] = field(default_factory=dict)   # null-prompt output shapes

    @property
    def depth_key(self) -> tuple[str, ...]:
        """The config key(s) :func:`build_denoiser`'s ``depth`` truncates."""
        return {"sd3": ("num_layers",), "pixart": ("num_layers",), "flux": ("num_layers", "num_single_layers"),
                "dinov2": ("num_hidden_layers",)}.get(self.family, ())


def _sd_vae(**kw: Any) -> dict[str, Any]:
    """The SD-family AutoencoderKL (4 levels, 128-256-512-512, 2 resnets per level)."""
    return dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                layers_per_block=2, act_fn="silu", norm_num_groups=32, **kw)


#: family -> the checkpoint the paper uses (configs from the hub's unet/transformer/vae config.json)
REAL_ARCHS: dict[str, RealArch] = {a.family: a for a in (
    RealArch(
        "sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", "main", "UNet2DConditionModel",
        dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
             block_out_channels=(320, 640, 1280, 1280),
             down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
             up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
             cross_attention_dim=768, attention_head_dim=8,  # (sic) 8 heads at every level
             norm_num_groups=32, flip_sin_to_cos=True, freq_shift=0, downsample_padding=1),
        512, _sd_vae(latent_channels=4, sample_size=512, scaling_factor=0.18215),
        dict(seq=77, dim=768)),
    RealArch(
        "sdxl", "stabilityai/stable-diffusion-xl-base-1.0", "main", "UNet2DConditionModel",
        dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
             block_out_channels=(320, 640, 1280),
             down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
             up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
             transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
             use_linear_projection=True, cross_attention_dim=2048, addition_embed_type="text_time",
             addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
             norm_num_groups=32),
        1024, _sd_vae(latent_channels=4, sample_size=1024, scaling_factor=0.13025, force_upcast=True),
        dict(seq=77, dim=2048, pooled=1280)),
    RealArch(
        "sd3", "stabilityai/stable-diffusion-3.5-large", "main", "SD3Transformer2DModel",
        dict(sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=38,
             attention_head_dim=64, num_attention_heads=38, joint_attention_dim=4096,
             caption_projection_dim=2432, pooled_projection_dim=2048, pos_embed_max_size=192,
             dual_attention_layers=(), qk_norm="rms_norm"),
        1024, _sd_vae(latent_channels=16, sample_size=1024, scaling_factor=1.5305, shift_factor=0.0609,
                      use_quant_conv=False, use_post_quant_conv=False),
        dict(seq=77 + 256, dim=4096, pooled=2048)),       # CLIP-L/G (77) + T5-XXL (256 tokens)
    RealArch(
        "pixart", "PixArt-alpha/PixArt-XL-2-1024-MS", "main", "PixArtTransformer2DModel",
        dict(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
             cross_attention_dim=1152, caption_channels=4096, attention_bias=True, sample_size=128,
             patch_size=2, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
             num_embeds_ada_norm=1000, activation_fn="gelu-approximate"),
        1024, _sd_vae(latent_channels=4, sample_size=512, scaling_factor=0.18215),  # sd-vae-ft-ema
        dict(seq=120, dim=4096)),
    RealArch(
        "flux", "black-forest-labs/FLUX.1-dev", "main", "FluxTransformer2DModel",
        dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
             num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
             guidance_embeds=True, axes_dims_rope=(16, 56, 56)),
        1024, _sd_vae(latent_channels=16, sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159,
                      use_quant_conv=False, use_post_quant_conv=False),
        dict(seq=512, dim=4096, pooled=768)),
    RealArch(
        "dinov2", "facebook/dinov2-giant", "main", "Dinov2Model",
        dict(hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, mlp_ratio=4, patch_size=14,
             image_size=518, use_swiglu_ffn=True, layerscale_value=1.0, qkv_bias=True, layer_norm_eps=1e-6),
        518),
)}
assert set(REAL_ARCHS) == set(FAMILIES), "one real architecture per registered family"


def real_arch(family: str) -> RealArch:
    from trace_edges.families import family as family_record

    family_record(family)  # ConfigError for an unknown name
    return REAL_ARCHS[family]


def denoiser_config(family: str, depth: int | tuple[int, int] | None = None) -> dict[str, Any]:
    """The constructor kwargs of the real denoiser, ``depth`` applied (see :func:`build_denoiser`)."""
    arch = real_arch(family)
    cfg = dict(arch.denoiser)
    if depth is None:
        return cfg
    keys = arch.depth_key
    if not keys:
        raise ValueError(f"{family}: a U-Net has no depth to truncate (build it at full depth)")
    values = tuple(depth) if isinstance(depth, (tuple, list)) else (depth,) * len(keys)
    if len(values) != len(keys):
        raise ValueError(f"{family}: depth needs {len(keys)} values ({keys}), got {depth!r}")
    for key, v in zip(keys, values):
        if not 0 <= int(v) <= cfg[key] or (len(keys) == 1 and int(v) < 1):
            raise ValueError(f"{family}: depth {v} for {key} outside [1, {cfg[key]}]")
        cfg[key] = int(v)
    return cfg


def _construct(cls_name: str, cfg: dict[str, Any]):
    if cls_name == "Dinov2Model":
        from transformers import Dinov2Config, Dinov2Model

        return Dinov2Model(Dinov2Config(**cfg))
    import diffusers

    return getattr(diffusers, cls_name)(**cfg)


def _build(cls_name: str, cfg: dict[str, Any], *, seed: int, dtype: torch.dtype, device: str | torch.device):
    torch.manual_seed(int(seed))
    device = torch.device(device)
    if device.type == "meta":
        with torch.device("meta"):
            model = _construct(cls_name, cfg)
    else:
        model = _construct(cls_name, cfg)
    if device.type != "meta":
        model.to(device)
    if dtype != torch.float32:
        _quiet_cast(model, dtype)
    return model.eval().requires_grad_(False)


def _quiet_cast(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """``model.to(dtype)`` without diffusers' "cast with from_pretrained" warning (nothing here is
    loaded; no module of these classes is kept in float32 by the checkpoints either)."""
    import logging

    logger = logging.getLogger("diffusers.models.modeling_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        model.to(dtype)
    finally:
        logger.setLevel(level)


def build_denoiser(family: str, *, seed: int = 0, dtype: torch.dtype = torch.float32,
                   depth: int | tuple[int, int] | None = None, device: str | torch.device = "cpu"):
    """The real-size denoiser of ``family`` (DINOv2: the encoder) with random weights from ``seed``.

    ``depth`` keeps the first blocks only (SD3 / PixArt: ``num_layers``; FLUX: ``(double, single)``
    or one number for both; DINOv2: layers); ``None`` = full depth. U-Nets are always full depth.
    ``device="meta"`` allocates nothing (configs and parameter counts only).
    """
    return _build(real_arch(family).denoiser_class, denoiser_config(family, depth), seed=seed, dtype=dtype,
                  device=device)


def build_vae(family: str, *, seed: int = 0, dtype: torch.dtype = torch.float32,
              device: str | torch.device = "cpu"):
    """The real-size VAE (``AutoencoderKL``) of ``family`` with random weights from ``seed``."""
    arch = real_arch(family)
    if arch.vae is None:
        raise ValueError(f"{family} is an image encoder: it has no VAE")
    return _build("AutoencoderKL", arch.vae, seed=seed, dtype=dtype, device=device)


def param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------- the adapter
def _null_outputs(family: str, seed: int) -> tuple:
    """What the pipeline's ``encode_prompt("")`` returns for ``family``, with seeded random values
    of the real shapes (the text encoders are never built)."""
    t = real_arch(family).text
    g = torch.Generator().manual_seed(int(seed) + 1)
    emb = torch.randn(1, t["seq"], t["dim"], generator=g)
    pooled = torch.randn(1, t["pooled"], generator=g) if "pooled" in t else None
    if family == "sd15":
        return emb, None
    if family in ("sdxl", "sd3"):
        return emb, None, pooled, None
    if family == "pixart":  # T5 on "" is one </s> token, the rest padding
        mask = torch.zeros(1, t["seq"], dtype=torch.long)
        mask[0, 0] = 1
        return emb, mask, None, None
    if family == "flux":
        return emb, pooled, torch.zeros(t["seq"], 3)
    raise ValueError(f"{family}: no null-prompt shapes")


def build_pipeline(family: str, *, seed: int = 0, dtype: torch.dtype = torch.float32,
                   depth: int | tuple[int, int] | None = None):
    """The family's diffusers pipeline with the real-size denoiser and VAE, no text encoders;
    ``encode_prompt`` returns :func:`_null_outputs` (the only prompt TRACE uses is "")."""
    import diffusers

    from trace_edges.backbones.tiny import _scheduler

    backbone_cls = _adapter(family)
    denoiser = build_denoiser(family, seed=seed, dtype=dtype, depth=depth)
    vae = build_vae(family, seed=seed, dtype=dtype)
    pipe_cls = getattr(diffusers, backbone_cls.pipeline_class_name)
    parts: dict[str, Any] = {backbone_cls.denoiser_attr: denoiser, "vae": vae, "scheduler": _scheduler(family)}
    for name in backbone_cls.text_encoder_attrs:
        parts[name] = None
        parts[name.replace("text_encoder", "tokenizer")] = None
    if family == "sd15":
        parts.update(safety_checker=None, feature_extractor=None, image_encoder=None,
                     requires_safety_checker=False)
    elif family == "sdxl":
        parts.update(image_encoder=None, feature_extractor=None, add_watermarker=False)
    pipe = pipe_cls(**parts)
    outputs = _null_outputs(family, seed)
    pipe.encode_prompt = lambda *a, **kw: outputs
    return pipe


def _adapter(family: str):
    from trace_edges.backbones import backbone_class

    cls = backbone_class(family)
    if not hasattr(cls, "pipeline_class_name"):
        raise ValueError(f"{family}: not a diffusion pipeline family (build_denoiser builds the encoder)")
    return cls


def real_backbone(family: str, *, resolution: int | None = None, depth: int | tuple[int, int] | None = None,
                  seed: int = 0, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """The family's adapter on :func:`build_pipeline` (random weights, real size): everything the
    teacher calls (``encode``, ``predict``, ``step``, ``attention_sites``) runs the real shapes."""
    arch = real_arch(family)
    base = _adapter(family)

    class RealRandom(base):  # only the loading differs from the adapter the teacher uses
        def _load_pipeline(self):
            return build_pipeline(family, seed=seed, dtype=self.dtype, depth=depth)

    RealRandom.__name__ = f"RealRandom{base.__name__}"
    spec = {"family": family, "model": f"random-weights:{arch.hub_id}", "revision": arch.revision,
            "resolution": int(resolution or arch.resolution)}
    return RealRandom(spec, device=device, dtype=dtype)


__all__ = ["REAL_ARCHS", "RealArch", "build_denoiser", "build_pipeline", "build_vae", "denoiser_config",
           "param_count", "real_arch", "real_backbone"]
