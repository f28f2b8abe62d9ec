# Tables and figures, registered for `snakemake --report`.

_METRICS = [
    *(f"{R}/metrics/uis/{s}.json" for s in UIS_SOURCES),
    *(f"{R}/metrics/wps/{s}.json" for s in UIS_SOURCES),
    *(f"{R}/metrics/edges/{s}.json" for s in EDGE_SOURCES),
]

_ORACLE_NOTE = (" (ORACLE ground-truth semantics: isolates what the edges add)"
                if config["wps"]["semantic_source"] == "oracle_gt" else "")
_NOTES = [
    f"preset `{PRESET}`, dataset `{config['data']['dataset']}`; UIS proposals: `{PROPOSALS}`; "
    f"WPS semantic source: `{config['wps']['semantic_source']}`{_ORACLE_NOTE}",
    "row `none` = the baseline without edges (proposals as they are; semantic regions split by connectivity only).",
]


rule tables:
    """Results table (edge source x AP/AR/PQ/ODS/OIS/clDice), tidy CSV and DVC summary metrics."""
    input:
        metrics=_METRICS,
        code=code("report_tables"),
    output:
        csv=report(f"{R}/tables/results.csv", category="Tables", caption="../docs/report/results.rst"),
        md=f"{R}/tables/results.md",
        tidy=f"{R}/tables/metrics_tidy.csv",
        summary=f"{R}/tables/summary.json",
    params:
        preset=PRESET,
        te=te,
        sources=" ".join(UIS_SOURCES),
        notes=" ".join(f"--note {shlex.quote(n)}" for n in _NOTES),
        out_dir=lambda w, output: os.path.dirname(output.csv),
    log:
        f"{LOGS}/tables.log",
    benchmark:
        f"{BENCH}/tables.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        ENV
    shell:
        "{params.te} report-tables --metrics {input.metrics} --preset {params.preset} --sources {params.sources} "
        "{params.notes} --out-dir {params.out_dir} > {log} 2>&1"


rule figure_qualitative:
    """Image | GT instance edges (none for an images-only dataset) | each edge source | masks before/after
    BGP with each source."""
    input:
        manifest=f"{R}/data/manifest.json",
        edges=[f"{R}/edges/{s}/manifest.json" for s in EDGE_SOURCES],
        results=[uis_results_path(s) for s in UIS_SOURCES],
        code=code("report_figure"),
    output:
        png=report(f"{R}/figures/qualitative.png", category="Figures", caption="../docs/report/qualitative.rst"),
        pdf=f"{R}/figures/qualitative.pdf",
    params:
        te=te,
        edges=" ".join(f"{s}={R}/edges/{s}" for s in EDGE_SOURCES),
        results=" ".join(f"{s}={uis_results_path(s)}" for s in UIS_SOURCES),
        ids=" ".join(str(i) for i in FIG["qualitative"]),
        dpi=config["report"]["dpi"],
    log:
        f"{LOGS}/figure_qualitative.log",
    benchmark:
        f"{BENCH}/figure_qualitative.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "{params.te} report-figure --manifest {input.manifest} --edges {params.edges} --results {params.results} "
        "--image-ids {params.ids} --dpi {params.dpi} --out-png {output.png} --out-pdf {output.pdf} > {log} 2>&1"


# ---- BGP step by step on one image (paper Fig. 6) -------------------------------------------
_BGP_FIG_SOURCE = (config["report"]["bgp_edge_source"] if config["report"]["bgp_edge_source"] in EDGE_SOURCES
                   else EDGE_SOURCES[0])
_BGP_FIG_IMAGE = FIG["bgp"]  # the Snakefile checked it against the dataset


rule figure_bgp:
    """Paper Fig. 6: image | edges + walls | proposals | split | propagated | merged, on one image."""
    input:
        manifest=f"{R}/data/manifest.json",
        proposals=f"{R}/proposals/{PROPOSALS}/proposals.json",
        edges=f"{R}/edges/{_BGP_FIG_SOURCE}/manifest.json",
        code=code("bgp_figure"),
    output:
        png=report(f"{R}/figures/bgp_steps.png", category="Figures", caption="../docs/report/bgp_steps.rst"),
        pdf=f"{R}/figures/bgp_steps.pdf",
    params:
        te=te,
        bgp=as_json(config["bgp"]),
        edges_dir=lambda w, input: os.path.dirname(input.edges),
        image=f"--image-id {_BGP_FIG_IMAGE}" if _BGP_FIG_IMAGE else "",
        dpi=config["report"]["dpi"],
    log:
        f"{LOGS}/figures/bgp_steps.log",
    benchmark:
        f"{BENCH}/figures/bgp_steps.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "{params.te} report-bgp-figure --params '{params.bgp}' --manifest {input.manifest} --proposals {input.proposals} "
        "--edges {params.edges_dir} {params.image} --dpi {params.dpi} --out-png {output.png} --out-pdf {output.pdf} "
        "> {log} 2>&1"


# ---- teacher figures (paper Fig. 1b, IEP curves, Fig. 5) on one image -------------------------
_TFIG_IMAGE = (FIG["qualitative"] or [None])[0]
_TFIG_CAPTION = "../docs/report/teacher_figures.rst"


rule teacher_figures:
    """Self-attention PCA along the trajectory with t* marked (Fig. 1b), IEP curves + t* histogram,
    neighbour attention maps at a boundary and an interior pixel (Fig. 5): one job, one model load,
    one trajectory walk for the PCA and neighbour figures; the IEP curves are drawn from iep.json."""
    input:
        manifest=f"{R}/data/manifest.json",
        iep=f"{TDIR}/iep.json",
        model=_model_input,
        null_prompt=null_prompt_input(TBB),
        code=code("teacher_figures"),
    output:
        pca_png=report(f"{R}/figures/teacher_pca.png", category="Teacher", caption=_TFIG_CAPTION),
        pca_pdf=f"{R}/figures/teacher_pca.pdf",
        kl_png=report(f"{R}/figures/teacher_kl.png", category="Teacher", caption=_TFIG_CAPTION),
        kl_pdf=f"{R}/figures/teacher_kl.pdf",
        neighbours_png=report(f"{R}/figures/teacher_neighbours.png", category="Teacher", caption=_TFIG_CAPTION),
        neighbours_pdf=f"{R}/figures/teacher_neighbours.pdf",
    params:
        te=te,
        teacher=as_json(TEACHER),
        image=f"--image-id {_TFIG_IMAGE}" if _TFIG_IMAGE is not None else "--image-id first",
        dpi=config["report"]["dpi"],
        seed=config["seed"],
        out_dir=lambda w, output: os.path.dirname(output.pca_png),  # teacher_<figure>.{png,pdf} there
        null_prompt=lambda w, input: f"--null-prompt-dir {NULL_DIR}" if input.null_prompt else "",
    log:
        f"{LOGS}/figures/teacher_figures.log",
    benchmark:
        f"{BENCH}/figures/teacher_figures.tsv"
    threads: 1
    resources:
        gpu=0 if TBB["tiny"] else 1,  # walks one image's trajectory on the configured device
        mem_mb=4000 if TBB["tiny"] else 8000,  # as trajectory
        runtime=20 if TBB["tiny"] else 60,
    conda:
        ENV if TBB["tiny"] else GPU_ENV
    shell:
        "{params.te} teacher-figure --figure all --params '{params.teacher}' --manifest {input.manifest} "
        "{params.image} --iep {input.iep} --seed {params.seed} --dpi {params.dpi} "
        "--out-dir {params.out_dir} {params.null_prompt} --threads {threads} > {log} 2>&1"


# ---- teacher vs student latency (benchmarks/bench_speed.py, measured outside the DAG) ---------
# Timing is not a workflow job (parallel jobs would distort it): the benchmark script writes
# results/benchmarks/speed_<preset>.json, a tracked file; this rule only draws it. Without that file
# (e.g. the paper preset before anyone ran the benchmark on a GPU) the figure is not a target.
SPEED_JSON = f"results/benchmarks/speed_{PRESET}.json"


rule speed_figure:
    """Teacher (trajectory + IEP + ABDiv) vs student (one pass) ms/img, ours beside the paper's 81x."""
    input:
        speed=SPEED_JSON,
        code=code("report_speed"),
    output:
        png=report(f"{R}/figures/speed.png", category="Student", caption="../docs/report/speed.rst"),
        pdf=f"{R}/figures/speed.pdf",
    params:
        te=te,
        dpi=config["report"]["dpi"],
    log:
        f"{LOGS}/figures/speed.log",
    benchmark:
        f"{BENCH}/figures/speed.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        ENV
    shell:
        "{params.te} report-speed --speed-json {input.speed} --dpi {params.dpi} --out-png {output.png} "
        "--out-pdf {output.pdf} > {log} 2>&1"


# ---- every number of the paper beside ours (generated; docs in src/trace_edges/report/paper_vs_ours.py)
# the committed benchmarks that measure issue 14's protocol choices (those that exist are inputs)
from trace_edges.report.paper_vs_ours import EVIDENCE  # noqa: E402
PROTOCOL_EVIDENCE = {name: path for name, path in EVIDENCE.items() if os.path.exists(path)}


rule paper_vs_ours:
    """results/<preset>/paper_vs_ours.md: every paper number beside this run's."""
    input:
        summary=f"{R}/tables/summary.json",
        ablations=[f"{R}/ablations/ablations_tidy.csv"] if AB_ON else [],
        speed=[SPEED_JSON] if os.path.exists(SPEED_JSON) else [],
        evidence=list(PROTOCOL_EVIDENCE.values()),
        numbers="src/trace_edges/report/paper_numbers.yaml",
        code=code("report_paper_vs_ours"),
    output:
        f"{R}/paper_vs_ours.md",
    params:
        te=te,
        config=as_json(config),
        ablations=f"--ablations {R}/ablations/ablations_tidy.csv" if AB_ON else "",
        speed=f"--speed {SPEED_JSON}" if os.path.exists(SPEED_JSON) else "",
        evidence=" ".join(f"--evidence {name}={path}" for name, path in PROTOCOL_EVIDENCE.items()),
    log:
        f"{LOGS}/paper_vs_ours.log",
    benchmark:
        f"{BENCH}/paper_vs_ours.tsv"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        ENV
    shell:
        "{params.te} report-paper-vs-ours --config '{params.config}' --summary {input.summary} {params.ablations} "
        "{params.speed} {params.evidence} --out {output} > {log} 2>&1"


# The committed snapshot results/paper_vs_ours.md is a copy of one run's file, refreshed only on request
# (`snakemake --cores 1 publish_paper_vs_ours`): a default run never writes a git-tracked file, so it
# never dirties the checkout whose `git describe` every artifact's provenance records.
rule publish_paper_vs_ours:
    """Copy results/<preset>/paper_vs_ours.md to the committed snapshot results/paper_vs_ours.md."""
    input:
        f"{R}/paper_vs_ours.md",
    output:
        "results/paper_vs_ours.md",
    log:
        f"{LOGS}/publish_paper_vs_ours.log",
    benchmark:
        f"{BENCH}/publish_paper_vs_ours.tsv"
    threads: 1
    resources:
        mem_mb=200,
        runtime=2,
    conda:
        ENV
    shell:
        "cp {input} {output}.tmp && mv {output}.tmp {output} && echo 'copied {input} -> {output}' > {log}"


# ---- Fig. 8 analogue: self-attention PCA per backbone (the `backbone` ablation grid's teachers) --
_BB_CELLS = [c for c in AB_EXP.cells if c.grid == "backbone" and c.edges == "teacher"]
BACKBONE_BLOCKS = {c.cell: AB_TEACHERS[c.variant] for c in _BB_CELLS}


rule figure_backbones:
    """SA PCA at τ = 0 and at t*, and ABDiv at t*, for every backbone of the `backbone` grid (Fig. 8)."""
    input:
        manifest=f"{R}/data/manifest.json",
        models=[m for b in BACKBONE_BLOCKS.values() for m in tiny_model_input(b["backbone"])],
        null_prompt=[p for b in BACKBONE_BLOCKS.values() for p in null_prompt_input(b["backbone"])],
        code=code("teacher_figures"),
    output:
        png=report(f"{R}/figures/backbones_pca.png", category="Teacher", caption=_TFIG_CAPTION),
        pdf=f"{R}/figures/backbones_pca.pdf",
    params:
        te=te,
        backbones=as_json(BACKBONE_BLOCKS),
        teacher=as_json(TEACHER),
        image=f"--image-id {_TFIG_IMAGE}" if _TFIG_IMAGE is not None else "--image-id first",
        dpi=config["report"]["dpi"],
        seed=config["seed"],
        null_prompt=lambda w, input: f"--null-prompt-dir {NULL_DIR}" if input.null_prompt else "",
    log:
        f"{LOGS}/figures/backbones_pca.log",
    benchmark:
        f"{BENCH}/figures/backbones_pca.tsv"
    threads: 1
    resources:
        gpu=0 if TBB["tiny"] else 1,
        mem_mb=4000 if TBB["tiny"] else 80000,
        runtime=20 if TBB["tiny"] else 240,
    conda:
        ENV if TBB["tiny"] else GPU_ENV
    shell:
        "{params.te} teacher-figure --figure backbones --params '{params.teacher}' --backbones '{params.backbones}' "
        "--manifest {input.manifest} {params.image} --seed {params.seed} --dpi {params.dpi} "
        "--out-png {output.png} --out-pdf {output.pdf} {params.null_prompt} --threads {threads} > {log} 2>&1"
