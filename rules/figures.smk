# Tables and figures, registered for `snakemake --report`.

_METRICS = (
    [f"{R}/metrics/uis/{s}.json" for s in UIS_SOURCES]
    + [f"{R}/metrics/wps/{s}.json" for s in UIS_SOURCES]
    + [f"{R}/metrics/edges/{s}.json" for s in EDGE_SOURCES]
)

_NOTES = [
    f"preset `{PRESET}`, dataset `{config['data']['dataset']}`; UIS proposals: `{PROPOSALS}`; "
    f"WPS semantic source: `{config['wps']['semantic_source']}`"
    + (" (ORACLE ground-truth semantics: isolates what the edges add)" if config["wps"]["semantic_source"] == "oracle_gt" else ""),
    "row `none` = the baseline without edges (proposals as they are; semantic regions split by connectivity only).",
]


rule tables:
    """Results table (edge source x AP/AR/PQ/ODS/OIS/clDice), tidy CSV and DVC summary metrics."""
    input:
        metrics=_METRICS,
        code=code("report"),
    output:
        csv=report(f"{R}/tables/results.csv", category="Tables", caption="../docs/report/results.rst"),
        md=f"{R}/tables/results.md",
        tidy=f"{R}/tables/metrics_tidy.csv",
        summary=f"{R}/tables/summary.json",
    params:
        sources=" ".join(UIS_SOURCES),
        notes=" ".join("--note " + shlex.quote(n) for n in _NOTES),
        out_dir=f"{R}/tables",
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
        "{TE} report-tables --metrics {input.metrics} --preset {PRESET} --sources {params.sources} "
        "{params.notes} --out-dir {params.out_dir} > {log} 2>&1"


rule figure_qualitative:
    """Image | GT instance edges | each edge source | masks before/after BGP with each source."""
    input:
        manifest=f"{R}/data/manifest.json",
        edges=[f"{R}/edges/{s}/manifest.json" for s in EDGE_SOURCES],
        results=[uis_results_path(s) for s in UIS_SOURCES],
        code=code("report"),
    output:
        png=report(f"{R}/figures/qualitative.png", category="Figures", caption="../docs/report/qualitative.rst"),
        pdf=f"{R}/figures/qualitative.pdf",
    params:
        edges=" ".join(f"{s}={R}/edges/{s}" for s in EDGE_SOURCES),
        results=" ".join(f"{s}={uis_results_path(s)}" for s in UIS_SOURCES),
        ids=" ".join(str(i) for i in config["report"]["qualitative_images"]),
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
        "{TE} report-figure --manifest {input.manifest} --edges {params.edges} --results {params.results} "
        "--image-ids {params.ids} --dpi {params.dpi} --out-png {output.png} --out-pdf {output.pdf} > {log} 2>&1"


# ---- teacher figures (paper Fig. 1b, IEP curves, Fig. 5) on one image -------------------------
_TFIG_IMAGE = (config["report"]["qualitative_images"] or [None])[0]


def teacher_figure_targets():
    if "trace_teacher" not in EDGE_SOURCES:
        return []
    return [f"{R}/figures/teacher_{f}.{ext}" for f in ("pca", "kl", "neighbours") for ext in ("png", "pdf")]


rule teacher_figure:
    """Self-attention PCA along the trajectory with t* marked (Fig. 1b), KL curves + t* histogram,
    neighbour attention maps at a boundary and an interior pixel (Fig. 5)."""
    input:
        manifest=f"{R}/data/manifest.json",
        iep=f"{TDIR}/iep.json",
        model=_model_input,
        code=code("teacher_figures"),
    output:
        png=report(f"{R}/figures/teacher_{{fig}}.png", category="Teacher",
                   caption="../docs/report/teacher_figures.rst"),
        pdf=f"{R}/figures/teacher_{{fig}}.pdf",
    params:
        teacher=as_json(TEACHER),
        image=lambda w: "" if w.fig == "kl" else (
            f"--image-id {_TFIG_IMAGE}" if _TFIG_IMAGE is not None else "--image-id first"),
        dpi=config["report"]["dpi"],
        seed=config["seed"],
    wildcard_constraints:
        fig="pca|kl|neighbours",
    log:
        f"{LOGS}/figures/teacher_{{fig}}.log",
    benchmark:
        f"{BENCH}/figures/teacher_{{fig}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        ENV
    shell:
        "{TE} teacher-figure --figure {wildcards.fig} --params '{params.teacher}' --manifest {input.manifest} "
        "{params.image} --iep {input.iep} --seed {params.seed} --dpi {params.dpi} "
        "--out-png {output.png} --out-pdf {output.pdf} --threads {threads} > {log} 2>&1"
