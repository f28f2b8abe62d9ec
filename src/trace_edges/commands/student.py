"""Student subcommands: ``distill`` (rule distill), ``student-infer`` (rule student_infer)."""

from __future__ import annotations

import argparse
from typing import Any

from trace_edges.commands import add_common, stage_params


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="one-step self-distillation: LoRA + edge decoder on the teacher's "
                                             "pseudo-labels (GPU if available)")
    add_common(p)
    p.add_argument("--teacher-params", metavar="JSON",
                   help="the teacher block as JSON (its backbone is the student's base model); "
                        "ignored with --config, which supplies both blocks")
    p.add_argument("--manifest", required=True, help="data manifest (results/<preset>/data/manifest.json)")
    p.add_argument("--labels", required=True, help="teacher labels manifest (teacher/<family>/labels/manifest.json)")
    p.add_argument("--out-dir", required=True, help="e.g. results/<preset>/student/<family>")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--null-prompt", default=None,
                   help="the null_prompt stage's embeddings for the backbone: its text encoders are not loaded")
    p.set_defaults(func=run_distill)

    p = sub.add_parser("student-infer", help="trace_student edge maps: one forward pass at t = 0 per image")
    add_common(p, params=False)
    p.add_argument("--model", required=True, help="the trained model.safetensors (model.json next to it)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out-dir", required=True, help="e.g. results/<preset>/edges/trace_student")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                   help="override the backbone device stored in model.json")
    p.add_argument("--null-prompt", default=None,
                   help="the null_prompt stage's embeddings for the backbone: its text encoders are not loaded")
    p.set_defaults(func=run_infer)


def _teacher_params(args: argparse.Namespace) -> dict[str, Any]:
    from trace_edges.config import load_config, parse_params

    if getattr(args, "config", None):
        return load_config(args.config)["teacher"]
    return parse_params(args.teacher_params, "teacher")


def run_distill(args: argparse.Namespace) -> None:
    from trace_edges.stages.student import run_distill as run

    run(stage_params(args, "student"), _teacher_params(args), args.manifest, args.labels, args.out_dir,
        seed=args.seed, null_prompt=args.null_prompt)


def run_infer(args: argparse.Namespace) -> None:
    from trace_edges.stages.student import run_infer as run

    run(args.model, args.manifest, args.out_dir, device=args.device, null_prompt=args.null_prompt)
