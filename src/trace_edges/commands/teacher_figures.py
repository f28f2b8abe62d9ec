"""``trace-edges teacher-figure --figure {pca,kl,neighbours}``: the teacher's figures (PNG + PDF).

* ``pca``: self-attention PCA along the trajectory with t* framed (paper Fig. 1b analogue);
* ``kl``: IEP curves D(SA(τ_prev) ‖ SA(τ)) of every image in an iep.json, t* marked, t* histogram;
* ``neighbours``: neighbour attention rows of a boundary and an interior pixel at t* (Fig. 5 analogue).

``pca`` and ``neighbours`` load the teacher backbone and walk one image's trajectory (``--manifest``
+ ``--image-id``, or ``--image``); ``kl`` only reads ``--iep``. The teacher block (``--params`` /
``--config``) gives the backbone and the trajectory parameters, and for every figure the
tiny-model note in the title (``backbone.tiny``).
"""

from __future__ import annotations

import argparse

from trace_edges.commands import add_common, stage_params

FIGURES = ("pca", "kl", "neighbours", "backbones")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("teacher-figure",
                       help="teacher figures: SA PCA along the trajectory (pca), IEP curves + t* histogram "
                            "(kl), neighbour attention at t* (neighbours), SA PCA per backbone (backbones)")
    add_common(p)
    p.add_argument("--figure", required=True, choices=FIGURES)
    p.add_argument("--manifest", help="data manifest (pca, neighbours; with --image-id)")
    p.add_argument("--image-id", help="image id in --manifest, or 'first' (pca, neighbours)")
    p.add_argument("--image", help="an image file instead of --manifest/--image-id (pca, neighbours)")
    p.add_argument("--iep", help="teacher/<family>/iep.json (kl)")
    p.add_argument("--backbones", metavar="JSON",
                   help='backbones: {"label": <teacher block>, ...} (one row each, in order)')
    p.add_argument("--seed", type=int, default=0, help="seed of the forward-noise trajectory option")
    p.add_argument("--dpi", type=int, default=150)
    p.add_argument("--out-png", required=True)
    p.add_argument("--out-pdf", required=True)
    p.set_defaults(func=run)


def _image(args: argparse.Namespace):
    from pathlib import Path

    from trace_edges.data.coco import load_manifest
    from trace_edges.data.images import load_rgb
    from trace_edges.errors import ConfigError, DataError

    if args.image:
        if args.manifest or args.image_id:
            raise ConfigError("give either --image or --manifest with --image-id, not both")
        return load_rgb(args.image)
    if not (args.manifest and args.image_id):
        raise ConfigError(f"--figure {args.figure} needs --manifest and --image-id (or --image)")
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
    if args.figure == "kl":
        if not args.iep:
            raise ConfigError("--figure kl needs --iep (teacher/<family>/iep.json)")
        tf.kl_curves_figure(args.iep, args.out_png, args.out_pdf, dpi=args.dpi,
                            tiny=bool(params["backbone"]["tiny"]))
        return
    rgb = _image(args)
    from trace_edges.backbones.loader import load_configured_backbone

    if args.figure == "backbones":
        import json

        from trace_edges.config import validate

        if not args.backbones:
            raise ConfigError("--figure backbones needs --backbones JSON")
        blocks = json.loads(args.backbones)
        runs = [(label, load_configured_backbone(p["backbone"]), p)
                for label, p in ((lbl, validate(b, block="teacher", where=f"--backbones {lbl}"))
                                 for lbl, b in blocks.items())]
        tf.backbones_pca_figure(runs, rgb, args.out_png, args.out_pdf, dpi=args.dpi, seed=args.seed)
        return

    backbone = load_configured_backbone(params["backbone"])
    fn = tf.trajectory_pca_figure if args.figure == "pca" else tf.neighbour_attention_figure
    fn(backbone, rgb, params, args.out_png, args.out_pdf, dpi=args.dpi, seed=args.seed)
