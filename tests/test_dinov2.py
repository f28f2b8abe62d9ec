"""DINOv2, the paper's non-diffusion control of Table 5 (family ``dinov2``, docs/backbones.md).

- The forward pre-hook capture reproduces the model's OWN attention probabilities (transformers'
  eager attention with output_attentions), patch->patch block renormalised, for every layer, and
  leaves the model's output unchanged.
- The teacher on an encoder: one step (t = 0), no IEP curve, t* = 0, and its ABDiv equals ABDiv of
  the naive head- and layer-averaged attention built from the model's own maps.
- The tiny build is deterministic; bad inputs (resolution, timestep, missing model, a student on
  an encoder) give clear errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trace_edges.backbones import load_backbone
from trace_edges.backbones.tiny import build_tiny, tiny_backbone, tiny_model_dir, tiny_spec
from trace_edges.config import check_consistency, validate
from trace_edges.errors import ConfigError, DataError
from trace_edges.teacher.capture import CaptureError, attention_probs, capture_qk
from trace_edges.teacher.divergence import abdiv
from trace_edges.teacher.trajectory import run_teacher


@pytest.fixture(scope="module")
def bb():
    return tiny_backbone("dinov2")


@pytest.fixture(scope="module")
def rgb():
    return np.random.default_rng(0).integers(0, 256, (90, 130, 3), dtype=np.uint8)


def _own_attentions(bb, x):
    """The model's own attention probabilities (eager path), [layers] x [heads, 1+N, 1+N]."""
    impl = bb.model.config._attn_implementation
    bb.model.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            out = bb.model(pixel_values=x, output_attentions=True)
    finally:
        bb.model.config._attn_implementation = impl
    return out, [a[0].double() for a in out.attentions]


def test_capture_reproduces_the_models_own_attention_and_changes_nothing(bb, rgb):
    x = bb.encode(rgb)
    assert x.shape == (1, 3, 224, 224)
    _, own = _own_attentions(bb, x)
    plain = bb.predict(x, 0)
    with capture_qk(bb) as cap:
        hidden = bb.predict(x, 0)
        caps = cap.pop()
    assert [c.name for c in caps] == [s.name for s in bb.attention_sites()]
    assert len(caps) == bb.model.config.num_hidden_layers == 2
    assert torch.equal(hidden, plain)  # the hooks recorded, they did not alter
    n = 16 * 16
    for c, a in zip(caps, own):
        assert c.grid == (16, 16) and c.kind == "vit" and tuple(c.q.shape) == (2, n, 16)
        block = a[:, 1:, 1:]                       # CLS dropped (queries and keys) ...
        block = block / block.sum(-1, keepdim=True)  # ... rows renormalised over the patch keys
        assert torch.allclose(attention_probs(c, dtype=torch.float64), block, atol=1e-6)


def test_capture_hooks_are_removed_on_exit(bb, rgb):
    x = bb.encode(rgb)
    with capture_qk(bb) as cap:
        bb.predict(x, 0)
        cap.pop()
    for site in bb.attention_sites():
        assert not site.module._forward_pre_hooks
    with capture_qk(bb) as cap:
        with pytest.raises(CaptureError, match="no attention site was captured"):
            cap.pop()


def test_teacher_on_an_encoder_is_abdiv_of_the_naive_attention(bb, rgb):
    params = validate({"backbone": tiny_spec("dinov2", tiny_model_dir("dinov2"))}, block="teacher")
    res = run_teacher(bb, rgb, params)
    assert res.steps == [0] and res.divergence_curve == {} and res.t_star == 0
    assert res.abdiv.shape == (1, 16, 16) and res.grid == (16, 16)
    # naive reference: the model's own maps, patch block renormalised, mean over heads and layers
    _, own = _own_attentions(bb, bb.encode(rgb))
    sa = sum((a[:, 1:, 1:] / a[:, 1:, 1:].sum(-1, keepdim=True)).mean(0) for a in own) / len(own)
    ref = abdiv(sa, (16, 16), "kl").numpy()
    assert np.allclose(res.abdiv[0], ref, rtol=1e-4, atol=1e-6)
    assert res.abdiv[0].std() > 0  # a real map, not a constant


def test_tiny_dinov2_build_is_deterministic(tmp_path):
    a = build_tiny("dinov2", tmp_path / "a", seed=3)
    b = build_tiny("dinov2", tmp_path / "b", seed=3)
    c = build_tiny("dinov2", tmp_path / "c", seed=4)
    wa, wb, wc = ((p / "model.safetensors").read_bytes() for p in (a, b, c))
    assert wa == wb and wa != wc
    assert (a / "config.json").is_file()


def test_bad_inputs_give_clear_errors(bb, tmp_path):
    with pytest.raises(ConfigError, match="not a multiple of the patch size 14"):
        load_backbone({**tiny_spec("dinov2", tiny_model_dir("dinov2")), "resolution": 200})
    with pytest.raises(ConfigError, match="no timestep 99"):
        bb.predict(bb.encode(np.zeros((32, 32, 3), np.uint8)), 99)
    with pytest.raises(DataError, match="build-tiny --family dinov2"):
        load_backbone({"family": "dinov2", "model": str(tmp_path), "resolution": 224})
    assert bb.timesteps(100) == [0]


def test_no_student_from_an_encoder(bb):
    from trace_edges.student.model import StudentModel

    cfg = {"teacher": {"backbone": {"family": "dinov2"}}, "edges": {"sources": ["sobel", "trace_student"]}}
    with pytest.raises(ConfigError, match="image encoder"):
        check_consistency(cfg)
    check_consistency({**cfg, "edges": {"sources": ["sobel", "trace_teacher"]}})  # a teacher alone is fine
    cells = {"grids": {"decoder": {"cells": {"light": {"edges": "student"}}}}}
    with pytest.raises(ConfigError, match="decoder.light"):
        check_consistency({**cfg, "edges": {"sources": ["trace_teacher"]}, "ablations": cells})
    with pytest.raises(ConfigError, match="not a diffusion model"):
        StudentModel(bb, validate({}, block="student"))
