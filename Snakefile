# trace-edges: reproduction workflow of TRACE (ICLR 2026).
#
#   snakemake --cores all                                  # embedded default (offline, CPU)
#   snakemake --cores all --configfile config.paper.yaml   # the paper run (GPU + downloads)
#
# The Snakefile only loads and validates the config, defines shared helpers and `all`;
# every stage lives in rules/*.smk and calls exactly one `trace-edges` subcommand.

import json
import math
import os
import shlex
import sys
from pathlib import Path

from snakemake.logging import logger
from snakemake.utils import min_version, validate

min_version("8.20")

configfile: "config.yaml"


validate(config, "src/trace_edges/schemas/config.schema.yaml")

# The rules run the project's own checked-out package (src/), in whatever Python runs the
# jobs: the conda env with --sdm conda, otherwise the interpreter running Snakemake.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from trace_edges.edges import gt_sources, staged_sources  # noqa: E402
from trace_edges.families import tiny_marker  # noqa: E402
from trace_edges.null_prompt import artifact_name, has_text_encoder  # noqa: E402
from trace_edges.provenance import stage_sources  # noqa: E402
from trace_edges.ablations import expand as expand_ablations  # noqa: E402
from trace_edges.config import check_consistency  # noqa: E402
from trace_edges.stages.shards import SHARDED_STAGES, expected_num_images, num_shards, stage_shards  # noqa: E402
from trace_edges.data.train_data import expected_train_images  # noqa: E402
from trace_edges.data.selection import figure_images, has_ground_truth, list_folder_images  # noqa: E402
from trace_edges.data.selection import selected_image_ids  # noqa: E402

check_consistency(config)
# The run's image ids, known now from the annotation file or the image folder (None: COCO 2017 val
# before its download; prepare checks the configured ids then). A configured figure image the
# dataset lacks is refused HERE, before any job runs (docs/architecture.md, "Your own images").
SELECTED_IDS = selected_image_ids(config["data"])
FIG = figure_images(config, SELECTED_IDS)
# An images-only dataset (data.dataset: images) has no ground truth: what needs it is left out.
HAS_GT = has_ground_truth(config["data"])
if not HAS_GT:
    logger.info(f"data.dataset is 'images' ({config['data']['root']}): no ground truth, so GT edges, scoring, "
                "WPS, tables, paper_vs_ours and the ablation grids are left out; edges, proposals, BGP and the "
                "figures run")
# the ablation grids expanded into cells and variants, once (rules/teacher.smk builds their tiny
# models, rules/ablations.smk their jobs)
AB_EXP = expand_ablations(config)

_USE_CONDA = "conda" in {str(m).lower() for m in workflow.deployment_settings.deployment_method}
PY = "python" if _USE_CONDA else sys.executable
TE = f"PYTHONPATH={Path(workflow.basedir) / 'src'} {PY} -m trace_edges"

PRESET = config["preset"]
# the config files this run merged (config.yaml, then every --configfile), for the audit rule
CONFIGFILES = ["config.yaml"] + [
    os.path.relpath(str(f), workflow.basedir) for f in (workflow.configfiles or []) if os.path.basename(str(f)) != "config.yaml"
]
R = f"results/{PRESET}"              # every output of this run lives under R
LOGS = f"{R}/logs"
BENCH = f"{R}/benchmarks"
ENV = "../envs/trace-edges.yaml"  # relative to rules/ (CPU torch)
CUDA_ENV = "../envs/trace-edges-gpu.yaml"  # the same packages with a CUDA build of torch
# The env of the rules that request a GPU (resources gpu=1) under --sdm conda: config gpu_env
# (config.paper.yaml: cuda). Every other rule keeps ENV.
GPU_ENV = CUDA_ENV if config["gpu_env"] == "cuda" else ENV

# an ORACLE source reads the ground truth: left out of an images-only run (one log line says so)
EDGE_SOURCES = [s for s in config["edges"]["sources"] if HAS_GT or s not in gt_sources()]
if len(EDGE_SOURCES) < len(config["edges"]["sources"]):
    logger.info(f"edge source(s) {sorted(set(config['edges']['sources']) - set(EDGE_SOURCES))} need ground truth "
                "(ORACLE): left out for data.dataset: images")
if not EDGE_SOURCES:
    raise ValueError("config: edges.sources holds only ORACLE sources, which need ground truth, and data.dataset "
                     "is 'images'; fix: add a source that reads pixels (e.g. sobel)")
STAGED_SOURCES = staged_sources()   # written by their own stages (rules/teacher.smk, student.smk)
GRADIENT_SOURCES = [s for s in EDGE_SOURCES if s not in STAGED_SOURCES]
UIS_SOURCES = ["none"] + EDGE_SOURCES  # 'none' = the base proposals without BGP (baseline row)
PROPOSALS = config["proposals"]["method"]


# The main teacher -> student chain is the run's critical path (build model, trajectory, labels,
# distill, infer, edge scoring): among ready jobs Snakemake starts it first and fills the other
# cores with the ablation grid's independent jobs (results/benchmarks/workflow_embedded.json).
MAIN_CHAIN_PRIORITY = 10


include: "rules/common.smk"


# jobs per sharded per-image stage (config `shards`; 1 = one unsharded job, no gather input):
# shard boundaries follow the manifest order (trace_edges.stages.shards)
SHARDS = {stage: stage_shards(config["shards"], stage, num_images(config["data"])) for stage in SHARDED_STAGES}


include: "rules/data.smk"
include: "rules/edges.smk"
include: "rules/teacher.smk"
include: "rules/student.smk"
include: "rules/proposals.smk"
include: "rules/group.smk"
include: "rules/score.smk"
include: "rules/ablations.smk"
include: "rules/figures.smk"
include: "rules/audit.smk"


rule all:
    input:
        scored_targets(),
        f"{R}/figures/qualitative.png",
        f"{R}/figures/qualitative.pdf",
        f"{R}/figures/bgp_steps.png",
        f"{R}/figures/bgp_steps.pdf",
        teacher_targets(),
        teacher_figure_targets(),
        student_targets(),
        speed_targets(),
        ablation_targets(),
        backbone_figure_targets(),
    default_target: True
