"""benchmarks/bench_speed.py: pure helpers, and one real (tiny) teacher-vs-student run."""

from __future__ import annotations

import json

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bs():
    return load_benchmark("bench_speed")


def test_summarise_is_median_of_per_image_medians(bs):
    per = [{"walls": [0.3, 0.1, 0.2]}, {"walls": [1.0, 1.0, 4.0]}, {"walls": [0.5]}]
    out = bs.summarise(per)
    assert out == pytest.approx({"median_ms": 500.0, "min_ms": 200.0, "max_ms": 1000.0})
    with pytest.raises(ValueError):
        bs.summarise([])


def test_ratio_and_rows(bs):
    assert bs.speed_ratio(3682.0, 45.0) == pytest.approx(81.82, abs=0.01)
    with pytest.raises(ValueError):
        bs.speed_ratio(10.0, 0.0)
    rows = bs.csv_rows("student", [{"image": "a.jpg", "shape": [4, 5, 3], "walls": [0.002, 0.001, 0.004]}])
    assert rows == [{"side": "student", "image": "a.jpg", "height": 4, "width": 5, "repeats": 3,
                     "median_ms": 2.0, "min_ms": 1.0, "max_ms": 4.0}]


def test_no_images_is_a_clear_error(bs, tmp_path):
    with pytest.raises(SystemExit, match="no images"):
        bs.first_images(tmp_path, 3)


@pytest.mark.slow
def test_one_image_run_writes_both_sides(bs, tmp_path, capsys):
    """The real thing on the embedded tiny SD3 (one image, one repeat): both sides timed in one run."""
    assert bs.main(["--images", "1", "--repeats", "1", "--warmup", "0", "--out-dir", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "speed_embedded.json").read_text())
    for side in ("teacher", "student"):
        s = res[side]
        assert s["side"] == side and s["median_ms"] > 0 and len(s["per_image"]) == 1
        assert s["memory"]["peak_extra_mb"] >= 0 and s["memory"]["process_peak_rss_mb"] > 100
    assert res["ratio_teacher_over_student"] == pytest.approx(res["teacher"]["median_ms"] / res["student"]["median_ms"])
    assert res["model"]["family"] == "sd3" and res["paper"]["ratio"] == 81.0
    csv = (tmp_path / "speed_embedded.csv").read_text().splitlines()
    assert csv[0].startswith("side,image") and len(csv) == 3
    assert "ratio teacher/student" in capsys.readouterr().out
