"""Q/K capture through diffusers' attention-processor API, on the five tiny architectures."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dataclasses
from pathlib import Path

import pytest
import torch

from trace_edges.backbones.tiny import FAMILIES, tiny_backbone
from trace_edges.data.images import load_rgb
from trace_edges.teacher.capture import CaptureError, CapturedQK, attention_probs, capture_qk

COCO_IMAGE = Path(__file__).resolve().parents[1] / "data/coco_mini/images/000000397133.jpg"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session", params=FAMILIES)
def bb(request):
    return tiny_backbone(request.param)


@pytest.fixture(scope="session")
def z0_cache():
    return {}


@pytest.fixture
def z0(bb, z0_cache):
    if bb.family not in z0_cache:
        z0_cache[bb.family] = bb.encode(load_rgb(COCO_IMAGE))
    return z0_cache[bb.family]


def _noisy(bb, z0, t):
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(t))
    return bb.add_noise(z0, noise, t)


def _processors(sites):
    return [s.module.processor for s in sites]


def test_capture_shapes_and_unchanged_output(bb, z0):
    sites = bb.attention_sites()
    originals = _processors(sites)
    for t in (0, 499):
        x_t = _noisy(bb, z0, t)
        with torch.inference_mode():
            ref = bb.predict(x_t, t)
            with capture_qk(bb) as cap:
                out = bb.predict(x_t, t)
                caps = cap.pop()
                with pytest.raises(CaptureError, match="no attention site was captured"):
                    cap.pop()  # the buffer was cleared
        assert torch.equal(out, ref), "capture changed the model output"
        assert [c.name for c in caps] == [s.name for s in sites]
        for c, s in zip(caps, sites):
            assert isinstance(c, CapturedQK) and c.grid == s.grid and c.kind == s.kind
            heads = s.module.heads
            assert c.q.shape == c.k.shape == (heads, s.grid[0] * s.grid[1], s.module.inner_dim // heads)
            assert c.heads >= 2 and c.head_dim >= 8
            assert torch.isfinite(c.q).all() and torch.isfinite(c.k).all()
            assert c.scale == pytest.approx(c.head_dim ** -0.5)
    assert all(a is b for a, b in zip(_processors(sites), originals)), "processors not restored"


def test_processors_restored_after_exception(bb, z0):
    sites = bb.attention_sites()
    originals = _processors(sites)
    with pytest.raises(RuntimeError, match="boom"):
        with capture_qk(bb):
            assert all(type(p).__name__ == "_RecordingProcessor" for p in _processors(sites))
            with torch.inference_mode():
                bb.predict(z0, 0)
            raise RuntimeError("boom")
    assert all(a is b for a, b in zip(_processors(sites), originals))


def _record_inputs(sites):
    """Forward pre-hooks (test only) that keep each site's call arguments."""
    seen, handles = {}, []
    for s in sites:
        def hook(module, args, kwargs, name=s.name):
            seen[name] = (args, dict(kwargs))
        handles.append(s.module.register_forward_pre_hook(hook, with_kwargs=True))
    return seen, handles


def _restricted_output(c: CapturedQK, v: torch.Tensor) -> torch.Tensor:
    """softmax over the image keys, applied to image values: [n, heads * head_dim]."""
    p = attention_probs(c)  # [heads, n, n]
    return (p @ v).transpose(0, 1).flatten(1)


def test_qk_reproduce_the_processor(bb, z0):
    """Independent check of every captured Q/K against the module's own computation."""
    sites = bb.attention_sites()
    x_t = _noisy(bb, z0, 499)
    seen, handles = _record_inputs(sites)
    try:
        with torch.inference_mode(), capture_qk(bb) as cap:
            bb.predict(x_t, 499)
            caps = cap.pop()
    finally:
        for h in handles:
            h.remove()
    with torch.inference_mode():
        for c, s in zip(caps, sites):
            args, kwargs = seen[s.name]
            attn, proc = s.module, s.module.processor
            hs = kwargs.get("hidden_states", args[0] if args else None)
            n = c.q.shape[1]
            if bb.family in ("sd15", "sdxl", "pixart"):
                # the classic processor's own probabilities: baddbmm(alpha=attn.scale) + softmax
                q = attn.head_to_batch_dim(attn.to_q(hs))
                k = attn.head_to_batch_dim(attn.to_k(hs))
                probs = attn.get_attention_scores(q, k, None)  # [heads, n, n] for batch 1
                torch.testing.assert_close(attention_probs(c), probs, rtol=1e-5, atol=1e-6)
                # and the module output is reproduced from the captured Q/K
                v = attn.to_v(hs)[0].view(n, attn.heads, -1).transpose(0, 1)
                ref = proc(attn, hs)
                torch.testing.assert_close(attn.to_out[0](_restricted_output(c, v))[None], ref,
                                           rtol=1e-4, atol=1e-5)
            elif bb.family == "sd3":
                # JointAttnProcessor2_0 without the context stream = image-only self-attention
                ref = proc(attn, hs, encoder_hidden_states=None)
                v = attn.to_v(hs)[0].view(n, attn.heads, -1).transpose(0, 1)
                torch.testing.assert_close(attn.to_out[0](_restricted_output(c, v))[None], ref,
                                           rtol=1e-4, atol=1e-5)
            else:
                # FLUX: run the original processor on the full joint sequence with a mask that hides
                # the text keys from the image queries -> its image rows are our restricted softmax
                ehs = args[1] if len(args) > 1 else kwargs.get("encoder_hidden_states")
                rot = args[3] if len(args) > 3 else kwargs.get("image_rotary_emb")
                total = rot[0].shape[0]
                mask = torch.ones(1, 1, total, total, dtype=torch.bool)
                mask[..., total - n:, : total - n] = False
                out = proc(attn, hs, ehs, mask, rot)
                if s.kind == "joint":
                    ref = out[0]  # image stream, after to_out
                    v = attn.to_v(hs)[0].view(n, attn.heads, -1).transpose(0, 1)
                    mine = attn.to_out[0](_restricted_output(c, v))[None]
                else:
                    ref = out[:, total - n:]  # single-stream: raw attention output, image rows
                    v = attn.to_v(hs)[0, total - n:].view(n, attn.heads, -1).transpose(0, 1)
                    mine = _restricted_output(c, v)[None]
                torch.testing.assert_close(mine, ref, rtol=1e-4, atol=1e-5)


def test_unknown_processor_is_refused(bb):
    from diffusers.models.attention_processor import AttnProcessor2_0

    class PatchedProcessor(AttnProcessor2_0):
        pass

    sites = bb.attention_sites()
    originals = _processors(sites)
    victim = sites[len(sites) // 2]
    victim.module.set_processor(PatchedProcessor())
    try:
        with pytest.raises(CaptureError) as info:
            with capture_qk(bb):
                pass
        msg = str(info.value)
        assert victim.name in msg and "PatchedProcessor" in msg
        assert "update trace_edges.teacher.capture" in msg and "JointAttnProcessor2_0" in msg
        # nothing was installed on the other sites
        assert all(s.module.processor is o for s, o in zip(sites, originals) if s is not victim)
    finally:
        victim.module.set_processor(originals[len(sites) // 2])


def test_grid_mismatch_and_missing_forward_fail_loudly(bb, z0):
    sites = bb.attention_sites()
    originals = _processors(sites)
    wrong = [dataclasses.replace(s, grid=(s.grid[0] + 1, s.grid[1])) for s in sites]
    with pytest.raises(CaptureError, match="grid"):
        with torch.inference_mode(), capture_qk(sites=wrong):
            bb.predict(z0, 0)
    assert all(a is b for a, b in zip(_processors(sites), originals))
    with capture_qk(bb) as cap:
        with pytest.raises(CaptureError, match="no attention site was captured"):
            cap.pop()


def test_nested_capture_refused():
    sd3 = tiny_backbone("sd3")
    with capture_qk(sd3):
        with pytest.raises(CaptureError, match="nested"):
            with capture_qk(sd3):
                pass


def test_callback_without_storing_and_gradients():
    bb = tiny_backbone("sd3")
    got = []
    with torch.inference_mode(), capture_qk(bb, callback=got.append, store=False) as cap:
        bb.predict(torch.zeros(bb.latent_shape), 0)
        assert cap.pop() == []
    assert [c.name for c in got] == [s.name for s in bb.attention_sites()]
    # detach=False keeps the graph (for distilling through the attention maps)
    x = torch.zeros(bb.latent_shape, requires_grad=True)
    with capture_qk(bb, detach=False) as cap:
        bb.predict(x, 0)
        c = cap.pop()[0]
    assert c.q.requires_grad
    (c.q.sum() + c.k.sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with capture_qk(bb) as cap:
        bb.predict(x, 0)
        assert not cap.pop()[0].q.requires_grad


def test_batch_must_be_one():
    bb = tiny_backbone("pixart")
    x = torch.zeros((2,) + bb.latent_shape[1:])
    with pytest.raises(ValueError):
        bb.predict(x, 0)


def test_classic_attn_processor_is_supported():
    """U-Net site under the classic AttnProcessor (scale = attn.scale): same captured Q/K."""
    from diffusers.models.attention_processor import AttnProcessor

    bb = tiny_backbone("sd15")
    sites = bb.attention_sites()
    originals = _processors(sites)
    x = torch.randn(bb.latent_shape, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        with capture_qk(bb) as cap:
            ref_out = bb.predict(x, 99)
            ref = cap.pop()
        try:
            for s in sites:
                s.module.set_processor(AttnProcessor())
            with capture_qk(bb) as cap:
                out = bb.predict(x, 99)
                got = cap.pop()
        finally:
            for s, p in zip(sites, originals):
                s.module.set_processor(p)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)
    for a, b in zip(ref, got):
        assert a.scale == pytest.approx(b.scale)
        torch.testing.assert_close(attention_probs(a), attention_probs(b), rtol=1e-4, atol=1e-6)


def test_unet_grids_follow_the_latent_shape():
    """Multi-scale U-Net grids for a non-square latent (24 x 40): 24x40, 12x20 and 6x10 levels."""
    bb = tiny_backbone("sd15")
    shape = (1, 4, 24, 40)
    sites = bb.attention_sites(shape)
    assert {s.grid for s in sites} == {(24, 40), (12, 20), (6, 10)}
    with torch.inference_mode(), capture_qk(bb, sites) as cap:
        bb.predict(torch.zeros(shape), 10)
        caps = cap.pop()
    assert [c.q.shape[1] for c in caps] == [s.grid[0] * s.grid[1] for s in sites]


def test_lse_tap_keeps_the_output_and_gives_the_forward_lse(bb, z0):
    """capture_qk(lse=True): the forward's SDPA is answered by the CPU flash kernel it dispatches
    to anyway (the module output is bitwise the stock one), and each site's lse is the row
    log-sum-exp over the forward's keys: exactly the image keys' for self-attention sites, an upper
    bound of it for joint attention (text keys too)."""
    x_t = _noisy(bb, z0, 499)
    with torch.inference_mode():
        ref = bb.predict(x_t, 499)
        with capture_qk(bb, lse=True) as cap:
            out = bb.predict(x_t, 499)
            caps = cap.pop()
    assert torch.equal(out, ref), "the lse tap changed the model output"
    for c, s in zip(caps, bb.attention_sites()):
        assert c.lse is not None and c.lse.shape == c.q.shape[:2], c.name
        own = torch.logsumexp(c.scale * c.q.float() @ c.k.float().transpose(-1, -2), -1)
        assert c.lse_image_only == (s.kind == "self"), c.name
        if c.lse_image_only:
            torch.testing.assert_close(c.lse, own, rtol=1e-5, atol=1e-5)
        else:
            assert bool((c.lse >= own - 1e-5).all()), c.name
