"""Real-size architectures (backbones/real.py) vs the tiny builders: the same code paths.

Everything real-size is built on the meta device (shapes only, nothing allocated), so these tests
are cheap; the one real forward uses PixArt truncated to one block at 256 px.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from trace_edges.backbones.real import (REAL_ARCHS, build_denoiser, denoiser_config, param_count, real_arch,
                                        real_backbone)
from trace_edges.backbones.tiny import tiny_builder
from trace_edges.errors import ConfigError
from trace_edges.families import FAMILIES
from trace_edges.teacher.capture import capture_qk

#: the sizes the model cards / papers publish (billions of denoiser parameters, as rounded there)
PUBLISHED_B = {"sd15": 0.86, "sdxl": 2.6, "sd3": 8.1, "pixart": 0.6, "flux": 12.0, "dinov2": 1.1}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """family -> (real denoiser on meta, tiny denoiser)."""
    out = {}
    for fam in FAMILIES:
        built = tiny_builder(fam)(tmp_path_factory.mktemp(fam))
        tiny = built if fam == "dinov2" else getattr(built, "unet", None) or built.transformer
        out[fam] = (build_denoiser(fam, device="meta"), tiny)
    return out


def test_every_family_has_a_real_arch():
    assert set(REAL_ARCHS) == set(FAMILIES)
    for fam, arch in REAL_ARCHS.items():
        assert arch.hub_id and arch.revision and arch.resolution > 0
        assert (arch.vae is None) == (FAMILIES[fam].kind == "encoder")
    with pytest.raises(ConfigError):
        real_arch("sd2")


@pytest.mark.parametrize("family", FAMILIES)
def test_real_size_matches_published_parameter_count(pairs, family):
    real, _ = pairs[family]
    assert all(p.device.type == "meta" for p in real.parameters())
    assert param_count(real) / 1e9 == pytest.approx(PUBLISHED_B[family], rel=0.05)


@pytest.mark.parametrize("family", FAMILIES)
def test_same_module_classes_and_attention_processors(pairs, family):
    """Every layer class and every attention processor class of the real model occurs in the tiny
    one and back: no code path of the real model is missing from the tiny tests."""
    real, tiny = pairs[family]
    classes = lambda m: {type(x).__name__ for x in m.modules()}  # noqa: E731
    procs = lambda m: {type(x.processor).__name__ for x in m.modules() if hasattr(x, "processor")}  # noqa: E731
    assert classes(real) == classes(tiny)
    assert procs(real) == procs(tiny)


def _switches(family: str, model) -> dict:
    c = model.config
    if family in ("sd15", "sdxl"):
        return {"linear_projection": bool(c.use_linear_projection),
                "attention_per_level": [t.startswith("CrossAttn") for t in c.down_block_types][:1]
                + [t.startswith("CrossAttn") for t in c.down_block_types][-1:],
                "heads_per_level_tuple": isinstance(c.attention_head_dim, (tuple, list)),
                "multi_layer_transformers": max(np.atleast_1d(c.transformer_layers_per_block)) > 1,
                "addition_embed": c.addition_embed_type, "cross_attention": c.cross_attention_dim is not None}
    if family == "sd3":
        return {"qk_norm": c.qk_norm, "dual_attention": bool(c.dual_attention_layers),
                "joint": {type(b.attn.processor).__name__ for b in model.transformer_blocks},
                "last_context_pre_only": model.transformer_blocks[-1].context_pre_only,
                "patch": c.patch_size}
    if family == "pixart":
        return {"norm": c.norm_type, "attention_bias": c.attention_bias,
                "learned_sigma": c.out_channels == 2 * c.in_channels,
                "size_conditions": model.use_additional_conditions, "patch": c.patch_size,
                "cross_attention": model.transformer_blocks[0].attn2 is not None}
    if family == "flux":
        return {"double": c.num_layers > 0, "single": c.num_single_layers > 0, "guidance": c.guidance_embeds,
                "rope_covers_head": sum(c.axes_dims_rope) == c.attention_head_dim, "patch": c.patch_size,
                "qk_norm": {type(b.attn.norm_q).__name__ for b in model.transformer_blocks}}
    if family == "dinov2":
        return {"swiglu": c.use_swiglu_ffn, "layerscale": c.layerscale_value is not None, "qkv_bias": c.qkv_bias,
                "patch": c.patch_size, "registers": getattr(c, "num_register_tokens", 0)}
    raise AssertionError(family)


@pytest.mark.parametrize("family", FAMILIES)
def test_same_architectural_switches(pairs, family):
    real, tiny = pairs[family]
    assert _switches(family, real) == _switches(family, tiny)


def test_head_layout_is_the_real_one(pairs):
    """The full-width head layout the rehearsal runs: heads x head_dim per family."""
    def layout(m):
        return sorted({(int(x.heads), int(x.inner_dim) // int(x.heads)) for x in m.modules()
                       if hasattr(x, "processor") and not getattr(x, "is_cross_attention", False)})
    assert layout(pairs["sd3"][0]) == [(38, 64)]
    assert layout(pairs["flux"][0]) == [(24, 128)]
    assert layout(pairs["pixart"][0]) == [(16, 72)]
    assert layout(pairs["sd15"][0]) == [(8, 40), (8, 80), (8, 160)]
    assert layout(pairs["sdxl"][0]) == [(10, 64), (20, 64)]


def test_depth_truncation():
    assert denoiser_config("sd3", 2)["num_layers"] == 2
    cfg = denoiser_config("flux", (1, 2))
    assert (cfg["num_layers"], cfg["num_single_layers"]) == (1, 2)
    full = param_count(build_denoiser("sd3", device="meta"))
    two = param_count(build_denoiser("sd3", depth=2, device="meta"))
    assert two < full / 10
    with pytest.raises(ValueError, match="U-Net"):
        denoiser_config("sd15", 2)
    with pytest.raises(ValueError, match="outside"):
        denoiser_config("sd3", 39)


def test_random_weights_are_seeded():
    a = build_denoiser("pixart", depth=1, seed=3)
    b = build_denoiser("pixart", depth=1, seed=3)
    c = build_denoiser("pixart", depth=1, seed=4)
    w = "transformer_blocks.0.attn1.to_q.weight"
    assert torch.equal(a.get_parameter(w), b.get_parameter(w))
    assert not torch.equal(a.get_parameter(w), c.get_parameter(w))
    assert build_denoiser("pixart", depth=1, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_real_backbone_runs_the_real_width(one_torch_thread):
    """PixArt-XL at full width, one block, 256 px: predict and capture see 16 heads x 72."""
    bb = real_backbone("pixart", resolution=256, depth=1)
    assert bb.text_encoder_attrs and all(getattr(bb.pipe, n) is None for n in bb.text_encoder_attrs)
    assert bb.null_condition()["encoder_hidden_states"].shape == (1, 120, 4096)
    z = bb.encode(np.full((256, 256, 3), 128, np.uint8))
    assert z.shape == (1, 4, 32, 32)
    with torch.no_grad(), capture_qk(bb) as cap:
        out = bb.predict(z, 499)
        (c,) = cap.pop()
    assert out.shape == z.shape and torch.isfinite(out).all()
    assert (c.heads, c.head_dim, c.grid) == (16, 72, (16, 16))
    assert bb.model_info()["model"] == "random-weights:PixArt-alpha/PixArt-XL-2-1024-MS"
