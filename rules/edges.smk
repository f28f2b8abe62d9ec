# Edge sources: one job per source, every image; consumers read maps through edges/store.py only.
#
# {params.te}: the `trace-edges` command line (why a function of `input`: rules/data.smk).


rule edges:
    """Edge maps in [0,1] (16-bit PNG per image + manifest.json) for one edge source."""
    input:
        manifest=f"{R}/data/manifest.json",
        code=code("edges"),
    output:
        f"{R}/edges/{{source}}/manifest.json",
    params:
        te=lambda wildcards, input: TE,
        edges=as_json(config["edges"]),
        out_dir=lambda w: f"{R}/edges/{w.source}",
    wildcard_constraints:
        source="|".join(GRADIENT_SOURCES) or "^$",
    log:
        f"{LOGS}/edges/{{source}}.log",
    benchmark:
        f"{BENCH}/edges/{{source}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        ENV
    shell:
        "{params.te} edges --source {wildcards.source} --params '{params.edges}' --manifest {input.manifest} "
        "--out-dir {params.out_dir} --threads {threads} > {log} 2>&1"
