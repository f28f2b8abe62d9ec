# The paper's ablation grids as Snakemake parameter spaces (config block `ablations`,
# docs/ablations.md). trace_edges.ablations expands the grids into cells; each cell points at a
# *variant* named by a digest of its effective parameters, so cells meaning the same computation
# share one set of artifacts and editing one cell reruns only that cell's jobs.
#
# ONE rule set: every ab_* rule is a main rule (`use rule X as ab_X with:`) on other paths, so its
# command, log/benchmark layout, conda env and resources are written once. The ab_* rules use the
# wildcard `source` for the variant (it is the edge source of the ablation's BGP and scoring).
#
#   ab_prepare          = prepare on the first `max_images` images (its own manifest + GT)
#   ab_proposals        = proposals on them
#   ab_trajectory       = trajectory, per teacher variant, one shard (+ the teacher latency, Table 4)
#   ab_teacher_labels   = teacher_labels, per teacher variant (its edge maps)
#   ab_distill          = distill, per student variant (not the run's own): on the run's teacher labels
#   ab_student_infer    = student_infer, per student variant (and `main`) on the ablation images
#   ab_bgp / ab_score_uis / ab_score_edges = bgp / score_uis / score_edges, per variant
#   ablation_table      every cell -> ablations_tidy.csv (+ Markdown per grid, + the teacher latencies)

from trace_edges.ablations import cells_json, data_block, variants  # noqa: E402

AB = f"{R}/ablations"
# no grid without ground truth (every cell is scored): off for an images-only dataset
AB_ON = HAS_GT and bool(config["ablations"]["enabled"] and config["ablations"]["grids"])
AB_EDGE_METRICS = bool(config["ablations"]["edge_metrics"])
AB_TEACHERS = AB_EXP.teachers
AB_STUDENTS = AB_EXP.students
AB_VARIANTS = variants(AB_EXP)
_AB_V = "|".join(AB_VARIANTS) or "NO_VARIANT"
_AB_T = "|".join(AB_TEACHERS) or "NO_TEACHER"
_AB_S = "|".join(v for v in AB_STUDENTS if v != "main") or "NO_STUDENT"


AB_N = num_images(data_block(config))   # images of every ablation cell: one teacher shard


use rule prepare as ab_prepare with:
    output:
        manifest=f"{AB}/data/manifest.json",
        instances=f"{AB}/data/instances.json",
        agnostic=f"{AB}/data/instances_agnostic.json",
        panoptic=f"{AB}/data/panoptic.json",
    params:
        data=as_json(data_block(config)),
    log:
        f"{LOGS}/ablations/prepare.log",
    benchmark:
        f"{BENCH}/ablations/prepare.tsv"


use rule proposals as ab_proposals with:
    input:
        manifest=f"{AB}/data/manifest.json",
        external=rules.proposals.input.external,
        model=_proposals_model,
        code=code("proposals"),
    output:
        f"{AB}/proposals/{PROPOSALS}/proposals.json",
    log:
        f"{LOGS}/ablations/proposals.log",
    benchmark:
        f"{BENCH}/ablations/proposals.tsv"
    threads: 8 if MASKCUT_GPU else 1  # unsharded: MaskCut runs here (not the main run's gather)
    resources:
        gpu=1 if MASKCUT_GPU else 0,
        mem_mb=16000 if MASKCUT_GPU else 3000,
        runtime=720 if MASKCUT_GPU else 60,
    conda:
        GPU_ENV if MASKCUT_GPU else ENV


use rule trajectory as ab_trajectory with:
    input:
        manifest=f"{AB}/data/manifest.json",
        model=lambda w: tiny_model_input(AB_TEACHERS[w.source]["backbone"]),
        null_prompt=lambda w: null_prompt_input(AB_TEACHERS[w.source]["backbone"]),
        code=code("teacher"),
    output:
        shard=f"{AB}/teacher/{{source}}/trajectory/shard_{{shard}}.json",
        latency=f"{AB}/teacher/{{source}}/latency_{{shard}}.json",
    params:
        teacher=lambda w: as_json({**AB_TEACHERS[w.source], "shard_size": AB_N}),
        latency=lambda w, output: f"--latency-out {output.latency}",
    wildcard_constraints:
        source=_AB_T,
        shard="0",
    log:
        f"{LOGS}/ablations/trajectory_{{source}}_{{shard}}.log",
    benchmark:
        f"{BENCH}/ablations/trajectory_{{source}}_{{shard}}.tsv"
    priority: 0
    resources:
        gpu=1,
        mem_mb=2000 if TBB["tiny"] else 40000,
        runtime=10 if TBB["tiny"] else 720,


use rule teacher_labels as ab_teacher_labels with:
    input:
        manifest=f"{AB}/data/manifest.json",
        shards=f"{AB}/teacher/{{source}}/trajectory/shard_0.json",
        code=code("teacher"),
    output:
        labels=f"{AB}/teacher/{{source}}/labels/manifest.json",
        edges=f"{AB}/edges/{{source}}/manifest.json",
    params:
        teacher=lambda w: as_json(AB_TEACHERS[w.source]),
    wildcard_constraints:
        source=_AB_T,
    log:
        f"{LOGS}/ablations/teacher_labels_{{source}}.log",
    benchmark:
        f"{BENCH}/ablations/teacher_labels_{{source}}.tsv"
    priority: 0


use rule distill as ab_distill with:
    output:
        model=f"{AB}/student/{{source}}/model.safetensors",
        meta=f"{AB}/student/{{source}}/model.json",
        curve=f"{AB}/student/{{source}}/training_curve.png",
        metrics=f"{AB}/student/{{source}}/metrics.csv",
    params:
        student=lambda w: as_json(AB_STUDENTS[w.source]),
    wildcard_constraints:
        source=_AB_S,
    log:
        f"{LOGS}/ablations/distill_{{source}}.log",
    benchmark:
        f"{BENCH}/ablations/distill_{{source}}.tsv"
    priority: 0
    threads: lambda w: AB_STUDENTS[w.source]["threads"]


use rule student_infer as ab_student_infer with:
    input:
        model=lambda w: f"{_ab_student(w)}/model.safetensors",
        meta=lambda w: f"{_ab_student(w)}/model.json",
        manifest=f"{AB}/data/manifest.json",
        null_prompt=null_prompt_input(TBB),
        code=code("student"),
    output:
        f"{AB}/edges/{{source}}/manifest.json",
    wildcard_constraints:
        source=f"main|{_AB_S}",
    log:
        f"{LOGS}/ablations/student_infer_{{source}}.log",
    benchmark:
        f"{BENCH}/ablations/student_infer_{{source}}.tsv"
    priority: 0


use rule bgp as ab_bgp with:
    input:
        manifest=f"{AB}/data/manifest.json",
        proposals=f"{AB}/proposals/{PROPOSALS}/proposals.json",
        edges=f"{AB}/edges/{{source}}/manifest.json",
        code=code("bgp"),
    output:
        f"{AB}/bgp/{{source}}/instances.json",
    wildcard_constraints:
        source=_AB_V,
    log:
        f"{LOGS}/ablations/bgp_{{source}}.log",
    benchmark:
        f"{BENCH}/ablations/bgp_{{source}}.tsv"


use rule score_uis as ab_score_uis with:
    input:
        manifest=f"{AB}/data/manifest.json",
        results=_ab_results,
        code=code("score"),
    output:
        f"{AB}/metrics/uis/{{source}}.json",
    wildcard_constraints:
        source=f"none|{_AB_V}",
    log:
        f"{LOGS}/ablations/score_uis_{{source}}.log",
    benchmark:
        f"{BENCH}/ablations/score_uis_{{source}}.tsv"


use rule score_edges as ab_score_edges with:
    input:
        manifest=f"{AB}/data/manifest.json",
        edges=f"{AB}/edges/{{source}}/manifest.json",
        code=code("score"),
    output:
        f"{AB}/metrics/edges/{{source}}.json",
    wildcard_constraints:
        source=_AB_V,
    log:
        f"{LOGS}/ablations/score_edges_{{source}}.log",
    benchmark:
        f"{BENCH}/ablations/score_edges_{{source}}.tsv"
    priority: 0


rule ablation_table:
    """Every cell of every grid -> one tidy CSV, a Markdown table per grid and a summary figure."""
    input:
        uis=expand(f"{AB}/metrics/uis/{{v}}.json", v=["none"] + AB_VARIANTS),
        edges=expand(f"{AB}/metrics/edges/{{v}}.json", v=AB_VARIANTS) if AB_EDGE_METRICS else [],
        latency=expand(f"{AB}/teacher/{{v}}/latency_0.json", v=list(AB_TEACHERS)),
        students=[_ab_student_json(v) for v in AB_STUDENTS],
        code=code("report_ablations"),
    output:
        tidy=report(f"{AB}/ablations_tidy.csv", category="Ablations", caption="../docs/report/ablations.rst"),
        md=f"{AB}/ablations.md",
        latency=f"{AB}/ablations_latency.csv",
        png=report(f"{AB}/figures/ablations.png", category="Ablations", caption="../docs/report/ablations.rst"),
        pdf=f"{AB}/figures/ablations.pdf",
    params:
        preset=PRESET,
        te=te,
        cells=shlex.quote(json.dumps(cells_json(AB_EXP))),
        out_dir=lambda w, output: os.path.dirname(output.tidy),
        dpi=config["report"]["dpi"],
        edge_flag="" if AB_EDGE_METRICS else "--no-edge-metrics",
        students=lambda w, input: " ".join(f"{v}={p}" for v, p in zip(AB_STUDENTS, input.students)),
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
        "{params.te} report-ablations --cells {params.cells} --preset {params.preset} --metrics-dir {params.out_dir}/metrics "
        "--teacher-dir {params.out_dir}/teacher --students {params.students} {params.edge_flag} --dpi {params.dpi} "
        "--out-dir {params.out_dir} "
        "> {log} 2>&1"
