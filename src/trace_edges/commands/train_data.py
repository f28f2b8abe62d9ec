"""The student's training images: ``prepare-train`` (rule prepare_train) and ``download-coco-train``
(rule download_coco_train, paper preset)."""

from __future__ import annotations

import argparse

from trace_edges.commands import add_common, stage_params


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare-train", help="verify the student's training images (student.train_data), check "
                                             "they are disjoint from the evaluation images, write their manifest")
    add_common(p, threads=False)
    p.add_argument("--eval-manifest", required=True, help="the evaluation data manifest (results/<preset>/data)")
    p.add_argument("--out-dir", required=True, help="e.g. results/<preset>/train_data")
    p.set_defaults(func=run_prepare)

    p = sub.add_parser("download-coco-train", help="fetch the selected COCO train2017 images of student.train_data "
                                                   "from their coco_url (resumable, size-checked)")
    add_common(p, threads=False)
    p.add_argument("--out", required=True, help="the completion record (<root>/<images_dir>/download_complete.json)")
    p.set_defaults(func=run_download)


def run_prepare(args: argparse.Namespace) -> None:
    from trace_edges.data.manifest import load_manifest
    from trace_edges.data.train_data import prepare_train

    td = stage_params(args, "student")["train_data"]
    prepare_train(td, args.out_dir, eval_manifest=load_manifest(args.eval_manifest))


def run_download(args: argparse.Namespace) -> None:
    from trace_edges.data.train_data import download_train_images

    download_train_images(stage_params(args, "student")["train_data"], args.out)
