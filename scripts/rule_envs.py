#!/usr/bin/env python
"""Which conda env each job of the workflow would run in under ``snakemake --sdm conda``.

    python scripts/rule_envs.py                                   # embedded default
    python scripts/rule_envs.py --configfile config.paper.yaml    # the paper preset

A dry run through the Snakemake API (every job of ``all``, as with ``--forceall``) with the conda
deployment method set, as ``--sdm conda`` sets it; prints ``rule<TAB>gpu<TAB>env file`` once per
rule, in rule order (gpu: the job's ``gpu`` resource, 0 when it has none). Needs no conda
installation: it reads each job's env spec and never creates an env (``snakemake -n --sdm conda``
itself calls ``conda info`` and does not print the envs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rule_envs(configfiles: list[str], workdir: Path = ROOT) -> dict[str, tuple[int, str | None]]:
    """``{rule: (gpu resource, env file relative to the workdir or None)}`` for every rule in the DAG
    of ``all``."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import (ConfigSettings, DAGSettings, DeploymentMethod, DeploymentSettings,
                                          OutputSettings, ResourceSettings)

    workdir = Path(workdir).resolve()
    out: dict[str, tuple[int, str | None]] = {}
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        wf_api = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=[workdir / f for f in configfiles]),
            deployment_settings=DeploymentSettings(deployment_method={DeploymentMethod.CONDA}),
            snakefile=workdir / "Snakefile",
            workdir=workdir,
        )
        wf_api.dag(DAGSettings(forceall=True))
        wf = wf_api._workflow  # the DAG API builds it only to execute; list as `--list-conda-envs` does
        wf._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
        wf._build_dag()
        for job in sorted(wf.dag.jobs, key=lambda j: j.rule.name):
            spec = job.conda_env_spec
            env = None
            if spec is not None:
                env = str(Path(str(spec.file.get_path_or_uri(secret_free=True))).resolve().relative_to(workdir))
            row = (int(job.resources.get("gpu", 0)), env)
            if out.setdefault(job.rule.name, row) != row:
                raise RuntimeError(f"rule {job.rule.name}: jobs differ in (gpu, env): {out[job.rule.name]}, {row}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configfile", nargs="*", default=[], help="configs merged on top of config.yaml")
    ap.add_argument("--directory", default=str(ROOT), help="the project checkout (default: this one)")
    args = ap.parse_args(argv)
    for rule, (gpu, env) in rule_envs(["config.yaml", *args.configfile], Path(args.directory)).items():
        print(f"{rule}\t{gpu}\t{env}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
