# Data: official COCO 2017 download (paper preset only) and the prepare stage.
#
# Shell commands take the `trace-edges` command line (TE, Snakefile) as params.te: a function of
# `input`, so Snakemake's params rerun trigger leaves it out. TE names this machine's interpreter
# and checkout; moving either must not rerun the workflow (as when the commands named {TE}).

_D = config["data"]
_ROOT = _D["root"]


rule download_coco:
    """Official COCO 2017 val archives: streamed with resume/retries, md5-verified, unpacked atomically
    (a rerun after a code edit re-verifies the archives already there; it never downloads them again)."""
    input:
        code=code("download"),
    output:
        f"{_ROOT}/download_complete.json",
    params:
        te=lambda wildcards, input: TE,
        data=as_json(_D),
        root=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        f"{LOGS}/download_coco.log",
    benchmark:
        f"{BENCH}/download_coco.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=240,
    conda:
        ENV
    shell:
        "{params.te} download-coco --params '{params.data}' --root {params.root} --out {output} > {log} 2>&1"


# the dataset files prepare reads (rules/ablations.smk's ab_prepare too); no wildcards, so a list
if not HAS_GT:  # an images-only dataset: the image files themselves (adding one reruns prepare)
    _dataset_inputs = [f"{_ROOT}/{name}" for name in list_folder_images(_ROOT)]
elif _D["dataset"] == "coco2017_val":
    _dataset_inputs = [f"{_ROOT}/download_complete.json"]
else:
    _dataset_inputs = [f"{_ROOT}/{_D['instances_json']}", f"{_ROOT}/{_D['panoptic_json']}"] + (
        [f"{_ROOT}/{_D['checksums']}"] if _D["checksums"] else []
    )


# the GT files prepare derives: none for an images-only dataset (its manifest has "gt": null)
_GT_OUTPUTS = {
    "instances": f"{R}/data/instances.json",
    "agnostic": f"{R}/data/instances_agnostic.json",
    "panoptic": f"{R}/data/panoptic.json",
} if HAS_GT else {}
# figure image ids that could not be checked at parse time (no annotation file before a download):
# prepare refuses them before it reads any image
_UNCHECKED_IDS = {k: v for k, v in (("report.qualitative_images", config["report"]["qualitative_images"]),
                                    ("report.bgp_image", [config["report"]["bgp_image"]])) if v and v != [None]}


rule prepare:
    """Verify checksums and annotations; write the manifest, class-agnostic GT and instance-edge GT
    (an images-only dataset: decode every image, write the manifest only)."""
    input:
        dataset=_dataset_inputs,
        code=code("prepare"),
    output:
        manifest=f"{R}/data/manifest.json",
        **_GT_OUTPUTS,
    params:
        te=lambda wildcards, input: TE,
        data=as_json(_D),
        edge_gt=as_json(config["edge_gt"]),
        out_dir=lambda wildcards, output: os.path.dirname(output.manifest),
        check_ids=(f"--check-image-ids '{as_json(_UNCHECKED_IDS)}'" if SELECTED_IDS is None and _UNCHECKED_IDS
                   else ""),
    log:
        f"{LOGS}/prepare.log",
    benchmark:
        f"{BENCH}/prepare.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        ENV
    shell:
        "{params.te} prepare --params '{params.data}' --edge-gt-params '{params.edge_gt}' {params.check_ids} "
        "--out-dir {params.out_dir} > {log} 2>&1"
