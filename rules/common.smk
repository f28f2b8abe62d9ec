# Every function of the workflow (`snakemake --lint` wants functions and rules in separate files).
# Included by the Snakefile before the rule files; the functions read the globals those files
# define (R, TDIR, AB, ...) when they are called, i.e. after every file has been parsed.


def uis_results_path(source):
    """The instance results scored for an edge source ('none' = the base proposals themselves)."""
    if source == "none":
        return f"{R}/proposals/{PROPOSALS}/proposals.json"
    return f"{R}/bgp/{PROPOSALS}/{source}/instances.json"


def te(wildcards, input):
    """The `trace-edges` command line (params `te` of every rule). A function of the job, not a
    plain value: Snakemake does not compare it between runs, so moving the checkout or the venv
    does not rerun every job (TE holds absolute paths)."""
    return TE


# ---- from Snakefile


def scored_targets():
    """What `all` needs that only a dataset with ground truth has: the tables and paper_vs_ours."""
    if not HAS_GT:
        return []
    return [f"{R}/tables/{f}" for f in ("results.csv", "results.md", "summary.json")] + [f"{R}/paper_vs_ours.md"]


def num_images(data):
    """How many images prepare will select (sizes the teacher's shards): from the annotation file
    or the image folder, else the dataset's published size (COCO 2017 val before its download)."""
    ids = selected_image_ids(data)
    return len(ids) if ids is not None else expected_num_images(data)


def shard_files(stage, directory):
    """The shard files the gather of a sharded stage reads (<directory>/shards/shard_<i>.json);
    [] when the stage runs as one job (its gather rule then computes every image itself)."""
    n = SHARDS[stage]
    return [] if n == 1 else [f"{directory}/shards/shard_{i}.json" for i in range(n)]


def gather_arg(wildcards, input):
    """`--shards <files>` of a gather rule whose stage is sharded; '' when it runs as one job (and
    in the ablation grid's rules, whose own input has no shards)."""
    files = list(getattr(input, "shards", None) or [])
    return "--shards " + " ".join(files) if files else ""


def shard_arg(stage):
    """params of a `<stage>_shard` rule: which shard, its size (config shards.<stage>), its file."""
    return lambda wildcards, output: (f"--shard {wildcards.shard} --shard-size {config['shards'][stage]} "
                                      f"--shard-out {output.shard}")


def shard_runtime(stage, seconds_per_image, floor=10):
    """A shard job's time request (minutes): 3x its images at `seconds_per_image` (a rounded-up
    CPU cost per image of the paper preset, results/benchmarks/paper_scale.md), at least `floor`."""
    size = config["shards"][stage] or num_images(config["data"])
    return max(floor, math.ceil(3 * size * seconds_per_image / 60))


def code(stage):
    """The package source files a stage depends on: editing one reruns exactly that stage."""
    return [os.path.relpath(p, workflow.basedir) for p in stage_sources(stage)]


def as_json(block):
    """A config block as JSON for --params (Snakemake tracks params changes); the rules put it
    in single quotes, so a single quote inside a value is escaped for the shell."""
    return json.dumps(block, sort_keys=True).replace("'", "'\\''")


# ---- from rules/edges.smk


def edge_model_input(wildcards):
    """What an edge source loads besides the images: the verified HED weights (rule fetch_hed)."""
    return [HED_RECORD] if wildcards.source == "hed" else []


# ---- from rules/teacher.smk


def teacher_targets():
    """What `all` needs from the teacher when it is one of the edge sources."""
    if "trace_teacher" not in EDGE_SOURCES:
        return []
    return [f"{TDIR}/iep.json", f"{TDIR}/labels/manifest.json"]


def tiny_model_input(backbone):
    """A tiny model's build output (so Snakemake builds it first); hub models need no input.
    Tiny models live at build/models/tiny-<family> (rule build_tiny_models)."""
    if not backbone["tiny"]:
        return []
    expected = f"build/models/tiny-{backbone['family']}"
    if os.path.normpath(backbone["model"]) != expected:
        raise ValueError(f"config: a tiny {backbone['family']} model must live at {expected} "
                         f"(got model: {backbone['model']!r}); fix: set model: {expected} or tiny: false")
    return [f"{expected}/{tiny_marker(backbone['family'])}"]


def null_prompt_input(backbone):
    """The null_prompt artifact of a backbone block (rule null_prompt); [] for an image encoder
    (DINOv2: no prompt)."""
    if not has_text_encoder(backbone["family"]):
        return []
    return [f"{NULL_DIR}/{artifact_name(backbone)}.safetensors"]


def null_prompt_arg(wildcards, input):
    """`--null-prompt PATH` when the job has a null_prompt input, else nothing."""
    return f"--null-prompt {input.null_prompt}" if input.null_prompt else ""


def null_prompt_blocks():
    """artifact name -> backbone block, for every diffusion backbone the run loads."""
    blocks = [TBB] + [t["backbone"] for t in AB_EXP.teachers.values()]
    return {artifact_name(b): b for b in blocks if has_text_encoder(b["family"])}


def _model_input(wildcards):
    return tiny_model_input(TBB)


def _tiny_families():
    """Every backbone family the run loads as a tiny model: the main teacher's and the ablation
    grids' (Table 5's backbone grid needs all of them)."""
    blocks = [TBB] + [t["backbone"] for t in AB_EXP.teachers.values()]
    return sorted({b["family"] for b in blocks if b["tiny"]})


# ---- from rules/student.smk


def student_targets():
    if "trace_student" not in EDGE_SOURCES:
        return []
    return [f"{SDIR}/model.json", f"{R}/figures/student_strip.png"]


# ---- from rules/ablations.smk


def ablation_targets():
    if not AB_ON:
        return []
    return [f"{AB}/ablations_tidy.csv", f"{AB}/ablations.md", f"{AB}/figures/ablations.png"]


def _ab_student(wildcards):
    """The student variant's directory: the run's own student for 'main', else the ablation's."""
    return SDIR if wildcards.source == "main" else f"{AB}/student/{wildcards.source}"


def _ab_student_json(variant):
    """model.json of a student variant ('main' = the run's own student)."""
    return f"{SDIR}/model.json" if variant == "main" else f"{AB}/student/{variant}/model.json"


def _ab_results(wildcards):
    if wildcards.source == "none":
        return f"{AB}/proposals/{PROPOSALS}/proposals.json"
    return f"{AB}/bgp/{wildcards.source}/instances.json"


# ---- from rules/figures.smk


def teacher_figure_targets():
    if "trace_teacher" not in EDGE_SOURCES:
        return []
    return [f"{R}/figures/teacher_{f}.{ext}" for f in ("pca", "kl", "neighbours") for ext in ("png", "pdf")]


def speed_targets():
    return [f"{R}/figures/speed.{ext}" for ext in ("png", "pdf")] if os.path.exists(SPEED_JSON) else []


def backbone_figure_targets():
    return [f"{R}/figures/backbones_pca.{ext}" for ext in ("png", "pdf")] if BACKBONE_BLOCKS else []
