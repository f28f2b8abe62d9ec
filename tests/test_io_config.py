"""Atomic writes, JSON errors, config validation with defaults."""

from __future__ import annotations

import json
import os
import stat

import pytest
import yaml

from trace_edges.config import load_config, load_workflow_config, parse_params, validate
from trace_edges.errors import ConfigError, DataError
from trace_edges.io import atomic_path, read_json, write_json


def test_atomic_path_failure_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_write_gets_the_mode_a_plain_write_gets(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "atomic.json", {"v": 1})  # mkstemp alone would leave 0600
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(old)
    mode = lambda name: stat.S_IMODE((tmp_path / name).stat().st_mode)  # noqa: E731
    assert mode("atomic.json") == mode("plain.json") == 0o666 & ~umask


def test_read_json_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [1, 2')
    with pytest.raises(DataError, match="bad.json.*not valid JSON"):
        read_json(bad)
    with pytest.raises(DataError, match="not found"):
        read_json(tmp_path / "nope.json")


def test_default_config_is_valid_and_complete(project_root):
    cfg = load_config(project_root / "config.yaml")
    assert cfg["preset"] == "embedded"
    assert cfg["bgp"]["merge"]["iou"] == 0.5
    assert cfg["bgp"]["propagate"]["steps"] == 256  # IRN's t


def test_propagation_rule_defaults_to_irn(project_root):
    """Issue 14 item 5: IRN's decision rule is the default everywhere (schema, embedded config, paper
    preset); the earlier per-mask rule stays an explicit option."""
    assert validate({})["bgp"]["propagate"]["rule"] == "irn"
    assert load_config(project_root / "config.yaml")["bgp"]["propagate"]["rule"] == "irn"
    paper = load_workflow_config(project_root / "config.yaml", project_root / "config.paper.yaml")
    assert paper["bgp"]["propagate"]["rule"] == "irn"
    assert validate({"bgp": {"propagate": {"rule": "per_mask"}}})["bgp"]["propagate"]["rule"] == "per_mask"


def test_defaults_fill_missing_nested_keys():
    cfg = validate({"bgp": {"propagate": {"steps": 10}}})
    assert cfg["bgp"]["propagate"]["steps"] == 10
    assert cfg["bgp"]["propagate"]["beta"] == 10
    assert cfg["bgp"]["merge"]["iou"] == 0.5
    assert cfg["data"]["root"] == "data/coco_mini"


@pytest.mark.parametrize("bad, where", [
    ({"bgp": {"merge": {"iou": 1.5}}}, "bgp.merge.iou"),
    ({"edges": {"sources": ["sobel", "laplace"]}}, "edges.sources.1"),
    ({"preset": "has space"}, "preset"),
    ({"bgp": {"typo_key": 1}}, "bgp"),
    ({"seed": -1}, "seed"),
    ({"teacher": {"mode": "fast", "divergence": "jsd"}}, "teacher.divergence"),  # cross-field: fast needs kl
])
def test_invalid_values_are_rejected_with_location(bad, where):
    with pytest.raises(ConfigError) as ei:
        validate(bad)
    assert where in str(ei.value)


def test_paper_preset_merges_and_validates(project_root):
    base = yaml.safe_load((project_root / "config.yaml").read_text())
    paper = yaml.safe_load((project_root / "config.paper.yaml").read_text())
    from trace_edges.config import deep_merge

    cfg = validate(deep_merge(base, paper))
    assert cfg["preset"] == "paper" and cfg["data"]["dataset"] == "coco2017_val"
    assert cfg["score"]["edges"]["thresholds"] == 99


def test_parse_params_block():
    assert parse_params('{"merge": {"iou": 0.7}}', "bgp")["merge"]["iou"] == 0.7
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_params("{oops", "bgp")
    with pytest.raises(ConfigError, match="split.min_area"):
        parse_params('{"split": {"min_area": 0}}', "bgp")
