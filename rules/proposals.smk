# Base instance proposals for UIS (the baselines TRACE refines).
#
# {params.te}: the `trace-edges` command line (why a function of `input`: rules/data.smk).

MASKCUT = config["proposals"]["maskcut"]
MASKCUT_TINY = PROPOSALS == "maskcut" and MASKCUT["tiny"]
MASKCUT_GPU = PROPOSALS == "maskcut" and not MASKCUT["tiny"] and MASKCUT["device"] != "cpu"
# sharded (config shards.proposals): `proposals_shard` jobs run MaskCut, `proposals` only gathers
# (no GPU, no model). The ablation grid's ab_proposals always runs unsharded (rules/ablations.smk).
PROPOSALS_ON_GPU = MASKCUT_GPU and SHARDS["proposals"] == 1


# MaskCut's tiny ViT, so Snakemake builds it first; other methods and hub models need none (also
# rules/ablations.smk's ab_proposals)
_proposals_model = [f"{MASKCUT['model']}/config.json"] if MASKCUT_TINY else []


rule build_tiny_vit:
    """A tiny random ViT in transformers layout for MaskCut (embedded default only)."""
    input:
        code=code("build_tiny_vit"),
    output:
        f"{MASKCUT['model']}/config.json",
    params:
        te=lambda wildcards, input: TE,
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
        seed=config["seed"],
    log:
        f"{LOGS}/proposals/build_tiny_vit.log",
    benchmark:
        f"{BENCH}/proposals/build_tiny_vit.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        ENV
    shell:
        "{params.te} build-tiny-vit --seed {params.seed} --out-dir {params.out_dir} > {log} 2>&1"


rule proposals_shard:
    """Base proposals of one shard of the images (config shards.proposals); rule `proposals` gathers."""
    input:
        manifest=f"{R}/data/manifest.json",
        external=([config["proposals"]["external"]["path"]] if PROPOSALS == "external" else []),
        model=_proposals_model,
        code=code("proposals"),
    output:
        shard=f"{R}/proposals/{PROPOSALS}/shards/shard_{{shard}}.json",
    params:
        te=lambda wildcards, input: TE,
        proposals=as_json(config["proposals"]),
        out=f"{R}/proposals/{PROPOSALS}/proposals.json",
        shard=shard_arg("proposals"),
    wildcard_constraints:
        shard=r"\d+",
    log:
        f"{LOGS}/proposals/{PROPOSALS}_shard_{{shard}}.log",
    benchmark:
        f"{BENCH}/proposals/{PROPOSALS}_shard_{{shard}}.tsv"
    threads: 8 if MASKCUT_GPU else 1  # MaskCut: cores for the BLAS eigen-solves of the 3600-node graph
    resources:
        gpu=1 if MASKCUT_GPU else 0,
        mem_mb=16000 if MASKCUT_GPU else 3000,
        runtime=shard_runtime("proposals", 40.0),  # MaskCut: ~40 CPU-s per image (paper_scale.md)
    conda:
        GPU_ENV if MASKCUT_GPU else ENV
    shell:
        "{params.te} proposals --params '{params.proposals}' --manifest {input.manifest} --out {params.out} "
        "{params.shard} --threads {threads} > {log} 2>&1"


rule proposals:
    """Base proposals as a COCO results JSON (felzenszwalb offline, maskcut on a DINO ViT, or an external
    JSON); sharded: the gather, concatenating what the shards wrote."""
    input:
        manifest=f"{R}/data/manifest.json",
        external=([config["proposals"]["external"]["path"]] if PROPOSALS == "external" else []),
        model=_proposals_model,
        shards=shard_files("proposals", f"{R}/proposals/{PROPOSALS}"),
        code=code("proposals"),
    output:
        f"{R}/proposals/{PROPOSALS}/proposals.json",
    params:
        te=lambda wildcards, input: TE,
        proposals=as_json(config["proposals"]),
        gather=gather_arg,
    log:
        f"{LOGS}/proposals/{PROPOSALS}.log",
    benchmark:
        f"{BENCH}/proposals/{PROPOSALS}.tsv"
    threads: 8 if PROPOSALS_ON_GPU else 1  # MaskCut: cores for the BLAS eigen-solves of the 3600-node graph
    resources:
        gpu=1 if PROPOSALS_ON_GPU else 0,
        mem_mb=16000 if PROPOSALS_ON_GPU else 3000,
        runtime=2880 if PROPOSALS_ON_GPU else 60,  # ~10-20 s per COCO image; per-image resume
    conda:
        GPU_ENV if PROPOSALS_ON_GPU else ENV
    shell:
        "{params.te} proposals --params '{params.proposals}' --manifest {input.manifest} --out {output} "
        "{params.gather} --threads {threads} > {log} 2>&1"
