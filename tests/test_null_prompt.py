"""The null_prompt stage: the empty prompt's text-encoder outputs computed once per model and loaded
by the denoiser stages instead of the text encoders (trace_edges.null_prompt)."""

from __future__ import annotations

import json

import pytest
import torch

from trace_edges.backbones.loader import load_configured_backbone
from trace_edges.null_prompt import artifact_name, identity, load_null_text, write_null_text
from trace_edges.backbones.tiny import FAMILIES, TINY_RESOLUTION, tiny_backbone, tiny_model_dir
from trace_edges.cli import main
from trace_edges.config import validate
from trace_edges.errors import DataError


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


def _block(family: str, **extra) -> dict:
    bb = {"family": family, "model": str(tiny_model_dir(family)), "resolution": TINY_RESOLUTION, **extra}
    return validate({"backbone": bb}, block="teacher")["backbone"]


@pytest.fixture
def no_text_encoder_loads(monkeypatch):
    """Any transformers model load (the text encoders: CLIP, T5) fails; the tiny denoisers and VAEs
    are diffusers models and still load."""
    import transformers

    def refuse(cls, *a, **k):
        raise AssertionError(f"text encoder {cls.__name__} loaded")

    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


@pytest.mark.parametrize("family", FAMILIES)
def test_stage_equals_the_in_process_encoding_and_loads_no_text_encoder(family, tmp_path, request):
    block = _block(family)
    out = tmp_path / f"{artifact_name(block)}.safetensors"
    assert main(["null-prompt", "--params", json.dumps({"backbone": block}), "--out", str(out)]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["identity"] == identity(block) and meta["provenance"]["stage"] == "null_prompt"
    ref = tiny_backbone(family)                      # text encoders loaded, run once, released
    stored = load_null_text(out, block)
    assert _equal(stored, ref.null_text)             # the same tensors, dtype included
    request.getfixturevalue("no_text_encoder_loads")
    bb = load_configured_backbone(block, null_prompt=out)
    for name in bb.text_encoder_attrs:
        assert getattr(bb.pipe, name, None) is None
    assert _equal(bb.null_condition(), ref.null_condition())
    z = torch.randn(bb.latent_shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(bb.predict(z, 499), ref.predict(z, 499))


def test_artifact_key_is_the_model_identity_only():
    base = _block("sd3")
    assert artifact_name(base).startswith("sd3-")
    for same in ({"resolution": 128}, {"device": "cpu"}, {"shard_size": 3}):
        assert artifact_name({**base, **same}) == artifact_name(base)
    for other in ({"model": "elsewhere"}, {"revision": "abc"}, {"dtype": "bfloat16"}, {"drop_t5": True}):
        assert artifact_name({**base, **other}) != artifact_name(base), other
    assert identity(_block("flux", guidance=2.0)) == identity(_block("flux"))


def test_a_foreign_or_corrupt_artifact_is_refused(tmp_path):
    block = _block("sd15")
    out = tmp_path / "np.safetensors"
    write_null_text(block, out)
    with pytest.raises(DataError, match="not for this backbone"):
        load_null_text(out, {**block, "dtype": "bfloat16"})
    with pytest.raises(DataError, match="not found"):
        load_null_text(tmp_path / "missing.safetensors", block)
    out.write_bytes(out.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(DataError, match="sha256"):
        load_null_text(out, block)


def test_trajectory_with_the_stored_embeddings_is_identical(tmp_path, coco_mini, request):
    """The trajectory stage fed the artifact writes the same bytes as the one that encodes the
    prompt itself; with the artifact no text encoder is loaded (no_text_encoder_loads)."""
    from trace_edges.data.coco import prepare
    from trace_edges.stages.teacher import run_trajectory

    cfg = validate({"data": {"root": str(coco_mini), "max_images": 1},
                    "teacher": {"backbone": {"model": str(tiny_model_dir("sd3"))}}})
    prepare(cfg["data"], cfg["edge_gt"], tmp_path / "data")
    manifest, tp = tmp_path / "data/manifest.json", cfg["teacher"]
    out = tmp_path / "np.safetensors"
    write_null_text(tp["backbone"], out)
    ref = tiny_backbone("sd3")                      # the in-process encoding (before the patch)
    request.getfixturevalue("no_text_encoder_loads")
    run_trajectory(tp, manifest, 0, tmp_path / "cached", null_prompt=out)
    run_trajectory(tp, manifest, 0, tmp_path / "inproc", backbone=ref)
    files = sorted(p.name for p in (tmp_path / "cached").iterdir() if p.suffix == ".safetensors")
    assert files
    for name in files:
        assert (tmp_path / "cached" / name).read_bytes() == (tmp_path / "inproc" / name).read_bytes(), name
        js = name.replace(".safetensors", ".json")
        assert (tmp_path / "cached" / js).read_bytes() == (tmp_path / "inproc" / js).read_bytes(), js
