"""``trace-edges pull``: fetch a run's cached artifacts with DVC and hand them back to Snakemake.

The reviewer flow is: fresh clone -> ``trace-edges pull`` -> ``snakemake -n`` says "Nothing to be
done". DVC restores files with new, arbitrary modification times, which Snakemake would read as
"inputs newer than outputs". So after ``dvc pull`` this command

1. checks ``dvc status <stage>``: the pulled artifacts must belong to exactly this checkout (same
   code, rules, config and data as recorded in ``dvc.lock``) — otherwise it stops and says what
   changed, because adopting them would hide a needed rerun;
2. runs ``snakemake --touch`` so every pulled output is marked up to date in DAG order.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys

from trace_edges.errors import TraceEdgesError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pull", help="dvc pull a preset's artifacts and mark them up to date for Snakemake")
    p.add_argument("--stage", default="embedded", help="DVC stage = preset name (default: embedded)")
    p.add_argument("--configfile", default=None,
                   help="Snakemake config of that preset (default: config.yaml for embedded, "
                        "config.<stage>.yaml otherwise)")
    p.add_argument("--remote", default=None, help="DVC remote (default: the repository's default remote)")
    p.add_argument("--no-pull", action="store_true", help="skip `dvc pull` (artifacts already in place)")
    p.set_defaults(func=run)


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    log.info("$ %s", " ".join(cmd))
    return subprocess.run(cmd, capture_output=True, text=True)


def run(args: argparse.Namespace) -> None:
    configfile = args.configfile or ("config.yaml" if args.stage == "embedded" else f"config.{args.stage}.yaml")
    if not args.no_pull:
        cmd = [sys.executable, "-m", "dvc", "pull", args.stage] + (["--remote", args.remote] if args.remote else [])
        res = _run(cmd)
        if res.returncode != 0:
            raise TraceEdgesError(f"`dvc pull {args.stage}` failed:\n{res.stdout}{res.stderr}".rstrip(),
                                  fix="check that dvc.lock is committed for this stage and that the remote "
                                      "holds its artifacts (`dvc remote list`, `dvc push` on the machine that ran it)")
    res = _run([sys.executable, "-m", "dvc", "status", args.stage])
    if res.returncode != 0 or "changed" in res.stdout or "modified" in res.stdout or "deleted" in res.stdout:
        raise TraceEdgesError(
            f"the artifacts of stage {args.stage!r} do not match this checkout:\n{res.stdout}{res.stderr}".rstrip(),
            fix="they were produced by other code/config/data; rerun the workflow (snakemake --cores all) "
                "instead of adopting them")
    res = _run([sys.executable, "-m", "snakemake", "--touch", "--cores", "1", "--configfile", configfile,
                "--quiet", "all"])
    if res.returncode != 0:
        raise TraceEdgesError(f"`snakemake --touch` failed:\n{res.stdout}{res.stderr}".rstrip())
    log.info("artifacts of %r pulled, verified against dvc.lock and adopted by Snakemake", args.stage)
