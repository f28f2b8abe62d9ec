# Audit: every DVC-tracked artifact against dvc.lock and its provenance against this checkout.
# Not part of `all` (it needs a dvc.lock): `snakemake audit` or `trace-edges audit`.
#
# {params.te}: the `trace-edges` command line (why a function of `input`: rules/data.smk).


rule audit:
    """Hash + provenance audit of this preset's DVC stage; fails (non-zero) on any difference."""
    input:
        lock="dvc.lock",
        code=code("audit"),
    output:
        f"{R}/audit/audit.json",
    params:
        te=lambda wildcards, input: TE,
        stage=PRESET,
        configfiles=" ".join(CONFIGFILES),
    log:
        # not under logs/ or benchmarks/: those are DVC outputs, and a new file there is "extra"
        f"{R}/audit/audit.log",
    benchmark:
        f"{R}/audit/audit.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    conda:
        ENV
    shell:
        "{params.te} audit --stage {params.stage} --configfile {params.configfiles} --out {output} > {log} 2>&1"
