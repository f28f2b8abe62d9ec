# The TRACE teacher (paper §3.1-3.4), one straight chain: tiny model build (embedded) -> null_prompt
# (the empty prompt's text-encoder outputs, once per model) -> trajectory (sharded, GPU: t*,
# divergence curve and ABDiv at t* per image) -> iep (gather: pools t*) and teacher_labels
# (pseudo-labels + the `trace_teacher` edge source). t* is computed once, in trajectory.

TEACHER = config["teacher"]
TBB = TEACHER["backbone"]
TFAM = TBB["family"]
TDIR = f"{R}/teacher/{TFAM}"
N_SHARDS = num_shards(num_images(config["data"]), TEACHER["shard_size"])


TINY_FAMILIES = _tiny_families()


rule build_tiny_models:
    """Tiny random models of every backbone family the run uses (embedded default only; diffusers
    layout, or transformers layout for an encoder) in ONE job: building is ~1 s per model, importing
    diffusers + transformers ~10 s per process. No output (and never run) with hub models."""
    input:
        code=code("build_tiny"),
    output:
        [f"build/models/tiny-{f}/{tiny_marker(f)}" for f in TINY_FAMILIES],
    params:
        te=te,
        families=" ".join(TINY_FAMILIES),
        seed=config["seed"],
    log:
        f"{LOGS}/teacher/build_tiny_models.log",
    benchmark:
        f"{BENCH}/teacher/build_tiny_models.tsv"
    priority: MAIN_CHAIN_PRIORITY
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    conda:
        ENV
    shell:
        "{params.te} build-tiny --family {params.families} --seed {params.seed} --out-root build/models > {log} 2>&1"


# Every diffusion backbone the run loads (main teacher, ablation cells), by artifact name: the
# name is a digest of what the embeddings depend on (model, revision, dtype, drop_t5), so cells on
# the same model share one file.
NULL_DIR = f"{R}/teacher/null_prompt"
NULL_PROMPTS = null_prompt_blocks()


rule null_prompt:
    """The empty prompt through the backbone's text encoders, once per model (the pipeline loaded
    without denoiser and VAE); the denoiser stages load this instead of the text encoders."""
    input:
        model=lambda w: tiny_model_input(NULL_PROMPTS[w.name]),
        code=code("null_prompt"),
    output:
        emb=f"{NULL_DIR}/{{name}}.safetensors",
        meta=f"{NULL_DIR}/{{name}}.json",
    params:
        te=te,
        backbone=lambda w: as_json({"backbone": NULL_PROMPTS[w.name]}),
    wildcard_constraints:
        name=r"[a-z0-9]+-[0-9a-f]{12}",
    log:
        f"{LOGS}/teacher/null_prompt_{{name}}.log",
    benchmark:
        f"{BENCH}/teacher/null_prompt_{{name}}.tsv"
    priority: MAIN_CHAIN_PRIORITY
    threads: 1
    resources:
        gpu=0 if TBB["tiny"] else 1,  # the text encoders on the configured device (T5-XXL: 4.8B)
        mem_mb=2000 if TBB["tiny"] else 24000,
        runtime=10 if TBB["tiny"] else 30,
    conda:
        ENV if TBB["tiny"] else GPU_ENV
    shell:
        "{params.te} null-prompt --params '{params.backbone}' --out {output.emb} > {log} 2>&1"


rule trajectory:
    """The teacher trajectory with self-attention capture for one shard: per image t* (IEP, or the
    fixed teacher.t_star), the divergence curve and the ABDiv map at t*."""
    input:
        manifest=f"{R}/data/manifest.json",
        model=_model_input,
        null_prompt=null_prompt_input(TBB),
        code=code("teacher"),
    output:
        shard=f"{TDIR}/trajectory/shard_{{shard}}.json",
    params:
        te=te,
        teacher=as_json(TEACHER),
        seed=config["seed"],
        out_dir=lambda w, output: os.path.dirname(output.shard),
        latency="",
        null_prompt=null_prompt_arg,
    wildcard_constraints:
        shard=r"\d+",
    log:
        f"{LOGS}/teacher/trajectory_{{shard}}.log",
    benchmark:
        f"{BENCH}/teacher/trajectory_{{shard}}.tsv"
    priority: MAIN_CHAIN_PRIORITY
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000 if not TBB["tiny"] else 2000,
        runtime=240 if not TBB["tiny"] else 10,
    conda:
        GPU_ENV
    shell:
        "{params.te} trajectory --params '{params.teacher}' --manifest {input.manifest} --shard {wildcards.shard} "
        "--seed {params.seed} --out-dir {params.out_dir} {params.latency} {params.null_prompt} --threads {threads} "
        "> {log} 2>&1"


rule iep:
    """Instance Emergence Points (Eq. 1) of every image pooled from the shards + the t* histogram."""
    input:
        shards=expand(f"{TDIR}/trajectory/shard_{{i}}.json", i=range(N_SHARDS)),
        code=code("teacher"),
    output:
        f"{TDIR}/iep.json",
    params:
        te=te,
    log:
        f"{LOGS}/teacher/iep.log",
    benchmark:
        f"{BENCH}/teacher/iep.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    shell:
        "{params.te} iep --shards {input.shards} --out {output} > {log} 2>&1"


rule teacher_labels:
    """Ternary pseudo-labels (§3.4) at the student's training size and the `trace_teacher` edge maps,
    from the ABDiv map at t* each trajectory shard stored."""
    input:
        manifest=f"{R}/data/manifest.json",
        shards=expand(f"{TDIR}/trajectory/shard_{{i}}.json", i=range(N_SHARDS)),
        code=code("teacher"),
    output:
        labels=f"{TDIR}/labels/manifest.json",
        edges=f"{R}/edges/trace_teacher/manifest.json",
    params:
        te=te,
        teacher=as_json(TEACHER),
        out_dir=lambda w, output: os.path.dirname(output.labels),
        edges_dir=lambda w, output: os.path.dirname(output.edges),
    log:
        f"{LOGS}/teacher/labels.log",
    benchmark:
        f"{BENCH}/teacher/labels.tsv"
    priority: MAIN_CHAIN_PRIORITY
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "{params.te} teacher-labels --params '{params.teacher}' --manifest {input.manifest} --shards {input.shards} "
        "--out-dir {params.out_dir} --edges-dir {params.edges_dir} > {log} 2>&1"
