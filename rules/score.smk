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


rule score_edges_shard:
    """The BSDS counts (every threshold) of one shard of the images (config shards.score_edges) for
    one edge source; rule `score_edges` pools them."""
    input:
        manifest=f"{R}/data/manifest.json",
        edges=f"{R}/edges/{{source}}/manifest.json",
        code=code("score"),
    output:
        shard=f"{R}/metrics/edges/{{source}}/shards/shard_{{shard}}.json",
    params:
        te=lambda wildcards, input: TE,
        score=as_json(config["score"]),
        edges_dir=lambda w, input: os.path.dirname(input.edges),
        out=lambda w: f"{R}/metrics/edges/{w.source}.json",
        shard=shard_arg("score_edges"),
    wildcard_constraints:
        source="|".join(EDGE_SOURCES),
        shard=r"\d+",
    log:
        f"{LOGS}/score/edges_{{source}}_shard_{{shard}}.log",
    benchmark:
        f"{BENCH}/score/edges_{{source}}_shard_{{shard}}.tsv"
    priority: MAIN_CHAIN_PRIORITY
    threads: 1
    resources:
        mem_mb=2000,
        runtime=shard_runtime("score_edges", 4.0),
    conda:
        ENV
    shell:
        "{params.te} score-edges --params '{params.score}' --manifest {input.manifest} --edges {params.edges_dir} "
        "--out {params.out} {params.shard} --threads {threads} > {log} 2>&1"


rule score_edges:
    """ODS/OIS (BSDS protocol, pyEdgeEval) and clDice of one edge source against the instance-edge GT;
    sharded: the gather, pooling the shards' counts (then clDice at the ODS threshold, every image)."""
    input:
        manifest=f"{R}/data/manifest.json",
        edges=f"{R}/edges/{{source}}/manifest.json",
        shards=lambda w: shard_files("score_edges", f"{R}/metrics/edges/{w.source}"),
        code=code("score"),
    output:
        f"{R}/metrics/edges/{{source}}.json",
    params:
        te=lambda wildcards, input: TE,
        score=as_json(config["score"]),
        edges_dir=lambda w, input: os.path.dirname(input.edges),
        gather=gather_arg,
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
        "--out {output} {params.gather} --threads {threads} > {log} 2>&1"
