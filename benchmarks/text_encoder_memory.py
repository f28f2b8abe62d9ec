"""Weight memory per backbone family with and without its text encoders (issue 10, item 2).

Since the null_prompt stage (:mod:`trace_edges.null_prompt`), the denoiser jobs hold only the
denoiser and the VAE; the text encoders live only in the one null_prompt job per model. This script
counts the parameters of every module from its real config, built on the ``meta`` device (no
weights, no download): the denoisers and VAEs from :mod:`trace_edges.backbones.real`, the text
encoders from the values of their hub ``config.json`` files below. Bytes = parameters x the dtype
the paper preset loads the family in (config.paper.yaml); the SDXL VAE is upcast to float32 in
float16 (the pipeline's force_upcast, as the adapter does). These are DERIVED weight sizes, not
measured GPU peaks (no GPU here): activations come on top.

    python benchmarks/text_encoder_memory.py   # -> results/benchmarks/text_encoder_memory.{json,csv}
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

#: text encoder configs: the values of the hub config.json each pipeline's text_encoder* folder holds
#: (everything else is the transformers class default, as in those files)
CLIP_L = ("CLIPTextModel", "openai/clip-vit-large-patch14 (text_config)",
          dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
               num_attention_heads=12, max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu"))
CLIP_G = ("CLIPTextModelWithProjection", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k (text_config)",
          dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
               num_attention_heads=20, max_position_embeddings=77, projection_dim=1280, hidden_act="gelu"))
T5_XXL = ("T5EncoderModel", "google/t5-v1_1-xxl",
          dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
               relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", tie_word_embeddings=False))

#: family -> its pipeline's text encoders (attribute, (class, source, config))
TEXT_ENCODERS = {
    "sd15": {"text_encoder": CLIP_L},
    "sdxl": {"text_encoder": CLIP_L, "text_encoder_2": CLIP_G},
    # SD3's CLIP-L is loaded as CLIPTextModelWithProjection (its pooled output is projected)
    "sd3": {"text_encoder": ("CLIPTextModelWithProjection",) + CLIP_L[1:], "text_encoder_2": CLIP_G,
            "text_encoder_3": T5_XXL},
    "pixart": {"text_encoder": T5_XXL},
    "flux": {"text_encoder": CLIP_L, "text_encoder_2": T5_XXL},
}
#: the dtype each family runs in under config.paper.yaml (main teacher sd3; the backbone grid's cells)
PAPER_DTYPE = {"sd15": "float16", "sdxl": "float16", "sd3": "bfloat16", "pixart": "bfloat16", "flux": "bfloat16"}
BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def text_encoder_params(cls_name: str, cfg: dict) -> int:
    import torch
    import transformers

    config_cls = transformers.T5Config if cls_name.startswith("T5") else transformers.CLIPTextConfig
    with torch.device("meta"):
        model = getattr(transformers, cls_name)(config_cls(**cfg))
    return sum(p.numel() for p in model.parameters())


def rows() -> list[dict]:
    import torch

    from trace_edges.backbones.real import build_denoiser, build_vae, param_count, real_arch

    out = []
    for family, encoders in TEXT_ENCODERS.items():
        arch = real_arch(family)
        dtype = PAPER_DTYPE[family]
        den = param_count(build_denoiser(family, dtype=torch.float32, device="meta"))
        vae = param_count(build_vae(family, dtype=torch.float32, device="meta"))
        text = {attr: text_encoder_params(cls, cfg) for attr, (cls, _, cfg) in encoders.items()}
        b = BYTES[dtype]
        vae_b = 4 if family == "sdxl" and dtype == "float16" else b
        gib = 1024 ** 3
        with_text = (den * b + vae * vae_b + sum(text.values()) * b) / gib
        without = (den * b + vae * vae_b) / gib
        out.append({
            "family": family, "hub_id": arch.hub_id, "dtype": dtype,
            "params_denoiser": den, "params_vae": vae, "params_text": sum(text.values()),
            "text_encoders": {a: {"class": encoders[a][0], "config": encoders[a][1], "params": n}
                              for a, n in text.items()},
            "weights_gib_with_text": round(with_text, 2), "weights_gib_denoiser_jobs": round(without, 2),
            "freed_gib": round(with_text - without, 2),
        })
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", default=str(ROOT / "results/benchmarks"))
    args = ap.parse_args(argv)
    from trace_edges.io import write_json

    table = rows()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "text_encoder_memory.json", {
        "what": "weight memory per family, parameters counted on the meta device from the real configs "
                "(derived, not measured); bytes at the paper preset's dtype",
        "rows": table})
    cols = ["family", "dtype", "params_denoiser", "params_vae", "params_text", "weights_gib_with_text",
            "weights_gib_denoiser_jobs", "freed_gib"]
    with open(out / "text_encoder_memory.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(table)
    for r in table:
        print({k: r[k] for k in cols})
    return 0


if __name__ == "__main__":
    sys.exit(main())
