# The TRACE student (paper §3.4, Fig. 4b): one-step self-distillation on the teacher's pseudo-labels,
# then one forward pass at t = 0 per image, written as the `trace_student` edge source.
# checkpoints/ and snapshots/ are deliberately NOT declared outputs: Snakemake deletes declared
# outputs before a rerun, which would defeat resuming after a kill.

SDIR = f"{R}/student/{TFAM}"

# The training images (student.train_data, docs/student.md "Training data"): a separate set,
# prepared and checked disjoint from the evaluation images by prepare_train, labelled by the
# teacher's own trajectory + labels jobs under teacher/<family>/train/. transductive: true trains
# on the evaluation images the main teacher labelled instead (explicit, never the default).
TD = config["student"]["train_data"]
TRANSDUCTIVE = bool(TD["transductive"])
TRAIN_R = f"{R}/train_data"
TTDIR = f"{TDIR}/train"
STUDENT_MANIFEST = f"{R}/data/manifest.json" if TRANSDUCTIVE else f"{TRAIN_R}/manifest.json"
STUDENT_LABELS = f"{TDIR}/labels/manifest.json" if TRANSDUCTIVE else f"{TTDIR}/labels/manifest.json"
N_TRAIN_SHARDS = 0 if TRANSDUCTIVE else num_shards(expected_train_images(TD), TEACHER["shard_size"])
# a download brings its own image info (download_coco's annotations) and writes the checksums
_TD_FILES = [] if TD["download"] == "coco2017_train" else [
    f"{TD['root']}/{TD[k]}" for k in ("image_info", "list", "checksums") if TD[k]]
_TD_MARKER = f"{TD['root']}/{TD['images_dir']}/download_complete.json"


if not TRANSDUCTIVE and TD["download"] == "coco2017_train":

    rule download_coco_train:
        """The selected COCO train2017 images from their coco_url (the image info comes with the
        annotations archive of download_coco); size-checked, sha256 recorded."""
        input:
            info=[f"{_ROOT}/download_complete.json"] if _D["dataset"] == "coco2017_val" else [],
            code=code("download_train"),
        output:
            _TD_MARKER,
        params:
            te=lambda wildcards, input: TE,
            student=as_json({"train_data": TD}),
        log:
            f"{LOGS}/download_coco_train.log",
        benchmark:
            f"{BENCH}/download_coco_train.tsv"
        threads: 1
        resources:
            mem_mb=8000,
            runtime=240,
        conda:
            ENV
        shell:
            "{params.te} download-coco-train --params '{params.student}' --out {output} > {log} 2>&1"


if not TRANSDUCTIVE:

    rule prepare_train:
        """Verify the training images, refuse any that is an evaluation image, write their manifest."""
        input:
            eval_manifest=f"{R}/data/manifest.json",
            dataset=_TD_FILES + ([_TD_MARKER] if TD["download"] == "coco2017_train" else []),
            code=code("prepare_train"),
        output:
            f"{TRAIN_R}/manifest.json",
        params:
            te=lambda wildcards, input: TE,
            student=as_json({"train_data": TD}),
            out_dir=lambda wildcards, output: os.path.dirname(output[0]),
        log:
            f"{LOGS}/student/prepare_train.log",
        benchmark:
            f"{BENCH}/student/prepare_train.tsv"
        priority: MAIN_CHAIN_PRIORITY
        threads: 1
        resources:
            mem_mb=8000 if TD["download"] == "coco2017_train" else 1000,
            runtime=30,
        conda:
            ENV
        shell:
            "{params.te} prepare-train --params '{params.student}' --eval-manifest {input.eval_manifest} "
            "--out-dir {params.out_dir} > {log} 2>&1"

    use rule trajectory as trajectory_train with:
        input:
            manifest=f"{TRAIN_R}/manifest.json",
            model=_model_input,
            null_prompt=null_prompt_input(TBB),
            code=code("teacher"),
        output:
            shard=f"{TTDIR}/trajectory/shard_{{shard}}.json",
        log:
            f"{LOGS}/teacher/train_trajectory_{{shard}}.log",
        benchmark:
            f"{BENCH}/teacher/train_trajectory_{{shard}}.tsv"

    use rule teacher_labels as teacher_labels_train with:
        input:
            manifest=f"{TRAIN_R}/manifest.json",
            shards=expand(f"{TTDIR}/trajectory/shard_{{i}}.json", i=range(N_TRAIN_SHARDS)),
            code=code("teacher"),
        output:
            labels=f"{TTDIR}/labels/manifest.json",
            edges=f"{TTDIR}/edges/manifest.json",
        log:
            f"{LOGS}/teacher/train_labels.log",
        benchmark:
            f"{BENCH}/teacher/train_labels.tsv"


rule distill:
    """Train LoRA + edge decoder on the teacher's ternary labels of the training images (resumable, seeded)."""
    input:
        manifest=STUDENT_MANIFEST,
        labels=STUDENT_LABELS,
        model=_model_input,
        null_prompt=null_prompt_input(TBB),
        code=code("student"),
    output:
        model=f"{SDIR}/model.safetensors",
        meta=f"{SDIR}/model.json",
        curve=report(f"{SDIR}/training_curve.png", category="Student", caption="../docs/report/student.rst"),
        metrics=f"{SDIR}/metrics.csv",
    params:
        te=te,
        student=as_json(config["student"]),
        teacher=as_json(TEACHER),
        seed=config["seed"],
        out_dir=lambda w, output: os.path.dirname(output.model),
        null_prompt=null_prompt_arg,
    log:
        f"{LOGS}/student/distill.log",
    benchmark:
        f"{BENCH}/student/distill.tsv"
    priority: MAIN_CHAIN_PRIORITY
    threads: config["student"]["threads"]
    resources:
        gpu=1,
        mem_mb=4000 if TBB["tiny"] else 40000,
        runtime=15 if TBB["tiny"] else 1440,
    conda:
        GPU_ENV
    shell:
        "{params.te} distill --params '{params.student}' --teacher-params '{params.teacher}' "
        "--manifest {input.manifest} --labels {input.labels} --out-dir {params.out_dir} --seed {params.seed} "
        "{params.null_prompt} --threads {threads} > {log} 2>&1"


rule student_infer:
    """One forward pass at t = 0 per image -> the `trace_student` edge maps."""
    input:
        model=f"{SDIR}/model.safetensors",
        meta=f"{SDIR}/model.json",
        manifest=f"{R}/data/manifest.json",
        null_prompt=null_prompt_input(TBB),
        code=code("student"),
    output:
        f"{R}/edges/trace_student/manifest.json",
    params:
        te=te,
        out_dir=lambda w, output: os.path.dirname(output[0]),
        null_prompt=null_prompt_arg,
    log:
        f"{LOGS}/student/infer.log",
    benchmark:
        f"{BENCH}/student/infer.tsv"
    priority: MAIN_CHAIN_PRIORITY
    threads: 1
    resources:
        gpu=1,
        mem_mb=3000,
        runtime=10 if TBB["tiny"] else 120,
    conda:
        GPU_ENV
    shell:
        "{params.te} student-infer --model {input.model} --manifest {input.manifest} --out-dir {params.out_dir} "
        "{params.null_prompt} --threads {threads} > {log} 2>&1"


rule student_figure:
    """Paper Fig. 4 analogue: student edges at the training snapshots beside the teacher's."""
    input:
        manifest=f"{R}/data/manifest.json",
        teacher=f"{R}/edges/trace_teacher/manifest.json",
        model=f"{SDIR}/model.safetensors",
        meta=f"{SDIR}/model.json",
        null_prompt=null_prompt_input(TBB),
        code=code("student"),
    output:
        png=report(f"{R}/figures/student_strip.png", category="Student", caption="../docs/report/student.rst"),
        pdf=f"{R}/figures/student_strip.pdf",
    params:
        te=te,
        ids=" ".join(str(i) for i in FIG["qualitative"]),
        dpi=config["report"]["dpi"],
        teacher_dir=lambda w, input: os.path.dirname(input.teacher),
        null_prompt=null_prompt_arg,
    log:
        f"{LOGS}/figures/student_strip.log",
    benchmark:
        f"{BENCH}/figures/student_strip.tsv"
    threads: 1
    resources:
        gpu=0 if TBB["tiny"] else 1,  # the student's forward on the device model.json names
        mem_mb=3000,
        runtime=10 if TBB["tiny"] else 30,
    conda:
        ENV if TBB["tiny"] else GPU_ENV
    shell:
        "{params.te} student-figure --manifest {input.manifest} --teacher-edges {params.teacher_dir} --model {input.model} "
        "--image-ids {params.ids} --dpi {params.dpi} --out-png {output.png} --out-pdf {output.pdf} {params.null_prompt} "
        "> {log} 2>&1"
