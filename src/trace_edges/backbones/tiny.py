"""Tiny random models of the five real architectures (+ DINOv2), built locally (no download).

Each tiny model uses the SAME diffusers / transformers classes as the real one (U-Net or DiT,
``AutoencoderKL`` with 4 down blocks so the VAE factor is 8, the real scheduler class with the
real model's scheduler config, CLIP / T5 text encoders, tokenizers built from scratch), with tiny
widths and depths and random weights from ``torch.manual_seed(seed)``. The pipeline is saved with
``save_pretrained`` (safetensors) so it loads through the normal ``from_pretrained`` path::

    path = build_tiny("sd3", "/tmp/tiny/sd3")
    bb = load_backbone({"family": "sd3", "model": str(path), "resolution": TINY_RESOLUTION})

At ``TINY_RESOLUTION`` = 256 px the latent is 32x32, every DiT token grid is 16x16 and the U-Nets
have attention at 32x32 + 16x16 (SD1.5-like) or 16x16 + 8x8 (SDXL-like).
Building is deterministic: the same seed gives byte-identical safetensors.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import string
import tempfile
from pathlib import Path
from typing import Any, Callable

from trace_edges.families import DIFFUSION_FAMILIES, ENCODER_FAMILIES, family as family_record

#: default square input size (pixels) for the tiny models: 16x16 DiT token grids.
TINY_RESOLUTION = 256

#: the diffusion families; the non-diffusion ENCODER_FAMILIES (Table 5's controls) are buildable too
FAMILIES = DIFFUSION_FAMILIES
#: the tiny DINOv2's input size: 224 / 14 = 16x16 patches, the tiny DiTs' grid
TINY_ENCODER_RESOLUTION = 224

# Scheduler configs of the real checkpoints (scheduler/scheduler_config.json on the hub).
SCHEDULER_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    # stable-diffusion-v1-5/stable-diffusion-v1-5
    "sd15": ("PNDMScheduler", dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                   num_train_timesteps=1000, set_alpha_to_one=False, skip_prk_steps=True,
                                   steps_offset=1, trained_betas=None)),
    # stabilityai/stable-diffusion-xl-base-1.0
    "sdxl": ("EulerDiscreteScheduler", dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                            num_train_timesteps=1000, prediction_type="epsilon",
                                            interpolation_type="linear", use_karras_sigmas=False,
                                            steps_offset=1, timestep_spacing="leading", trained_betas=None)),
    # stabilityai/stable-diffusion-3.5-large
    "sd3": ("FlowMatchEulerDiscreteScheduler", dict(num_train_timesteps=1000, shift=3.0)),
    # PixArt-alpha/PixArt-XL-2-1024-MS
    "pixart": ("DPMSolverMultistepScheduler", dict(beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                                                   num_train_timesteps=1000, prediction_type="epsilon",
                                                   solver_order=2, algorithm_type="dpmsolver++",
                                                   solver_type="midpoint", lower_order_final=True,
                                                   thresholding=False, steps_offset=0,
                                                   timestep_spacing="linspace", use_karras_sigmas=False,
                                                   trained_betas=None)),
    # black-forest-labs/FLUX.1-dev
    "flux": ("FlowMatchEulerDiscreteScheduler", dict(num_train_timesteps=1000, shift=3.0,
                                                     use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                     base_image_seq_len=256, max_image_seq_len=4096)),
}

# VAE latent conventions of the real checkpoints.
VAE_CONFIGS: dict[str, dict[str, Any]] = {
    "sd15": dict(latent_channels=4, scaling_factor=0.18215),
    "sdxl": dict(latent_channels=4, scaling_factor=0.13025, force_upcast=True),
    "sd3": dict(latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609,
                use_quant_conv=False, use_post_quant_conv=False),
    "pixart": dict(latent_channels=4, scaling_factor=0.18215),
    "flux": dict(latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159,
                 use_quant_conv=False, use_post_quant_conv=False),
}

CLIP_MAX_LENGTH = 77


# ---------------------------------------------------------------------------- tokenizers
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable unicode map (the byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def _clip_tokenizer(workdir: Path):
    """A CLIP byte-level BPE tokenizer from a generated vocab.json / merges.txt: the 256-symbol
    byte alphabet, the same with the ``</w>`` end-of-word suffix, and the two special tokens.
    No merges (every character is a token)."""
    from transformers import CLIPTokenizer

    alphabet = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for sym in alphabet:
        vocab[sym] = len(vocab)
    for sym in alphabet:
        vocab[sym + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (workdir / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer(vocab=str(workdir / "vocab.json"), merges=str(workdir / "merges.txt"),
                         model_max_length=CLIP_MAX_LENGTH)


def _t5_tokenizer():
    """A T5 (SentencePiece-Unigram-style) tokenizer: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, the
    ``▁`` piece, ASCII characters with and without the ``▁`` word prefix, then the 100
    ``<extra_id_*>`` sentinels (reverse order, as in T5). Saved as tokenizer.json."""
    from transformers import T5TokenizerFast

    chars = string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + c, -3.0 - 0.01 * i) for i, c in enumerate(chars)]
    pieces += [(c, -5.0 - 0.01 * i) for i, c in enumerate(chars)]
    pieces += [(f"<extra_id_{i}>", 0.0) for i in range(99, -1, -1)]
    return T5TokenizerFast(vocab=pieces, extra_ids=100, model_max_length=512)


# ---------------------------------------------------------------------------- text encoders
def _clip_config(vocab_size: int, hidden: int, *, act: str = "quick_gelu", projection: int | None = None):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                          num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=CLIP_MAX_LENGTH,
                          projection_dim=projection or hidden, hidden_act=act,
                          bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)


def _clip_text(tok, hidden: int, *, with_projection: bool = False, act: str = "quick_gelu"):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    cfg = _clip_config(len(tok), hidden, act=act)
    model = (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg)
    return model.eval()


def _t5_encoder(tok, d_model: int):
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=len(tok), d_model=d_model, d_kv=16, d_ff=2 * d_model, num_layers=2,
                   num_heads=2, relative_attention_num_buckets=8, relative_attention_max_distance=32,
                   feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
                   decoder_start_token_id=0, is_encoder_decoder=False, use_cache=False)
    return T5EncoderModel(cfg).eval()


# ---------------------------------------------------------------------------- shared parts
def _vae(family: str):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32), layers_per_block=1, norm_num_groups=8,
        sample_size=TINY_RESOLUTION, **VAE_CONFIGS[family],
    ).eval()


def _scheduler(family: str):
    import diffusers

    cls_name, cfg = SCHEDULER_CONFIGS[family]
    return getattr(diffusers, cls_name)(**cfg)


# ---------------------------------------------------------------------------- families
# One ``make_<family>(workdir)`` per family, named by its record in trace_edges.families.
def make_sd15(tmp: Path):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    tok = _clip_tokenizer(tmp / "clip")
    te = _clip_text(tok, 32)
    unet = UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64, 64), layers_per_block=1, cross_attention_dim=32,
        attention_head_dim=2,  # as in SD1.5's config this is the number of heads (8 there)
        norm_num_groups=32,
    )
    return StableDiffusionPipeline(vae=_vae("sd15"), text_encoder=te, tokenizer=tok, unet=unet,
                                   scheduler=_scheduler("sd15"), safety_checker=None, feature_extractor=None,
                                   image_encoder=None, requires_safety_checker=False)


def make_sdxl(tmp: Path):
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    tok = _clip_tokenizer(tmp / "clip")
    tok2 = _clip_tokenizer(tmp / "clip2")
    te = _clip_text(tok, 32)  # CLIP ViT-L (hidden states only)
    te2 = _clip_text(tok2, 48, with_projection=True, act="gelu")  # OpenCLIP bigG (+ pooled projection)
    add_time = 8
    unet = UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 64), layers_per_block=1, transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(2, 2, 4), use_linear_projection=True, cross_attention_dim=32 + 48,
        addition_embed_type="text_time", addition_time_embed_dim=add_time,
        projection_class_embeddings_input_dim=6 * add_time + 48, norm_num_groups=32,
    )
    return StableDiffusionXLPipeline(vae=_vae("sdxl"), text_encoder=te, text_encoder_2=te2, tokenizer=tok,
                                     tokenizer_2=tok2, unet=unet, scheduler=_scheduler("sdxl"),
                                     image_encoder=None, feature_extractor=None,
                                     force_zeros_for_empty_prompt=True, add_watermarker=False)


def make_sd3(tmp: Path):
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    tok, tok2, tok3 = _clip_tokenizer(tmp / "clip"), _clip_tokenizer(tmp / "clip2"), _t5_tokenizer()
    te = _clip_text(tok, 32, with_projection=True)  # CLIP-L
    te2 = _clip_text(tok2, 48, with_projection=True, act="gelu")  # CLIP-G
    te3 = _t5_encoder(tok3, 96)  # T5-XXL; joint_attention_dim >= CLIP-L + CLIP-G widths
    transformer = SD3Transformer2DModel(
        sample_size=TINY_RESOLUTION // 8, patch_size=2, in_channels=16, out_channels=16, num_layers=3,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=96, caption_projection_dim=32,
        pooled_projection_dim=32 + 48, pos_embed_max_size=32, dual_attention_layers=(),
        qk_norm="rms_norm",  # as SD3.5-Large
    )
    return StableDiffusion3Pipeline(transformer=transformer, scheduler=_scheduler("sd3"), vae=_vae("sd3"),
                                    text_encoder=te, tokenizer=tok, text_encoder_2=te2, tokenizer_2=tok2,
                                    text_encoder_3=te3, tokenizer_3=tok3)


def make_pixart(tmp: Path):
    from diffusers import PixArtAlphaPipeline, PixArtTransformer2DModel

    tok = _t5_tokenizer()
    te = _t5_encoder(tok, 32)
    transformer = PixArtTransformer2DModel(
        # inner dim 2 x 24 = 48: the resolution / aspect-ratio embeddings need a multiple of 3
        num_attention_heads=2, attention_head_dim=24, in_channels=4, out_channels=8, num_layers=3,
        cross_attention_dim=48, caption_channels=32, attention_bias=True,
        sample_size=128,  # as PixArt-XL-2-1024-MS: pos-embed base 64, interpolation 2, size conditions on
        patch_size=2, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
        num_embeds_ada_norm=1000, activation_fn="gelu-approximate",
    )
    return PixArtAlphaPipeline(tokenizer=tok, text_encoder=te, vae=_vae("pixart"), transformer=transformer,
                               scheduler=_scheduler("pixart"))


def make_flux(tmp: Path):
    from diffusers import FluxPipeline, FluxTransformer2DModel

    tok, tok2 = _clip_tokenizer(tmp / "clip"), _t5_tokenizer()
    te = _clip_text(tok, 32)  # CLIP-L: pooled output only
    te2 = _t5_encoder(tok2, 64)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=2, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=64, pooled_projection_dim=32,
        guidance_embeds=True,  # FLUX.1-dev is guidance-distilled
        axes_dims_rope=(4, 6, 6),  # RoPE over (text/index, row, col); sums to the head dim
    )
    return FluxPipeline(scheduler=_scheduler("flux"), vae=_vae("flux"), text_encoder=te, tokenizer=tok,
                        text_encoder_2=te2, tokenizer_2=tok2, transformer=transformer)


def make_dinov2(tmp: Path):
    """DINOv2-G's layout (patch 14, SwiGLU MLP, layer scale) at toy widths: a 224 px input gives
    the same 16x16 token grid as the tiny DiTs at 256 px."""
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=4,
                       patch_size=14, image_size=TINY_ENCODER_RESOLUTION, use_swiglu_ffn=True,
                       layerscale_value=1.0, qkv_bias=True)
    return Dinov2Model(cfg).eval()


def tiny_builder(family: str) -> Callable[[Path], Any]:
    """The function making the tiny ``family`` model (``make_<family>(workdir)``, unsaved), from
    the family's record in :data:`trace_edges.families.FAMILIES`; resolving it builds nothing."""
    return globals()[family_record(family).tiny_builder]


def build_tiny(family: str, out_dir: str | Path, *, seed: int = 0) -> Path:
    """Build the tiny ``family`` pipeline with random weights from ``seed`` into ``out_dir``.

    The directory is replaced atomically (built in a sibling temp dir, then renamed).
    Returns ``out_dir``.
    """
    from trace_edges.hub import build_atomically

    return build_atomically(tiny_builder(family), out_dir, seed=seed)


def build_all(out_root: str | Path, *, seed: int = 0,
              families: tuple[str, ...] = FAMILIES) -> dict[str, Path]:
    """Build every tiny family under ``out_root/<family>``; returns ``{family: path}``."""
    out_root = Path(out_root)
    return {f: build_tiny(f, out_root / f, seed=seed) for f in families}


def tiny_spec(family: str, path: str | Path, **extra: Any) -> dict[str, Any]:
    """The backbone spec that loads a tiny model built by :func:`build_tiny`."""
    res = TINY_ENCODER_RESOLUTION if family in ENCODER_FAMILIES else TINY_RESOLUTION
    return {"family": family, "model": str(path), "revision": None, "resolution": res, **extra}


_TINY_ROOT: list[Path] = []


def tiny_model_dir(family: str, *, seed: int = 0) -> Path:
    """Build (once per process) the tiny ``family`` model into a private temp dir; its path.

    For tests: every caller in the process shares the same build (removed at exit).
    """
    return _tiny_model_dir(family, seed)


@functools.lru_cache(maxsize=None)
def _tiny_model_dir(family: str, seed: int) -> Path:
    if not _TINY_ROOT:
        root = Path(tempfile.mkdtemp(prefix="trace_edges_tiny_"))
        atexit.register(shutil.rmtree, root, True)
        _TINY_ROOT.append(root)
    return build_tiny(family, _TINY_ROOT[0] / f"{family}-seed{seed}", seed=seed)


@functools.lru_cache(maxsize=None)
def tiny_backbone(family: str, *, seed: int = 0, **extra: Any):
    """The tiny ``family`` model loaded through :func:`trace_edges.backbones.load_backbone`
    (float32, CPU, ``TINY_RESOLUTION``), built and loaded once per process. Shared: callers
    must not leave it modified. ``extra`` spec keys (e.g. ``drop_t5=True``) give separate loads."""
    from trace_edges.backbones import load_backbone

    return load_backbone(tiny_spec(family, tiny_model_dir(family, seed=seed), **extra))


if __name__ == "__main__":  # python -m trace_edges.backbones.tiny OUT_ROOT
    import sys

    for fam, p in build_all(sys.argv[1] if len(sys.argv) > 1 else "tiny_models").items():
        print(fam, p)
