# The TRACE student (paper §3.4, Fig. 4b): one-step self-distillation on the teacher's pseudo-labels,
# then one forward pass at t = 0 per image, written as the `trace_student` edge source.
# checkpoints/ and snapshots/ are deliberately NOT declared outputs: Snakemake deletes declared
# outputs before a rerun, which would defeat resuming after a kill.

SDIR = f"{R}/student/{TFAM}"


rule distill:
    """Train LoRA + edge decoder on the teacher's ternary labels (resumable, seeded)."""
    input:
        manifest=f"{R}/data/manifest.json",
        labels=f"{TDIR}/labels/manifest.json",
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
