# Grouping with edges: BGP for UIS, pseudo-panoptic labels for WPS. With config shards.bgp /
# shards.wps: one `<stage>_shard` job per shard of images, the rule itself gathering them.
#
# {params.te}: the `trace-edges` command line (why a function of `input`: rules/data.smk).


rule bgp_shard:
    """BGP of one shard of the images (config shards.bgp) with one edge source; rule `bgp` gathers."""
    input:
        manifest=f"{R}/data/manifest.json",
        proposals=f"{R}/proposals/{PROPOSALS}/proposals.json",
        edges=f"{R}/edges/{{source}}/manifest.json",
        code=code("bgp"),
    output:
        shard=f"{R}/bgp/{PROPOSALS}/{{source}}/shards/shard_{{shard}}.json",
    params:
        te=lambda wildcards, input: TE,
        bgp=as_json(config["bgp"]),
        edges_dir=lambda w, input: os.path.dirname(input.edges),
        out=lambda w: f"{R}/bgp/{PROPOSALS}/{w.source}/instances.json",
        shard=shard_arg("bgp"),
    wildcard_constraints:
        source="|".join(EDGE_SOURCES),
        shard=r"\d+",
    log:
        f"{LOGS}/bgp/{PROPOSALS}/{{source}}_shard_{{shard}}.log",
    benchmark:
        f"{BENCH}/bgp/{PROPOSALS}/{{source}}_shard_{{shard}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=shard_runtime("bgp", 2.0),
    conda:
        ENV
    shell:
        "{params.te} bgp --params '{params.bgp}' --manifest {input.manifest} --proposals {input.proposals} "
        "--edges {params.edges_dir} --out {params.out} {params.shard} --threads {threads} > {log} 2>&1"


rule bgp:
    """Refine the base proposals with one edge source: split -> propagate -> merge (paper §3.5);
    sharded: the gather, concatenating what the shards wrote."""
    input:
        manifest=f"{R}/data/manifest.json",
        proposals=f"{R}/proposals/{PROPOSALS}/proposals.json",
        edges=f"{R}/edges/{{source}}/manifest.json",
        shards=lambda w: shard_files("bgp", f"{R}/bgp/{PROPOSALS}/{w.source}"),
        code=code("bgp"),
    output:
        f"{R}/bgp/{PROPOSALS}/{{source}}/instances.json",
    params:
        te=lambda wildcards, input: TE,
        bgp=as_json(config["bgp"]),
        edges_dir=lambda w, input: os.path.dirname(input.edges),
        gather=gather_arg,
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
        "--edges {params.edges_dir} --out {output} {params.gather} --threads {threads} > {log} 2>&1"


rule wps_shard:
    """Pseudo-panoptic labels of one shard of the images (config shards.wps); rule `wps` gathers."""
    input:
        manifest=f"{R}/data/manifest.json",
        edges=lambda w: [] if w.source == "none" else [f"{R}/edges/{w.source}/manifest.json"],
        code=code("wps"),
    output:
        shard=f"{R}/wps/{{source}}/shards/shard_{{shard}}.json",
    params:
        te=lambda wildcards, input: TE,
        wps=as_json(config["wps"]),
        edges_arg=lambda w: "" if w.source == "none" else f"--edges {R}/edges/{w.source}",
        out=lambda w: f"{R}/wps/{w.source}/panoptic.json",
        shard=shard_arg("wps"),
    wildcard_constraints:
        source="|".join(UIS_SOURCES),
        shard=r"\d+",
    log:
        f"{LOGS}/wps/{{source}}_shard_{{shard}}.log",
    benchmark:
        f"{BENCH}/wps/{{source}}_shard_{{shard}}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=shard_runtime("wps", 0.2),
    conda:
        ENV
    shell:
        "{params.te} wps --params '{params.wps}' --manifest {input.manifest} {params.edges_arg} --out {params.out} "
        "{params.shard} --threads {threads} > {log} 2>&1"


rule wps:
    """Pseudo-panoptic labels (PNG + JSON) from the semantic source plus one edge source ('none' = no edges);
    sharded: the gather, writing the panoptic JSON of what the shards wrote."""
    input:
        manifest=f"{R}/data/manifest.json",
        edges=lambda w: [] if w.source == "none" else [f"{R}/edges/{w.source}/manifest.json"],
        shards=lambda w: shard_files("wps", f"{R}/wps/{w.source}"),
        code=code("wps"),
    output:
        f"{R}/wps/{{source}}/panoptic.json",
    params:
        te=lambda wildcards, input: TE,
        wps=as_json(config["wps"]),
        edges_arg=lambda w: "" if w.source == "none" else f"--edges {R}/edges/{w.source}",
        gather=gather_arg,
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
        "{params.gather} --threads {threads} > {log} 2>&1"
