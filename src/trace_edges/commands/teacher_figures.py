"""``trace-edges teacher-figure --figure {pca,kl,neighbours,all,backbones}``: the teacher's figures (PNG + PDF).

* ``pca``: self-attention PCA along the trajectory with t* framed (paper Fig. 1b analogue);
* ``kl``: IEP curves D(SA(τ_prev), SA(τ)) of every image in an iep.json (D: the divergence it names,
  KL by default), t* marked, t* histogram;
* ``neighbours``: neighbour attention rows of a boundary and an interior pixel at t* (Fig. 5 analogue);
* ``all``: the three above in one call (rule ``teacher_figures``), written as
  ``--out-dir/teacher_<figure>.{png,pdf}``;
* ``backbones``: SA PCA per backbone of ``--backbones`` (Fig. 8 analogue), each backbone loaded once.

Several of pca / kl / neighbours may be given (or ``all``); then ``--out-dir`` names the outputs,
otherwise ``--out-png`` / ``--out-pdf`` do. ``pca`` and ``neighbours`` need the teacher backbone and
one image's trajectory (``--manifest`` + ``--image-id``, or ``--image``): the backbone is loaded ONCE
and the trajectory walked ONCE for all of them; ``kl`` only reads ``--iep``. The teacher block
(``--params`` / ``--config``) gives the backbone and the trajectory parameters, and for every figure
the tiny-model note in the title (``backbone.tiny``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trace_edges.commands import add_common, stage_params

FIGURES = ("pca", "kl", "neighbours", "all", "backbones")
PER_RUN = ("pca", "kl", "neighbours")  # report.teacher_figures.FIGURES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("teacher-figure",
                       help="teacher figures: SA PCA along the trajectory (pca), IEP curves + t* histogram "
                            "(kl), neighbour attention at t* (neighbours), SA PCA per backbone (backbones)")
    add_common(p)
    p.add_argument("--figure", required=True, nargs="+", choices=FIGURES,
                   help="one or more of pca, kl, neighbours (or all: the three); or backbones alone")
    p.add_argument("--manifest", help="data manifest (pca, neighbours; with --image-id)")
    p.add_argument("--image-id", help="image id in --manifest, or 'first' (pca, neighbours)")
    p.add_argument("--image", help="an image file instead of --manifest/--image-id (pca, neighbours)")
    p.add_argument("--iep", help="teacher/<family>/iep.json (kl)")
    p.add_argument("--backbones", metavar="JSON",
                   help='backbones: {"label": <teacher block>, ...} (one row each, in order)')
    p.add_argument("--seed", type=int, default=0, help="seed of the forward-noise trajectory option")
    p.add_argument("--null-prompt-dir", default=None,
                   help="the null_prompt stage's folder: each diffusion backbone loads its embeddings from "
                        "there (<family>-<key>.safetensors) instead of its text encoders")
    p.add_argument("--dpi", type=int, default=150)
    p.add_argument("--out-png", help="output PNG (one figure)")
    p.add_argument("--out-pdf", help="output PDF (one figure)")
    p.add_argument("--out-dir", help="output folder for several figures: teacher_<figure>.{png,pdf}")
    p.set_defaults(func=run)


def _null_prompt(args: argparse.Namespace, backbone) -> Path | None:
    """The backbone's null_prompt artifact in --null-prompt-dir (None: no dir, or no text encoder)."""
    from trace_edges.null_prompt import artifact_name, has_text_encoder

    if not args.null_prompt_dir or not has_text_encoder(backbone["family"]):
        return None
    return Path(args.null_prompt_dir) / f"{artifact_name(backbone)}.safetensors"


def _figures(args: argparse.Namespace) -> list[str]:
    from trace_edges.errors import ConfigError

    figs = list(dict.fromkeys(f for g in args.figure for f in (PER_RUN if g == "all" else (g,))))
    if "backbones" in figs and len(figs) > 1:
        raise ConfigError("--figure backbones is drawn on its own (it loads its own backbones)")
    return figs


def _outputs(args: argparse.Namespace, figs: list[str]) -> dict[str, tuple[str, str]]:
    """``{figure: (png, pdf)}``: --out-png/--out-pdf for one figure, --out-dir/teacher_<figure>.* for several."""
    from pathlib import Path

    from trace_edges.errors import ConfigError

    if args.out_dir:
        if args.out_png or args.out_pdf:
            raise ConfigError("give either --out-dir or --out-png with --out-pdf, not both")
        if figs == ["backbones"]:
            raise ConfigError("--figure backbones writes --out-png and --out-pdf")
        d = Path(args.out_dir)
        return {f: (str(d / f"teacher_{f}.png"), str(d / f"teacher_{f}.pdf")) for f in figs}
    if not (args.out_png and args.out_pdf):
        raise ConfigError("give --out-png and --out-pdf (one figure) or --out-dir (several)")
    if len(figs) > 1:
        raise ConfigError(f"{len(figs)} figures ({', '.join(figs)}) need --out-dir, not --out-png/--out-pdf")
    return {figs[0]: (args.out_png, args.out_pdf)}


def _image(args: argparse.Namespace, figs: list[str]):
    from pathlib import Path

    from trace_edges.data.manifest import load_manifest
    from trace_edges.data.images import load_rgb
    from trace_edges.errors import ConfigError, DataError

    if args.image:
        if args.manifest or args.image_id:
            raise ConfigError("give either --image or --manifest with --image-id, not both")
        return load_rgb(args.image)
    if not (args.manifest and args.image_id):
        raise ConfigError(f"--figure {' '.join(figs)} needs --manifest and --image-id (or --image)")
    manifest = load_manifest(args.manifest)
    for rec in manifest["images"]:
        if str(rec["id"]) == str(args.image_id) or (args.image_id == "first" and manifest["images"]):
            return load_rgb(rec["file"])
    ids = [str(r["id"]) for r in manifest["images"]]
    raise DataError(f"image id {args.image_id} is not in the manifest ({len(ids)} images, e.g. "
                    f"{', '.join(ids[:5])})", path=Path(args.manifest), fix="pass an --image-id listed there")


def run(args: argparse.Namespace) -> None:
    from trace_edges.errors import ConfigError
    from trace_edges.report import teacher_figures as tf

    params = stage_params(args, "teacher")
    figs = _figures(args)
    outs = _outputs(args, figs)
    if "kl" in figs and not args.iep:
        raise ConfigError("--figure kl needs --iep (teacher/<family>/iep.json)")
    walk_needed = bool({"pca", "neighbours", "backbones"} & set(figs))
    rgb = _image(args, figs) if walk_needed else None
    from trace_edges.backbones.loader import load_configured_backbone
    from trace_edges.teacher.attention_views import walk_trajectory

    if figs == ["backbones"]:
        import json

        from trace_edges.config import validate

        if not args.backbones:
            raise ConfigError("--figure backbones needs --backbones JSON")
        blocks = json.loads(args.backbones)
        runs = []
        for label, block in blocks.items():
            p = validate(block, block="teacher", where=f"--backbones {label}")
            bb = load_configured_backbone(p["backbone"], null_prompt=_null_prompt(args, p["backbone"]))
            runs.append((label, walk_trajectory(bb, rgb, p, seed=args.seed), p))
        png, pdf = outs["backbones"]
        tf.backbones_pca_figure(runs, png, pdf, dpi=args.dpi)
        return

    walk = None
    if walk_needed:  # one model load, one trajectory, for every per-image figure
        bb = load_configured_backbone(params["backbone"], null_prompt=_null_prompt(args, params["backbone"]))
        walk = walk_trajectory(bb, rgb, params, seed=args.seed)
    tf.draw_teacher_figures(outs, params, walk=walk, iep_json=args.iep, dpi=args.dpi)
