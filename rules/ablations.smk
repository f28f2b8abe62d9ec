# The paper's ablation grids as Snakemake parameter spaces (config block `ablations`,
# docs/ablations.md). trace_edges.ablations expands the grids into cells; each cell points at a
# *variant* named by a digest of its effective parameters, so cells meaning the same computation
# share one set of artifacts and editing one cell reruns only that cell's jobs.
#
#   ab_prepare      the first `max_images` images (same prepare stage, its own manifest + GT)
#   ab_proposals    the base proposals on them
#   ab_teacher      per teacher variant: invert + iep + abdiv-labels in one job (one model load)
#   ab_distill      per student variant (not the run's own student): trained on the run's teacher labels
#   ab_student      per student variant: one-pass edges on the ablation images
#   ab_bgp / ab_score_uis / ab_score_edges   per variant, the run's own BGP and scoring stages
#   ablation_table  every cell -> ablations_tidy.csv (+ Markdown per grid, + the teacher latencies)

from trace_edges.ablations import cells_json, data_block, variants  # noqa: E402

AB = f"{R}/ablations"
AB_ON = bool(config["ablations"]["enabled"] and config["ablations"]["grids"])
AB_EDGE_METRICS = bool(config["ablations"]["edge_metrics"])
AB_TEACHERS = AB_EXP.teachers
AB_STUDENTS = AB_EXP.students
AB_VARIANTS = variants(AB_EXP)
_AB_V = "|".join(AB_VARIANTS) or "NO_VARIANT"
_AB_T = "|".join(AB_TEACHERS) or "NO_TEACHER"
_AB_S = "|".join(v for v in AB_STUDENTS if v != "main") or "NO_STUDENT"


def ablation_targets():
    if not AB_ON:
        return []
    return [f"{AB}/ablations_tidy.csv", f"{AB}/ablations.md", f"{AB}/figures/ablations.png"]


def _ab_model(wildcards):
    """The student variant's weights: the run's own student for 'main', else the ablation's."""
    if wildcards.variant == "main":
        return f"{SDIR}/model.safetensors"
    return f"{AB}/student/{wildcards.variant}/model.safetensors"


rule ab_prepare:
    """The ablation images: the run's prepare stage limited to the first `ablations.max_images`."""
    input:
        dataset=_dataset_inputs,
        code=code("prepare"),
    output:
        f"{AB}/data/manifest.json",
    params:
        data=as_json(data_block(config)),
        edge_gt=as_json(config["edge_gt"]),
        out_dir=f"{AB}/data",
    log:
        f"{LOGS}/ablations/prepare.log",
    benchmark:
        f"{BENCH}/ablations/prepare.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        ENV
    shell:
        "{TE} prepare --params '{params.data}' --edge-gt-params '{params.edge_gt}' "
        "--out-dir {params.out_dir} > {log} 2>&1"


rule ab_proposals:
    input:
        manifest=f"{AB}/data/manifest.json",
        external=([config["proposals"]["external"]["path"]] if PROPOSALS == "external" else []),
        model=_proposals_model,
        code=code("proposals"),
    output:
        f"{AB}/proposals/{PROPOSALS}/proposals.json",
    params:
        proposals=as_json(config["proposals"]),
    log:
        f"{LOGS}/ablations/proposals.log",
    benchmark:
        f"{BENCH}/ablations/proposals.tsv"
    threads: 1
    resources:
        gpu=1 if MASKCUT_GPU else 0,
        mem_mb=8000 if MASKCUT_GPU else 3000,
        runtime=720 if MASKCUT_GPU else 30,
    conda:
        ENV
    shell:
        "{TE} proposals --params '{params.proposals}' --manifest {input.manifest} --out {output} "
        "--threads {threads} > {log} 2>&1"


rule ab_teacher:
    """One teacher variant on the ablation images: trajectory, IEP (or fixed t*), ABDiv, labels, edges."""
    input:
        manifest=f"{AB}/data/manifest.json",
        model=lambda w: tiny_model_input(AB_TEACHERS[w.variant]["backbone"]),
        code=code("teacher"),
    output:
        labels=f"{AB}/teacher/{{variant}}/labels/manifest.json",
        iep=f"{AB}/teacher/{{variant}}/iep.json",
        latency=f"{AB}/teacher/{{variant}}/latency.json",
        edges=f"{AB}/edges/{{variant}}/manifest.json",
    params:
        teacher=lambda w: as_json(AB_TEACHERS[w.variant]),
        seed=config["seed"],
        out_dir=lambda w: f"{AB}/teacher/{w.variant}",
        edges_dir=lambda w: f"{AB}/edges/{w.variant}",
    wildcard_constraints:
        variant=_AB_T,
    log:
        f"{LOGS}/ablations/teacher_{{variant}}.log",
    benchmark:
        f"{BENCH}/ablations/teacher_{{variant}}.tsv"
    threads: 1
    resources:
        gpu=1,
        mem_mb=2000 if TBB["tiny"] else 40000,
        runtime=10 if TBB["tiny"] else 720,
    conda:
        ENV
    shell:
        "{TE} teacher-cell --params '{params.teacher}' --manifest {input.manifest} --seed {params.seed} "
        "--out-dir {params.out_dir} --edges-dir {params.edges_dir} --threads {threads} > {log} 2>&1"


rule ab_distill:
    """A student variant (decoder capacity, L_rec, ...) trained on the run's own teacher labels."""
    input:
        manifest=f"{R}/data/manifest.json",
        labels=f"{TDIR}/labels/manifest.json",
        model=_model_input,
        code=code("student"),
    output:
        model=f"{AB}/student/{{variant}}/model.safetensors",
        meta=f"{AB}/student/{{variant}}/model.json",
    params:
        student=lambda w: as_json(AB_STUDENTS[w.variant]),
        teacher=as_json(TEACHER),
        seed=config["seed"],
        out_dir=lambda w: f"{AB}/student/{w.variant}",
    wildcard_constraints:
        variant=_AB_S,
    log:
        f"{LOGS}/ablations/distill_{{variant}}.log",
    benchmark:
        f"{BENCH}/ablations/distill_{{variant}}.tsv"
    threads: lambda w: AB_STUDENTS[w.variant]["threads"]
    resources:
        gpu=1,
        mem_mb=4000 if TBB["tiny"] else 40000,
        runtime=15 if TBB["tiny"] else 1440,
    conda:
        ENV
    shell:
        "{TE} student-train --params '{params.student}' --teacher-params '{params.teacher}' "
        "--manifest {input.manifest} --labels {input.labels} --out-dir {params.out_dir} --seed {params.seed} "
        "--threads {threads} > {log} 2>&1"


rule ab_student:
    """One-pass student edges of a student variant on the ablation images."""
    input:
        model=_ab_model,
        manifest=f"{AB}/data/manifest.json",
        code=code("student"),
    output:
        f"{AB}/edges/{{variant}}/manifest.json",
    params:
        out_dir=lambda w: f"{AB}/edges/{w.variant}",
    wildcard_constraints:
        variant="main|" + _AB_S,
    log:
        f"{LOGS}/ablations/student_{{variant}}.log",
    benchmark:
        f"{BENCH}/ablations/student_{{variant}}.tsv"
    threads: 1
    resources:
        gpu=1,
        mem_mb=3000,
        runtime=10 if TBB["tiny"] else 120,
    conda:
        ENV
    shell:
        "{TE} student-infer --model {input.model} --manifest {input.manifest} --out-dir {params.out_dir} "
        "--threads {threads} > {log} 2>&1"


rule ab_bgp:
    input:
        manifest=f"{AB}/data/manifest.json",
        proposals=f"{AB}/proposals/{PROPOSALS}/proposals.json",
        edges=f"{AB}/edges/{{variant}}/manifest.json",
        code=code("bgp"),
    output:
        f"{AB}/bgp/{{variant}}/instances.json",
    params:
        bgp=as_json(config["bgp"]),
        edges_dir=lambda w: f"{AB}/edges/{w.variant}",
    wildcard_constraints:
        variant=_AB_V,
    log:
        f"{LOGS}/ablations/bgp_{{variant}}.log",
    benchmark:
        f"{BENCH}/ablations/bgp_{{variant}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        ENV
    shell:
        "{TE} bgp --params '{params.bgp}' --manifest {input.manifest} --proposals {input.proposals} "
        "--edges {params.edges_dir} --out {output} --threads {threads} > {log} 2>&1"


def _ab_results(wildcards):
    if wildcards.variant == "none":
        return f"{AB}/proposals/{PROPOSALS}/proposals.json"
    return f"{AB}/bgp/{wildcards.variant}/instances.json"


rule ab_score_uis:
    input:
        manifest=f"{AB}/data/manifest.json",
        results=_ab_results,
        code=code("score"),
    output:
        f"{AB}/metrics/uis/{{variant}}.json",
    wildcard_constraints:
        variant="none|" + _AB_V,
    log:
        f"{LOGS}/ablations/score_uis_{{variant}}.log",
    benchmark:
        f"{BENCH}/ablations/score_uis_{{variant}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "{TE} score-uis --manifest {input.manifest} --results {input.results} --label {wildcards.variant} "
        "--out {output} > {log} 2>&1"


rule ab_score_edges:
    input:
        manifest=f"{AB}/data/manifest.json",
        edges=f"{AB}/edges/{{variant}}/manifest.json",
        code=code("score"),
    output:
        f"{AB}/metrics/edges/{{variant}}.json",
    params:
        score=as_json(config["score"]),
        edges_dir=lambda w: f"{AB}/edges/{w.variant}",
    wildcard_constraints:
        variant=_AB_V,
    log:
        f"{LOGS}/ablations/score_edges_{{variant}}.log",
    benchmark:
        f"{BENCH}/ablations/score_edges_{{variant}}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    conda:
        ENV
    shell:
        "{TE} score-edges --params '{params.score}' --manifest {input.manifest} --edges {params.edges_dir} "
        "--out {output} --threads {threads} > {log} 2>&1"


rule ablation_table:
    """Every cell of every grid -> one tidy CSV, a Markdown table per grid and a summary figure."""
    input:
        uis=expand(f"{AB}/metrics/uis/{{v}}.json", v=["none"] + AB_VARIANTS),
        edges=expand(f"{AB}/metrics/edges/{{v}}.json", v=AB_VARIANTS) if AB_EDGE_METRICS else [],
        latency=expand(f"{AB}/teacher/{{v}}/latency.json", v=list(AB_TEACHERS)),
        code=code("report"),
    output:
        tidy=report(f"{AB}/ablations_tidy.csv", category="Ablations", caption="../docs/report/ablations.rst"),
        md=f"{AB}/ablations.md",
        latency=f"{AB}/ablations_latency.csv",
        png=report(f"{AB}/figures/ablations.png", category="Ablations", caption="../docs/report/ablations.rst"),
        pdf=f"{AB}/figures/ablations.pdf",
    params:
        cells=shlex.quote(json.dumps(cells_json(AB_EXP))),
        out_dir=AB,
        dpi=config["report"]["dpi"],
        edge_flag="" if AB_EDGE_METRICS else "--no-edge-metrics",
    log:
        f"{LOGS}/ablations/table.log",
    benchmark:
        f"{BENCH}/ablations/table.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        ENV
    shell:
        "{TE} report-ablations --cells {params.cells} --preset {PRESET} --metrics-dir {params.out_dir}/metrics "
        "--teacher-dir {params.out_dir}/teacher {params.edge_flag} --dpi {params.dpi} --out-dir {params.out_dir} "
        "> {log} 2>&1"
