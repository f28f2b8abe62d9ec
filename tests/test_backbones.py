"""Backbone adapters on tiny random models of the five real architectures (no download)."""

from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import numpy as np
import pytest
import torch

from trace_edges.backbones import load_backbone
from trace_edges.backbones.tiny import (FAMILIES, TINY_RESOLUTION, build_tiny, tiny_backbone, tiny_model_dir,
                                        tiny_spec)
from trace_edges.data.images import load_rgb
from trace_edges.errors import ConfigError, DataError

COCO_IMAGE = Path(__file__).resolve().parents[1] / "data/coco_mini/images/000000397133.jpg"

# (kind, latent channels, number of sites, sorted set of grids) at TINY_RESOLUTION = 256
EXPECTED = {
    "sd15": ("eps", 4, 7, {(32, 32), (16, 16), (8, 8)}),
    "sdxl": ("eps", 4, 11, {(16, 16), (8, 8)}),
    "sd3": ("flow", 16, 3, {(16, 16)}),
    "pixart": ("eps", 4, 3, {(16, 16)}),
    "flux": ("flow", 16, 4, {(16, 16)}),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # 2 shared cores: oversubscribed OpenMP threads make tiny convs 20x slower
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def rgb():
    return load_rgb(COCO_IMAGE)


@pytest.fixture(scope="session", params=FAMILIES)
def bb(request):
    return tiny_backbone(request.param)


def test_load_encode_predict(bb, rgb):
    kind, c, n_sites, grids = EXPECTED[bb.family]
    assert bb.kind == kind
    s = TINY_RESOLUTION // 8
    assert bb.latent_shape == (1, c, s, s)
    z = bb.encode(rgb)
    assert z.shape == (1, c, s, s) and z.dtype == torch.float32 and torch.isfinite(z).all()
    assert torch.equal(z, bb.encode(rgb))  # posterior mean: deterministic
    with torch.inference_mode():
        for t in (0, 499, 999):
            out = bb.predict(z, t)
            assert out.shape == z.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
        assert not torch.equal(bb.predict(z, 0), bb.predict(z, 499))  # the timestep matters
    sites = bb.attention_sites()
    assert len(sites) == n_sites
    assert {s.grid for s in sites} == grids
    assert len({s.name for s in sites}) == n_sites
    for site in sites:
        assert bb.denoiser.get_submodule(site.name) is site.module
        assert not site.name.endswith("attn2") or bb.family == "sd3"  # U-Net cross-attention excluded


def test_encode_matches_vae_convention(bb, rgb):
    """(posterior mean - shift_factor) * scaling_factor, the inverse of the pipeline's decode."""
    x = bb.preprocess(rgb)
    assert x.shape == (1, 3, TINY_RESOLUTION, TINY_RESOLUTION) and -1 <= x.min() and x.max() <= 1
    with torch.no_grad():
        mean = bb.vae.encode(x).latent_dist.mean
    cfg = bb.vae.config
    shift = getattr(cfg, "shift_factor", None) or 0.0
    if bb.family in ("sd3", "flux"):
        assert shift != 0.0
    expected = (mean - shift) * cfg.scaling_factor
    torch.testing.assert_close(bb.encode(rgb), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(bb._unscale_latent(expected), mean, rtol=1e-5, atol=1e-6)
    img = bb.decode(expected)
    assert img.shape == (1, 3, TINY_RESOLUTION, TINY_RESOLUTION) and torch.isfinite(img).all()


def test_null_condition(bb):
    cond = bb.null_condition()
    keys = {
        "sd15": {"encoder_hidden_states"},
        "sdxl": {"encoder_hidden_states", "added_cond_kwargs"},
        "sd3": {"encoder_hidden_states", "pooled_projections"},
        "pixart": {"encoder_hidden_states", "encoder_attention_mask", "added_cond_kwargs"},
        "flux": {"encoder_hidden_states", "pooled_projections", "txt_ids", "img_ids", "guidance"},
    }[bb.family]
    assert set(cond) == keys
    for name in bb.text_encoder_attrs:  # released after the one null-prompt encoding
        assert getattr(bb.pipe, name, None) is None
    ehs = cond["encoder_hidden_states"]
    assert ehs.shape[0] == 1 and torch.isfinite(ehs).all()
    if bb.family == "sdxl":
        tid = cond["added_cond_kwargs"]["time_ids"]
        assert tid.tolist() == [[TINY_RESOLUTION, TINY_RESOLUTION, 0, 0, TINY_RESOLUTION, TINY_RESOLUTION]]
        assert ehs.shape[-1] == 32 + 48  # both CLIP encoders' penultimate states, concatenated
    if bb.family == "sd3":
        assert ehs.shape[1] == 77 + 256  # CLIP (77) + T5 (256) tokens
        assert cond["pooled_projections"].shape == (1, 32 + 48)
    if bb.family == "pixart":
        assert cond["encoder_attention_mask"].sum().item() == 1  # "" -> just </s>
        ac = cond["added_cond_kwargs"]
        assert ac["resolution"].tolist() == [[TINY_RESOLUTION, TINY_RESOLUTION]]
        assert ac["aspect_ratio"].tolist() == [[1.0]]
    if bb.family == "flux":
        assert cond["guidance"].tolist() == [3.5]
        assert cond["img_ids"].shape == ((TINY_RESOLUTION // 16) ** 2, 3)
        assert cond["txt_ids"].shape == (512, 3)


def test_timesteps(bb):
    assert bb.timesteps(100) == [0, 99, 199, 299, 399, 499, 599, 699, 799, 899, 999]
    assert bb.timesteps(1) == list(range(1000))
    assert bb.timesteps(1000) == [0, 999]
    for bad in (0, -1, 1001, 2.5):
        with pytest.raises(ConfigError):
            bb.timesteps(bad)
    with pytest.raises(ValueError):
        bb.predict(torch.zeros(bb.latent_shape), 1000)


def test_schedule_and_transfer(bb):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(bb.latent_shape, generator=g), torch.randn(bb.latent_shape, generator=g)
    if bb.kind == "eps":
        ab = bb.alphas_cumprod
        assert ab.shape == (1000,) and ab[0] > 0.99 and ab[-1] < 0.01 and (ab[1:] < ab[:-1]).all()
        target = noise  # the exact eps of x_t = sqrt(ab) x0 + sqrt(1 - ab) eps
    else:
        sig = torch.tensor([bb.sigma(t) for t in range(1000)])
        assert (sig[1:] > sig[:-1]).all() and abs(bb.sigma(999) - 1.0) < 1e-6 and bb.sigma(0) < 0.01
        target = noise - x0  # the exact velocity
    # transferring with the exact model output is exact (DDIM / flow-Euler are exact on the true path)
    x_a = bb.add_noise(x0, noise, 199)
    x_b = bb.step(x_a, 199, 599, target)
    torch.testing.assert_close(x_b, bb.add_noise(x0, noise, 599), rtol=1e-4, atol=1e-4)


def test_sigma_maps():
    sd3 = tiny_backbone("sd3")
    for t in (0, 99, 399, 999):
        u = (t + 1) / 1000
        assert math.isclose(sd3.sigma(t), 3.0 * u / (1 + 2.0 * u), rel_tol=1e-5)  # SD3 static shift 3
        assert math.isclose(float(sd3.model_timesteps[t]), 1000 * sd3.sigma(t), rel_tol=1e-5)
    flux = tiny_backbone("flux")
    seq = (TINY_RESOLUTION // 16) ** 2  # 256 packed tokens -> mu = base_shift = 0.5
    mu = 0.5 + (1.15 - 0.5) / (4096 - 256) * (seq - 256)
    for t in (0, 99, 399, 999):
        u = (t + 1) / 1000
        expected = math.exp(mu) / (math.exp(mu) + (1 / u - 1))
        assert math.isclose(flux.sigma(t), expected, rel_tol=1e-5)


def test_v_prediction_conversion():
    sd15 = tiny_backbone("sd15")
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(sd15.latent_shape, generator=g), torch.randn(sd15.latent_shape, generator=g)
    t = 299
    a = sd15.alphas_cumprod[t]
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = a.sqrt() * eps - (1 - a).sqrt() * x0
    old = sd15.prediction_type
    try:
        sd15.prediction_type = "v_prediction"
        torch.testing.assert_close(sd15._to_common(v, x_t, t), eps, rtol=1e-4, atol=1e-5)
        sd15.prediction_type = "sample"
        torch.testing.assert_close(sd15._to_common(x0, x_t, t), eps, rtol=1e-4, atol=1e-4)
    finally:
        sd15.prediction_type = old


def test_pixart_drops_learned_sigma():
    px = tiny_backbone("pixart")
    assert px.denoiser.config.out_channels == 2 * px.latent_channels
    z = torch.zeros(px.latent_shape)
    with torch.inference_mode():
        full = px.denoiser(z, timestep=torch.tensor([10]), **px.null_condition(), return_dict=False)[0]
        torch.testing.assert_close(px.predict(z, 10), full[:, :4], rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_build_is_deterministic(family, tmp_path):
    ref = tiny_model_dir(family, seed=0)
    again = build_tiny(family, tmp_path / "a", seed=0)
    other = build_tiny(family, tmp_path / "b", seed=1)
    files = sorted(p.relative_to(ref) for p in ref.rglob("*.safetensors"))
    assert len(files) >= 3  # vae + denoiser + text encoder(s)
    assert files == sorted(p.relative_to(again) for p in again.rglob("*.safetensors"))
    for rel in files:
        assert (ref / rel).read_bytes() == (again / rel).read_bytes(), rel
    denoiser = "unet" if family in ("sd15", "sdxl") else "transformer"
    f = next((other / denoiser).glob("*.safetensors"))
    assert f.read_bytes() != next((ref / denoiser).glob("*.safetensors")).read_bytes()
    assert (ref / "model_index.json").read_bytes() == (again / "model_index.json").read_bytes()


def test_tokenizers_load_from_disk():
    from transformers import CLIPTokenizer, T5TokenizerFast

    d = tiny_model_dir("sd3")
    clip = CLIPTokenizer.from_pretrained(d / "tokenizer")
    t5 = T5TokenizerFast.from_pretrained(d / "tokenizer_3")
    assert clip.model_max_length == 77 and clip("").input_ids == [clip.bos_token_id, clip.eos_token_id]
    assert t5("").input_ids == [t5.eos_token_id] and t5.pad_token_id == 0
    assert t5("a cat").input_ids[-1] == t5.eos_token_id and t5.unk_token_id not in t5("a cat").input_ids


def test_sd3_drop_t5():
    full = tiny_backbone("sd3")
    bb = tiny_backbone("sd3", drop_t5=True)
    ehs = bb.null_condition()["encoder_hidden_states"]
    assert ehs.shape == full.null_condition()["encoder_hidden_states"].shape
    assert torch.count_nonzero(ehs[:, 77:]) == 0  # T5 part: zeros, as the pipeline does
    assert torch.count_nonzero(full.null_condition()["encoder_hidden_states"][:, 77:]) > 0
    torch.testing.assert_close(ehs[:, :77], full.null_condition()["encoder_hidden_states"][:, :77])
    assert bb.model_info()["drop_t5"] is True


def test_flux_guidance_spec():
    bb = load_backbone(tiny_spec("flux", tiny_model_dir("flux"), guidance=1.0))
    assert bb.null_condition()["guidance"].tolist() == [1.0]
    assert bb.model_info()["guidance"] == 1.0


def test_model_info():
    info = tiny_backbone("sd3").model_info()
    assert info["family"] == "sd3" and info["local"] is True and info["commit"] is None
    assert info["resolution"] == TINY_RESOLUTION and info["dtype"] == "float32"
    assert info["pipeline_class"] == "StableDiffusion3Pipeline"
    assert info["denoiser_class"] == "SD3Transformer2DModel"


def test_spec_errors(tmp_path):
    d = str(tiny_model_dir("sd15"))
    with pytest.raises(ConfigError, match="unknown backbone family"):
        load_backbone({"family": "sd2", "model": d})
    with pytest.raises(ConfigError, match="unknown key"):
        load_backbone({"family": "sd15", "model": d, "resolutoin": 256})
    with pytest.raises(ConfigError, match="drop_t5"):
        load_backbone({"family": "sd15", "model": d, "drop_t5": True})
    with pytest.raises(ConfigError, match="guidance"):
        load_backbone({"family": "sd3", "model": d, "guidance": 2.0})
    with pytest.raises(ConfigError, match="multiple of 32"):
        load_backbone({"family": "sd15", "model": d, "resolution": 240})
    with pytest.raises(DataError, match="cannot load"):
        load_backbone({"family": "sd15", "model": str(tmp_path / "missing")})


def test_encode_rejects_bad_input(bb):
    with pytest.raises(DataError):
        bb.encode(np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError):
        bb.encode(np.zeros((8, 8, 3), np.float32))
