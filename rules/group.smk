# Grouping with edges: BGP for UIS, pseudo-panoptic labels for WPS.
#
# {params.te}: the `trace-edges` command line (why a function of `input`: rules/data.smk).


rule bgp:
    """Refine the base proposals with one edge source: split -> propagate -> merge (paper §3.5)."""
    input:
        manifest=f"{R}/data/manifest.json",
        proposals=f"{R}/proposals/{PROPOSALS}/proposals.json",
        edges=f"{R}/edges/{{source}}/manifest.json",
        code=code("bgp"),
    output:
        f"{R}/bgp/{PROPOSALS}/{{source}}/instances.json",
    params:
        te=lambda wildcards, input: TE,
        bgp=as_json(config["bgp"]),
        edges_dir=lambda w, input: os.path.dirname(input.edges),
    wildcard_constraints:
        source="|".join(EDGE_SOURCES),
    log:
        f"{LOGS}/bgp/{PROPOSALS}/{{source}}.log",
    benchmark:
        f"{BENCH}/bgp/{PROPOSALS}/{{source}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    shell:
        "{params.te} bgp --params '{params.bgp}' --manifest {input.manifest} --proposals {input.proposals} "
        "--edges {params.edges_dir} --out {output} --threads {threads} > {log} 2>&1"


rule wps:
    """Pseudo-panoptic labels (PNG + JSON) from the semantic source plus one edge source ('none' = no edges)."""
    input:
        manifest=f"{R}/data/manifest.json",
        edges=lambda w: [] if w.source == "none" else [f"{R}/edges/{w.source}/manifest.json"],
        code=code("wps"),
    output:
        f"{R}/wps/{{source}}/panoptic.json",
    params:
        te=lambda wildcards, input: TE,
        wps=as_json(config["wps"]),
        edges_arg=lambda w: "" if w.source == "none" else f"--edges {R}/edges/{w.source}",
    wildcard_constraints:
        source="|".join(UIS_SOURCES),
    log:
        f"{LOGS}/wps/{{source}}.log",
    benchmark:
        f"{BENCH}/wps/{{source}}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=60,
    conda:
        ENV
    shell:
        "{params.te} wps --params '{params.wps}' --manifest {input.manifest} {params.edges_arg} --out {output} "
        "--threads {threads} > {log} 2>&1"
