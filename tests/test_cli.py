"""The CLI: every stage is a subcommand; user errors exit 2 with one clear message, no traceback."""

from __future__ import annotations

import json

import pytest

from trace_edges.cli import build_parser, main


def test_every_stage_has_a_subcommand():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"download-coco", "prepare", "edges", "proposals", "bgp", "wps", "score-uis", "score-wps",
            "score-edges", "report-tables", "report-figure", "pull"} <= set(sub.choices)


def test_bad_params_exit_2_with_location(capsys, tmp_path):
    code = main(["bgp", "--params", json.dumps({"merge": {"iou": 7}}), "--manifest", str(tmp_path / "m.json"),
                 "--proposals", "p.json", "--edges", "e", "--out", str(tmp_path / "o.json")])
    err = capsys.readouterr().err
    assert code == 2 and "--params (bgp)" in err and "merge.iou" in err and "Traceback" not in err


def test_missing_manifest_names_the_file(capsys, tmp_path):
    code = main(["edges", "--source", "sobel", "--manifest", str(tmp_path / "nope.json"),
                 "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "nope.json" in err and "fix:" in err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_unknown_edge_source_exits_2_naming_the_choices(capsys, tmp_path):
    """--source choices come from the edge-source registry: argparse rejects an unknown one."""
    with pytest.raises(SystemExit) as ei:
        main(["edges", "--source", "laplace", "--manifest", str(tmp_path / "data/manifest.json"),
              "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert ei.value.code == 2 and "laplace" in err and "sobel" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["--version"])
    assert ei.value.code == 0 and "trace-edges" in capsys.readouterr().out


def test_threads_limit_without_importing_torch():
    """--threads caps torch's threads through OMP_NUM_THREADS (read at torch's import), so a stage
    that never uses torch does not import it just to set a thread count."""
    import subprocess
    import sys

    code = ("import os, sys\n"
            "from trace_edges.cli import limit_threads\n"
            "os.environ['OMP_NUM_THREADS'] = '7'\n"
            "limit_threads(1)\n"
            "assert 'torch' not in sys.modules\n"
            "import torch\n"
            "print(torch.get_num_threads())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"
