"""The one-image Python API (trace_edges.api, docs/api.md): its documented example runs, it is light
to import, and it computes what the stages compute."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from workflow_helpers import ROOT

DOC = ROOT / "docs" / "api.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_docs_example_runs(monkeypatch, capsys):
    blocks = _python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) == 1 and "edge_source(" in blocks[0] and "bgp(" in blocks[0]
    monkeypatch.chdir(ROOT)
    exec(compile(blocks[0], str(DOC), "exec"), {"__name__": "docs_api_example"})
    assert "after BGP with sobel edges" in capsys.readouterr().out


def test_import_is_light():
    code = ("import sys, trace_edges, trace_edges.api; "
            "heavy = [m for m in ('torch', 'numpy', 'diffusers', 'skimage') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                   env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""})


def test_edge_source_equals_the_edges_stage(tmp_path):
    from trace_edges.api import edge_source
    from trace_edges.config import load_config
    from trace_edges.data.folder import prepare_images
    from trace_edges.edges.store import MAX_ROUNDTRIP_ERROR, EdgeSet
    from trace_edges.stages.edges import run_edges

    img = ROOT / "data/coco_mini/images/000000037777.jpg"
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "x.jpg").write_bytes(img.read_bytes())
    prepare_images({"dataset": "images", "root": str(tmp_path / "photos")}, tmp_path / "data")
    cfg = load_config(ROOT / "config.yaml")
    for name in ("sobel", "canny"):
        run_edges(name, cfg["edges"], tmp_path / "data" / "manifest.json", tmp_path / name)
        stored = EdgeSet(tmp_path / name).load(1)
        ours = edge_source(name, ROOT / "config.yaml")(img)
        assert ours.shape == stored.shape and np.abs(ours - stored).max() <= MAX_ROUNDTRIP_ERROR + 1e-7


def test_bgp_is_the_stage_function_and_keeps_empty_input_empty(rgb_37777):
    from trace_edges.api import bgp, edge_source, proposals
    from trace_edges.bgp import bgp_params, run_bgp

    over = {"bgp": {"propagate": {"enabled": False}}}
    E = edge_source("sobel")(rgb_37777)
    masks, scores = proposals(rgb_37777)
    ours = bgp(masks, scores, E, over)
    ref = run_bgp(masks, scores, E, bgp_params(over["bgp"]))
    assert len(ours[0]) == len(ref[0]) and all((a == b).all() for a, b in zip(ours[0], ref[0]))
    assert np.array_equal(ours[1], ref[1])
    empty_masks, empty_scores = bgp([], [], E)
    assert empty_masks == [] and len(empty_scores) == 0


def test_student_needs_a_checkpoint():
    from trace_edges.api import edge_source
    from trace_edges.errors import ConfigError

    with pytest.raises(ConfigError, match="checkpoint"):
        edge_source("trace_student")
