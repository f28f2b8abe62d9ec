"""The DVC stages depend on everything their preset's run reads: the Snakefile, the rules, the
package code (each stage's derived code set lies in src/trace_edges) and every config file the preset
merges, as a file and as params, so `dvc status` reports any change to them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from workflow_helpers import PY, ROOT, make_snapshot, run

#: DVC stage -> the config files its command merges, in order (config.yaml is the Snakefile's
#: `configfile:`, every `--configfile` goes on top of it)
PRESET_CONFIGS = {"embedded": ["config.yaml"], "paper": ["config.yaml", "config.paper.yaml"]}


def _stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _entries(items) -> list[str]:
    return [next(iter(i)) if isinstance(i, dict) else i for i in items]


def test_every_stage_has_its_preset():
    assert set(_stages()) == set(PRESET_CONFIGS)
    for name, stage in _stages().items():
        merged = [a for a in stage["cmd"].split("--configfile")[1:]]
        assert [m.split()[0] for m in merged] == PRESET_CONFIGS[name][-1:], stage["cmd"]


@pytest.mark.parametrize("name", sorted(PRESET_CONFIGS))
def test_stage_deps_cover_code_rules_and_every_config(name):
    stage = _stages()[name]
    deps = set(stage["deps"])
    assert {"Snakefile", "rules", "src/trace_edges", *PRESET_CONFIGS[name]} <= deps
    if name == "embedded":
        assert {"data/coco_mini", "data/coco_train_mini"} <= deps
    params = stage["params"]
    assert _entries(params) == PRESET_CONFIGS[name]
    for p in params:  # each config file whole: any key can change a result
        assert isinstance(p, dict) and list(p.values()) == [None], p


def _placeholder_outputs(wd: Path, stage: dict) -> None:
    """Empty stand-ins for a stage's outputs, so `dvc commit` can record a lock entry without a run."""
    for item in (*stage["outs"], *stage.get("metrics", ()), *stage.get("plots", ())):
        rel = next(iter(item)) if isinstance(item, dict) else item
        p = wd / rel
        if p.suffix:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("{}\n" if p.suffix == ".json" else "AP,edge_source\n" if p.suffix == ".csv" else "")
        else:
            p.mkdir(parents=True, exist_ok=True)
            (p / "placeholder").write_text("")


def _status(wd: Path, stage: str) -> dict:
    res = run([PY, "-m", "dvc", "status", stage, "--json"], wd)
    return json.loads(res.stdout or "{}")


def test_editing_config_yaml_makes_the_paper_stage_stale(tmp_path):
    """In a git + DVC copy of the project with a dvc.lock entry for `paper` (placeholder outputs, no
    run): a key edited in config.yaml, which config.paper.yaml is merged onto, is a change of `paper`."""
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    wd = make_snapshot(tmp_path / "proj")
    _placeholder_outputs(wd, _stages()["paper"])
    run([PY, "-m", "dvc", "commit", "-f", "paper"], wd)
    lock = yaml.safe_load((wd / "dvc.lock").read_text())["stages"]["paper"]
    assert {"config.yaml", "config.paper.yaml"} <= {d["path"] for d in lock["deps"]}
    assert {"config.yaml", "config.paper.yaml"} <= set(lock["params"])
    # importing the package (bytecode, the code-set cache under __pycache__) changes nothing
    run([PY, "-c", "from trace_edges import provenance; [provenance.code_digest(s) for s in provenance.STAGES]"], wd)
    assert _status(wd, "paper") == {}
    cfg = wd / "config.yaml"
    text = cfg.read_text()
    edited = text.replace("  min_area: 64\n  edge_threshold", "  min_area: 65\n  edge_threshold", 1)
    assert edited != text  # wps.min_area: a key config.paper.yaml does not override
    cfg.write_text(edited)
    status = _status(wd, "paper")
    assert "paper" in status, status
    assert "config.yaml" in json.dumps(status["paper"]), status
