"""Ablation grids: expansion into cells and shared variants, the table builder, the grid wiring."""

from __future__ import annotations

import json

import pytest

from trace_edges.ablations import VARIANT_NAME, cells_json, expand, teacher_variant, variants
from trace_edges.config import validate
from trace_edges.errors import ConfigError
from trace_edges.report.ablations import build_ablation_report, latency_rows, tidy_rows


def _config(grids):
    return validate({"ablations": {"grids": grids}})


GRIDS = {
    "divergence": {"paper": "Table 4", "cells": {
        "kl": {"edges": "teacher", "teacher": {"divergence": "kl"}},
        "jsd": {"edges": "teacher", "teacher": {"divergence": "jsd"}}}},
    "components": {"paper": "Table 3", "cells": {
        "a": {"edges": "none"}, "c": {"edges": "teacher"}, "d": {"edges": "student"}}},
    "decoder": {"cells": {"wide": {"edges": "student", "student": {"decoder": {"hidden": 128}}}}},
}


def test_cells_with_the_same_effective_parameters_share_a_variant():
    exp = expand(_config(GRIDS))
    by = {(c.grid, c.cell): c.variant for c in exp.cells}
    assert by[("divergence", "kl")] == by[("components", "c")]      # kl is the default divergence
    assert by[("divergence", "jsd")] != by[("divergence", "kl")]
    assert by[("components", "a")] == "none" and by[("components", "d")] == "main"
    assert by[("decoder", "wide")].startswith("s_") and by[("decoder", "wide")] != "main"
    assert exp.teachers[by[("divergence", "jsd")]]["divergence"] == "jsd"
    assert exp.students[by[("decoder", "wide")]]["decoder"]["hidden"] == 128
    assert variants(exp) == sorted({v for v in by.values() if v != "none"})
    assert all(VARIANT_NAME.match(v) for v in variants(exp) if v != "main")     # what the audit recognises
    assert [c["cell"] for c in cells_json(exp)] == ["kl", "jsd", "a", "c", "d", "wide"]


def test_changing_one_cell_changes_only_its_variant():
    a = {(c.grid, c.cell): c.variant for c in expand(_config(GRIDS)).cells}
    grids = json.loads(json.dumps(GRIDS))
    grids["divergence"]["cells"]["jsd"]["teacher"]["neighbourhood"] = 8
    b = {(c.grid, c.cell): c.variant for c in expand(_config(grids)).cells}
    assert [k for k in a if a[k] != b[k]] == [("divergence", "jsd")]


def test_variant_ignores_shard_size_only():
    t = validate({}, block="teacher")
    assert teacher_variant(t) == teacher_variant(dict(t, shard_size=99))
    assert teacher_variant(t) != teacher_variant(dict(t, stride=50))
    assert teacher_variant(t).startswith("t_sd3_")


@pytest.mark.parametrize("cell, match", [
    ({"edges": "none", "teacher": {"stride": 50}}, "takes no teacher/student overrides"),
    ({"edges": "student", "teacher": {"stride": 50}}, "take no teacher overrides"),
    ({"edges": "teacher", "teacher": {"divergence": "cosine"}}, "divergence"),
    ({"edges": "teacher", "teacher": {"stride": 0}}, "stride"),
])
def test_bad_cells_name_the_cell_and_the_key(cell, match):
    with pytest.raises(ConfigError, match=match) as err:
        expand(_config({"g": {"cells": {"bad": cell}}}))
    assert "ablations.grids.g.cells.bad" in str(err.value)


def test_schema_rejects_a_cell_without_edges():
    with pytest.raises(ConfigError, match="edges"):
        _config({"g": {"cells": {"x": {"teacher": {}}}}})


def _write_metrics(d, variant, task, metrics):
    p = d / task / f"{variant}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"task": task, "dataset": "coco_mini", "num_images": 4, "metrics": metrics}))


def test_table_builder(tmp_path):
    cells = [{"grid": "components", "cell": "a", "paper": "Table 3", "edges": "none", "variant": "none"},
             {"grid": "components", "cell": "c", "paper": "Table 3", "edges": "teacher", "variant": "t1"},
             {"grid": "divergence", "cell": "kl", "paper": "Table 4", "edges": "teacher", "variant": "t1"}]
    m = tmp_path / "metrics"
    _write_metrics(m, "none", "uis", {"AP": 0.01, "AP50": 0.02, "AR100": 0.03})
    _write_metrics(m, "t1", "uis", {"AP": 0.05, "AP50": 0.1, "AR100": 0.2})
    _write_metrics(m, "t1", "edges", {"ODS": 0.3, "OIS": 0.4, "clDice": 0.5})
    (tmp_path / "teacher" / "t1").mkdir(parents=True)
    (tmp_path / "teacher" / "t1" / "latency_0.json").write_text(json.dumps({"ms_per_image": 1234.56}))
    tidy = build_ablation_report(cells, m, tmp_path / "teacher", tmp_path / "out", preset="embedded")
    assert len(tidy) == 3 + 6 + 6
    row = tidy[(tidy.cell == "kl") & (tidy.metric == "ODS")]
    assert float(row["value"].iloc[0]) == pytest.approx(0.3)
    assert set(tidy[tidy.cell == "a"]["task"]) == {"uis"}
    md = (tmp_path / "out" / "ablations.md").read_text()
    assert "## components — Table 3" in md
    assert "| c | teacher | `t1` | 5.0 | 10.0 | 20.0 | 30.0 | 40.0 | 50.0 | 1235 |" in md
    assert (tmp_path / "out" / "figures" / "ablations.png").stat().st_size > 5000
    lat = (tmp_path / "out" / "ablations_latency.csv").read_text().splitlines()
    assert lat[0] == "grid,cell,variant,teacher_ms_per_image" and len(lat) == 3


def test_student_cells_report_ssim_next_to_ap(tmp_path):
    """The L_rec ablation reports SSIM(I, Î) beside AP, as the paper does (from each student's model.json)."""
    cells = [{"grid": "rec_loss", "cell": "with_rec", "paper": "L_rec", "edges": "student", "variant": "main"},
             {"grid": "rec_loss", "cell": "without_rec", "paper": "L_rec", "edges": "student", "variant": "s_1"}]
    m = tmp_path / "metrics"
    students = {}
    for v, ap, ssim in (("main", 0.04, 0.81234), ("s_1", 0.03, 0.7)):
        _write_metrics(m, v, "uis", {"AP": ap, "AP50": 0.1, "AR100": 0.2})
        students[v] = tmp_path / f"{v}.json"
        meta = {"val_metrics": {"val_ssim": ssim}, "training_data": {"val_ids": ["1", "2"]}}
        students[v].write_text(json.dumps(meta))
    tidy = build_ablation_report(cells, m, tmp_path / "teacher", tmp_path / "out", preset="embedded",
                                 edge_metrics=False, students=students)
    row = tidy[(tidy.cell == "with_rec") & (tidy.metric == "SSIM")]
    assert float(row["value"].iloc[0]) == pytest.approx(0.81234) and row["task"].iloc[0] == "student"
    md = (tmp_path / "out" / "ablations.md").read_text()
    assert "| with_rec | student | `main` | 4.0 | 10.0 | 20.0 | – | – | – | 0.812 | – |" in md
    assert "4 images." in md


def test_missing_metrics_name_the_cell(tmp_path):
    cells = [{"grid": "g", "cell": "x", "paper": "", "edges": "teacher", "variant": "t9"}]
    with pytest.raises(Exception, match="g/x"):
        tidy_rows(cells, tmp_path, "embedded")
    with pytest.raises(Exception, match="no ablation cells"):
        tidy_rows([], tmp_path, "embedded")
    assert latency_rows([], tmp_path).empty


def test_table_without_edge_metrics(tmp_path):
    cells = [{"grid": "g", "cell": "c", "paper": "", "edges": "teacher", "variant": "t1"}]
    _write_metrics(tmp_path / "metrics", "t1", "uis", {"AP": 0.05, "AP50": 0.1, "AR100": 0.2})
    (tmp_path / "teacher" / "t1").mkdir(parents=True)
    (tmp_path / "teacher" / "t1" / "latency_0.json").write_text(json.dumps({"ms_per_image": 10.0}))
    tidy = build_ablation_report(cells, tmp_path / "metrics", tmp_path / "teacher", tmp_path / "out",
                                 preset="embedded", edge_metrics=False)
    assert set(tidy["metric"]) == {"AP", "AP50", "AR100"}      # no edge metrics file was needed


def test_audit_checks_a_variant_against_its_own_parameters():
    """The audit compares an ablation variant's artifacts with that variant's teacher/student block,
    not with the run's own (else every deliberate ablation change reads as drift)."""
    from trace_edges.audit import _effective_config

    config = _config(GRIDS)
    exp = expand(config)
    by = {(c.grid, c.cell): c.variant for c in exp.cells}
    jsd, wide = by[("divergence", "jsd")], by[("decoder", "wide")]
    eff, why = _effective_config(f"results/embedded/ablations/teacher/{jsd}/labels/manifest.json", config, exp)
    assert why is None and eff["teacher"]["divergence"] == "jsd" and config["teacher"]["divergence"] == "kl"
    eff, _ = _effective_config(f"results/embedded/ablations/student/{wide}/manifest.json", config, exp)
    assert eff["student"]["decoder"]["hidden"] == 128 and eff["teacher"] == config["teacher"]
    eff, _ = _effective_config(f"results/embedded/ablations/metrics/uis/{jsd}.json", config, exp)
    assert eff["teacher"]["divergence"] == "jsd"
    eff, _ = _effective_config("results/embedded/ablations/data/manifest.json", config, exp)
    assert eff["data"]["max_images"] == config["ablations"]["max_images"] != config["data"]["max_images"]
    eff, _ = _effective_config("results/embedded/edges/trace_teacher/manifest.json", config, exp)
    assert eff is config
    eff, why = _effective_config("results/embedded/ablations/teacher/t_sd3_deadbeef/iep.json", config, exp)
    assert eff is None and "t_sd3_deadbeef" in why
