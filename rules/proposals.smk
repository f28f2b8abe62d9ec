# Base instance proposals for UIS (the baselines TRACE refines).


rule proposals:
    """Base proposals as a COCO results JSON (felzenszwalb offline, or an external JSON)."""
    input:
        manifest=f"{R}/data/manifest.json",
        external=([config["proposals"]["external"]["path"]] if PROPOSALS == "external" else []),
        code=code("proposals"),
    output:
        f"{R}/proposals/{PROPOSALS}/proposals.json",
    params:
        proposals=as_json(config["proposals"]),
    log:
        f"{LOGS}/proposals/{PROPOSALS}.log",
    benchmark:
        f"{BENCH}/proposals/{PROPOSALS}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=60,
    conda:
        ENV
    shell:
        "{TE} proposals --params '{params.proposals}' --manifest {input.manifest} --out {output} "
        "--threads {threads} > {log} 2>&1"
