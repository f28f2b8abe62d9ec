"""benchmarks/text_encoder_memory.py: the text encoder configs it counts are the ones the real
denoisers consume (their output widths match the denoiser configs of backbones/real.py), so the
weight memory in docs/teacher.md is counted on the right modules."""

from __future__ import annotations

import pytest
import torch
from conftest import load_benchmark

from trace_edges.backbones.real import real_arch

tem = load_benchmark("text_encoder_memory")


def _meta(cls_name: str, cfg: dict):
    import transformers

    config_cls = transformers.T5Config if cls_name.startswith("T5") else transformers.CLIPTextConfig
    with torch.device("meta"):
        return getattr(transformers, cls_name)(config_cls(**cfg))


@pytest.mark.parametrize("family", sorted(tem.TEXT_ENCODERS))
def test_text_encoders_match_the_denoisers_they_condition(family):
    enc = {a: _meta(cls, cfg) for a, (cls, _, cfg) in tem.TEXT_ENCODERS[family].items()}
    # the width of each encoder's hidden states (T5: d_model; CLIP: hidden_size)
    width = {a: getattr(m.config, "d_model", None) or m.config.hidden_size for a, m in enc.items()}
    den, text = real_arch(family).denoiser, real_arch(family).text
    if family == "sd15":
        assert width["text_encoder"] == den["cross_attention_dim"] == text["dim"]
    elif family == "sdxl":   # penultimate states of CLIP-L and CLIP-G concatenated; pooled G projected
        assert width["text_encoder"] + width["text_encoder_2"] == den["cross_attention_dim"] == text["dim"]
        pooled = enc["text_encoder_2"].config.projection_dim
        assert den["projection_class_embeddings_input_dim"] == pooled + 6 * den["addition_time_embed_dim"]
    elif family == "sd3":    # T5 width = joint attention input; pooled = CLIP-L + CLIP-G projections
        assert width["text_encoder_3"] == den["joint_attention_dim"] == text["dim"]
        pooled = enc["text_encoder"].config.projection_dim + enc["text_encoder_2"].config.projection_dim
        assert pooled == den["pooled_projection_dim"] == text["pooled"]
    elif family == "pixart":
        assert width["text_encoder"] == den["caption_channels"] == text["dim"]
    elif family == "flux":   # T5 states; CLIP-L pooled output (no projection)
        assert width["text_encoder_2"] == den["joint_attention_dim"] == text["dim"]
        assert width["text_encoder"] == den["pooled_projection_dim"] == text["pooled"]


def test_rows_count_every_module_once(tmp_path):
    import json

    assert tem.main(["--out-dir", str(tmp_path)]) == 0
    rows = {r["family"]: r for r in json.loads((tmp_path / "text_encoder_memory.json").read_text())["rows"]}
    assert set(rows) == set(tem.TEXT_ENCODERS)
    for r in rows.values():
        assert r["params_text"] == sum(e["params"] for e in r["text_encoders"].values())
        assert r["weights_gib_with_text"] > r["weights_gib_denoiser_jobs"] > 0
    # the same encoder config counts the same wherever it is used
    assert rows["pixart"]["params_text"] == rows["flux"]["text_encoders"]["text_encoder_2"]["params"]
    assert rows["sd15"]["params_text"] == rows["flux"]["text_encoders"]["text_encoder"]["params"]
