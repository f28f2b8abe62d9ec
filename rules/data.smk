# Data: official COCO 2017 download (paper preset only) and the prepare stage.

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
        data=as_json(_D),
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
        "{TE} download-coco --params '{params.data}' --root {_ROOT} --out {output} > {log} 2>&1"


def _dataset_inputs(wildcards):
    if _D["dataset"] == "coco2017_val":
        return [f"{_ROOT}/download_complete.json"]
    files = [f"{_ROOT}/{_D['instances_json']}", f"{_ROOT}/{_D['panoptic_json']}"]
    if _D["checksums"]:
        files.append(f"{_ROOT}/{_D['checksums']}")
    return files


rule prepare:
    """Verify checksums and annotations; write the manifest, class-agnostic GT and instance-edge GT."""
    input:
        dataset=_dataset_inputs,
        code=code("prepare"),
    output:
        manifest=f"{R}/data/manifest.json",
        instances=f"{R}/data/instances.json",
        agnostic=f"{R}/data/instances_agnostic.json",
        panoptic=f"{R}/data/panoptic.json",
    params:
        data=as_json(_D),
        edge_gt=as_json(config["edge_gt"]),
        out_dir=lambda w, output: os.path.dirname(output.manifest),
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
        "{TE} prepare --params '{params.data}' --edge-gt-params '{params.edge_gt}' "
        "--out-dir {params.out_dir} > {log} 2>&1"
