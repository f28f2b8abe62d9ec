"""The conda env of every job under `snakemake --sdm conda` (scripts/rule_envs.py, a dry run through
the Snakemake API): with `gpu_env: cuda` (config.paper.yaml) the jobs that request a GPU run in
envs/trace-edges-gpu.yaml (CUDA torch) and every other job in envs/trace-edges.yaml; with the
embedded default (`gpu_env: cpu`) every job is in the CPU env. The `cuda` device/env mismatch is
refused at config time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workflow_helpers import ROOT, make_snapshot

from trace_edges.config import check_consistency, load_config
from trace_edges.errors import ConfigError

CPU_ENV, CUDA_ENV = "envs/trace-edges.yaml", "envs/trace-edges-gpu.yaml"


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    return make_snapshot(tmp_path_factory.mktemp("envs"))


def _envs(wd: Path, *configfiles: str) -> dict[str, tuple[int, str]]:
    res = subprocess.run([sys.executable, str(wd / "scripts/rule_envs.py"), "--directory", str(wd),
                          "--configfile", *configfiles], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [line.split("\t") for line in res.stdout.splitlines()]
    return {rule: (int(gpu), env) for rule, gpu, env in rows if rule != "all"}


def test_paper_preset_puts_gpu_jobs_in_the_cuda_env(snapshot):
    envs = _envs(snapshot, "config.paper.yaml")
    assert yaml.safe_load((ROOT / "config.paper.yaml").read_text())["gpu_env"] == "cuda"
    gpu = {r for r, (g, _) in envs.items() if g > 0}
    # the stages that load a real model on the GPU, MaskCut's ViT and the model figures included
    assert {"trajectory", "distill", "student_infer", "ab_trajectory", "ab_distill", "ab_student_infer",
            "proposals_shard", "teacher_figures", "student_figure", "figure_backbones"} <= gpu
    for rule, (g, env) in envs.items():
        assert env == (CUDA_ENV if g > 0 else CPU_ENV), (rule, g, env)
    # sharded MaskCut: the shards run the ViT on the GPU, the gather only concatenates
    assert {"prepare", "bgp", "score_uis", "tables", "proposals"} <= set(envs) - gpu


def test_embedded_default_runs_every_job_in_the_cpu_env(snapshot):
    envs = _envs(snapshot)
    assert {"trajectory", "distill", "student_infer"} <= {r for r, (g, _) in envs.items() if g > 0}
    assert {env for _, env in envs.values()} == {CPU_ENV}


def test_both_envs_list_the_same_packages_but_torch():
    def deps(path):
        doc = yaml.safe_load((ROOT / path).read_text())
        conda = [d for d in doc["dependencies"] if isinstance(d, str)]
        pip = next(d["pip"] for d in doc["dependencies"] if isinstance(d, dict))
        return conda, pip

    (cpu, cpu_pip), (cuda, cuda_pip) = deps(CPU_ENV), deps(CUDA_ENV)
    assert cpu_pip == cuda_pip
    torch_like = ("pytorch", "cpuonly", "cuda")
    assert [d for d in cpu if not d.startswith(torch_like)] == [d for d in cuda if not d.startswith(torch_like)]
    assert "cpuonly" in cpu and any(d.startswith(("pytorch-cuda", "pytorch-gpu", "cuda-version")) for d in cuda)


@pytest.mark.parametrize("override", [
    {"teacher": {"backbone": {"device": "cuda"}}},
    {"proposals": {"maskcut": {"device": "cuda"}}},
])
def test_cuda_device_without_the_cuda_env_is_refused(override):
    with pytest.raises(ConfigError, match="gpu_env"):
        load_config(ROOT / "config.yaml", override)
    cfg = load_config(ROOT / "config.yaml", {**override, "gpu_env": "cuda"})
    assert cfg["gpu_env"] == "cuda"
    check_consistency(load_config(ROOT / "config.yaml"))   # device: auto needs neither
