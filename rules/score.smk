# Scoring: UIS mask AP/AR (pycocotools), WPS PQ (COCO panoptic API semantics), edges ODS/OIS/clDice.
#
# {params.te}: the `trace-edges` command line (why a function of `input`: rules/data.smk).





rule score_uis:
    """Class-agnostic mask AP/AR of the proposals ('none') or of their BGP refinement with one source."""
    input:
        manifest=f"{R}/data/manifest.json",
        results=lambda w: uis_results_path(w.source),
        code=code("score"),
    output:
        f"{R}/metrics/uis/{{source}}.json",
    params:
        te=lambda wildcards, input: TE,
    wildcard_constraints:
        source="|".join(UIS_SOURCES),
    log:
        f"{LOGS}/score/uis_{{source}}.log",
    benchmark:
        f"{BENCH}/score/uis_{{source}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        ENV
    shell:
        "{params.te} score-uis --manifest {input.manifest} --results {input.results} --label {wildcards.source} "
        "--out {output} > {log} 2>&1"


rule score_wps:
    """PQ/SQ/RQ (All/Things/Stuff, per class) of the pseudo-panoptic labels."""
    input:
        manifest=f"{R}/data/manifest.json",
        pred=f"{R}/wps/{{source}}/panoptic.json",
        code=code("score"),
    output:
        f"{R}/metrics/wps/{{source}}.json",
    params:
        te=lambda wildcards, input: TE,
    wildcard_constraints:
        source="|".join(UIS_SOURCES),
    log:
        f"{LOGS}/score/wps_{{source}}.log",
    benchmark:
        f"{BENCH}/score/wps_{{source}}.tsv"
    threads: config["score"]["threads"]
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        ENV
    shell:
        "{params.te} score-wps --manifest {input.manifest} --pred {input.pred} --label {wildcards.source} "
        "--out {output} --threads {threads} > {log} 2>&1"


rule score_edges:
    """ODS/OIS (BSDS protocol, pyEdgeEval) and clDice of one edge source against the instance-edge GT."""
    input:
        manifest=f"{R}/data/manifest.json",
        edges=f"{R}/edges/{{source}}/manifest.json",
        code=code("score"),
    output:
        f"{R}/metrics/edges/{{source}}.json",
    params:
        te=lambda wildcards, input: TE,
        score=as_json(config["score"]),
        edges_dir=lambda w, input: os.path.dirname(input.edges),
    wildcard_constraints:
        source="|".join(EDGE_SOURCES),
    log:
        f"{LOGS}/score/edges_{{source}}.log",
    benchmark:
        f"{BENCH}/score/edges_{{source}}.tsv"
    priority: MAIN_CHAIN_PRIORITY
    threads: config["score"]["threads"]
    resources:
        mem_mb=3000,
        runtime=60,
    conda:
        ENV
    shell:
        "{params.te} score-edges --params '{params.score}' --manifest {input.manifest} --edges {params.edges_dir} "
        "--out {output} --threads {threads} > {log} 2>&1"
