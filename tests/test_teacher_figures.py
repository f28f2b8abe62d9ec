"""The teacher's figures (drawing only; what they show is tested in test_attention_views.py): each
figure from one trajectory walk of the tiny SD3 model on one real image, the IEP curves from an
iep.json whatever its divergence, and the CLI (all per-run figures from one model load and one walk)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from trace_edges.backbones.tiny import tiny_backbone, tiny_model_dir
from trace_edges.config import validate
from trace_edges.data.images import load_rgb
from trace_edges.errors import DataError
from trace_edges.report import teacher_figures as tf
from trace_edges.teacher import attention_views as av

PARAMS = validate({}, block="teacher")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test of this module runs torch on one thread (conftest.one_torch_thread)."""
    yield


def _nonempty(*paths):
    for p in paths:
        assert p.is_file() and p.stat().st_size > 1000, p


# ------------------------------------------------------------------------------------ figures
def test_trajectory_pca_figure(tmp_path, walked):
    png, pdf = tmp_path / "pca.png", tmp_path / "pca.pdf"
    out = tf.trajectory_pca_figure(walked, PARAMS, png, pdf, dpi=80)
    _nonempty(png, pdf)
    assert out["t_star"] == walked.t_star  # == run_teacher(...).t_star (test_attention_views)
    assert out["steps"] == walked.steps and out["grid"] == walked.grid
    assert tf.TINY_NOTE in out["title"] and f"t* = {walked.t_star}" in out["title"]
    assert "D_KL(SA(τ_prev) ‖ SA(τ))" in out["title"]  # the default divergence
    assert not list(tmp_path.glob(".*"))  # no temporaries left behind


def test_trajectory_pca_figure_t_star_matches_run_teacher_on_noise(tmp_path, rgb_37777):
    from trace_edges.teacher.trajectory import run_teacher

    params = dict(PARAMS, trajectory="noise", stride=250, divergence="jsd",
                  backbone=dict(PARAMS["backbone"], tiny=False))
    res = av.walk_trajectory(tiny_backbone("sd3"), rgb_37777, params, seed=3)
    out = tf.trajectory_pca_figure(res, params, tmp_path / "a.png", tmp_path / "a.pdf", dpi=60)
    ref = run_teacher(tiny_backbone("sd3"), rgb_37777, params, seed=3)
    assert out["t_star"] == ref.t_star and out["divergence_curve"] == ref.divergence_curve
    assert tf.TINY_NOTE not in out["title"]
    assert "JSD(SA(τ_prev), SA(τ))" in out["title"] and "KL" not in out["title"]


def test_neighbour_attention_figure(tmp_path, walked):
    png, pdf = tmp_path / "nb.png", tmp_path / "nb.pdf"
    out = tf.neighbour_attention_figure(walked, PARAMS, png, pdf, dpi=80)
    _nonempty(png, pdf)
    h, w = walked.grid
    e = walked.abdiv[walked.index(walked.t_star)]
    assert out["t_star"] == walked.t_star
    assert (out["boundary"], out["interior"]) == av.pick_pixels(e)
    for p in (out["boundary"], out["interior"]):
        assert 0 < p[0] < h - 1 and 0 < p[1] < w - 1
    assert out["abdiv"]["boundary"] > out["abdiv"]["interior"]
    assert out["abdiv"]["boundary"] == pytest.approx(float(e[1:-1, 1:-1].max()))


def _synthetic_iep(path, n=5, divergence="kl"):
    """An iep.json as the iep stage writes it: per image t*, the divergence's name, its curve, the grid."""
    steps = [99, 199, 299, 399, 499]
    rng = np.random.default_rng(0)
    images = {}
    for i in range(n):
        curve = {t: float(v) for t, v in zip(steps, rng.uniform(1e-4, 1e-2, size=len(steps)))}
        images[str(1000 + i)] = {"t_star": max(curve, key=curve.get), "divergence": divergence,
                                 "divergence_curve": {str(t): v for t, v in curve.items()}, "grid": [16, 16]}
    hist = {}
    for v in images.values():
        hist[str(v["t_star"])] = hist.get(str(v["t_star"]), 0) + 1
    path.write_text(json.dumps({"images": images, "t_star_histogram": hist, "model": {"family": "sd3"}}))
    return images


def test_iep_curves_figure(tmp_path):
    images = _synthetic_iep(tmp_path / "iep.json")
    png, pdf = tmp_path / "kl.png", tmp_path / "kl.pdf"
    out = tf.iep_curves_figure(tmp_path / "iep.json", png, pdf, dpi=80, tiny=True)
    _nonempty(png, pdf)
    assert out["images"] == 5 and out["steps"] == [99, 199, 299, 399, 499]
    assert sum(out["t_star_histogram"].values()) == 5 and list(out["t_star_histogram"]) == out["steps"]
    for t, c in out["t_star_histogram"].items():
        assert c == sum(v["t_star"] == t for v in images.values())
    assert tf.TINY_NOTE in out["title"]
    assert out["divergence"] == "kl" and out["ylabel"] == "D_KL(SA(τ_prev) ‖ SA(τ))"
    # deterministic bytes
    png2, pdf2 = tmp_path / "kl2.png", tmp_path / "kl2.pdf"
    tf.iep_curves_figure(tmp_path / "iep.json", png2, pdf2, dpi=80, tiny=True)
    assert png.read_bytes() == png2.read_bytes() and pdf.read_bytes() == pdf2.read_bytes()


@pytest.mark.parametrize("divergence, name", [("jsd", "JSD"), ("mse", "MSE"), ("mae", "MAE")])
def test_iep_curves_figure_names_its_divergence_not_kl(tmp_path, divergence, name):
    _synthetic_iep(tmp_path / "iep.json", n=3, divergence=divergence)
    out = tf.iep_curves_figure(tmp_path / "iep.json", tmp_path / "c.png", tmp_path / "c.pdf", dpi=60)
    _nonempty(tmp_path / "c.png", tmp_path / "c.pdf")
    assert out["divergence"] == divergence and out["ylabel"] == f"{name}(SA(τ_prev), SA(τ))"
    assert "KL" not in out["ylabel"] and "KL" not in out["title"]


def test_iep_curves_figure_rejects_a_bad_iep_json(tmp_path):
    (tmp_path / "empty.json").write_text(json.dumps({"images": {}}))
    with pytest.raises(DataError, match="iep stage"):
        tf.iep_curves_figure(tmp_path / "empty.json", tmp_path / "a.png", tmp_path / "a.pdf")
    (tmp_path / "bad.json").write_text(json.dumps({"images": {"1": {"t_star": 99}}}))
    with pytest.raises(DataError, match="malformed"):
        tf.iep_curves_figure(tmp_path / "bad.json", tmp_path / "a.png", tmp_path / "a.pdf")
    assert not (tmp_path / "a.png").exists()


def test_draw_teacher_figures_from_one_walk(tmp_path, walked):
    _synthetic_iep(tmp_path / "iep.json", n=3)
    outs = {f: (tmp_path / f"teacher_{f}.png", tmp_path / f"teacher_{f}.pdf") for f in tf.FIGURES}
    out = tf.draw_teacher_figures(outs, PARAMS, walk=walked, iep_json=tmp_path / "iep.json", dpi=60)
    assert list(out) == ["pca", "kl", "neighbours"]
    _nonempty(*(p for pair in outs.values() for p in pair))
    assert out["pca"]["t_star"] == out["neighbours"]["t_star"] == walked.t_star
    with pytest.raises(ValueError, match="walk"):
        tf.draw_teacher_figures({"pca": outs["pca"]}, PARAMS, iep_json=tmp_path / "iep.json")
    with pytest.raises(ValueError, match="iep_json"):
        tf.draw_teacher_figures({"kl": outs["kl"]}, PARAMS, walk=walked)


# ------------------------------------------------------------------------------------ CLI
@pytest.fixture
def cli_main(monkeypatch):
    from trace_edges import cli

    if "teacher_figures" not in cli.COMMAND_MODULES:
        monkeypatch.setattr(cli, "COMMAND_MODULES", tuple(cli.COMMAND_MODULES) + ("teacher_figures",))
    return cli.main


def _manifest(tmp_path, coco_mini):
    manifest = {"images": [{"id": 37777, "file": str(coco_mini / "images" / "000000037777.jpg"),
                            "edge_gt": "edge_gt/37777.png"}], "gt": {}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    params = json.dumps({"backbone": {"model": str(tiny_model_dir("sd3")), "device": "cpu"}, "stride": 250})
    return ["--params", params, "--manifest", str(tmp_path / "manifest.json")]


def test_cli_kl_and_user_errors(tmp_path, cli_main, capsys):
    _synthetic_iep(tmp_path / "iep.json", n=3)
    rc = cli_main(["teacher-figure", "--figure", "kl", "--iep", str(tmp_path / "iep.json"),
                   "--out-png", str(tmp_path / "kl.png"), "--out-pdf", str(tmp_path / "kl.pdf")])
    assert rc == 0
    _nonempty(tmp_path / "kl.png", tmp_path / "kl.pdf")
    rc = cli_main(["teacher-figure", "--figure", "kl", "--out-png", str(tmp_path / "x.png"),
                   "--out-pdf", str(tmp_path / "x.pdf")])
    assert rc == 2 and "--iep" in capsys.readouterr().err
    rc = cli_main(["teacher-figure", "--figure", "pca", "--out-png", str(tmp_path / "x.png"),
                   "--out-pdf", str(tmp_path / "x.pdf")])
    assert rc == 2 and "--image-id" in capsys.readouterr().err
    # several figures need --out-dir; backbones is drawn on its own
    rc = cli_main(["teacher-figure", "--figure", "kl", "pca", "--iep", str(tmp_path / "iep.json"),
                   "--out-png", str(tmp_path / "x.png"), "--out-pdf", str(tmp_path / "x.pdf")])
    assert rc == 2 and "--out-dir" in capsys.readouterr().err
    rc = cli_main(["teacher-figure", "--figure", "all", "backbones", "--out-dir", str(tmp_path)])
    assert rc == 2 and "on its own" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_cli_all_figures_load_the_model_once_and_walk_once(tmp_path, cli_main, coco_mini, monkeypatch):
    from trace_edges.backbones import loader
    from trace_edges.teacher import attention_views

    calls = {"load": 0, "walk": 0}
    real_load, real_walk = loader.load_configured_backbone, attention_views.walk_trajectory

    def load(*a, **k):
        calls["load"] += 1
        return real_load(*a, **k)

    def walk(*a, **k):
        calls["walk"] += 1
        return real_walk(*a, **k)

    monkeypatch.setattr(loader, "load_configured_backbone", load)
    monkeypatch.setattr(attention_views, "walk_trajectory", walk)
    _synthetic_iep(tmp_path / "iep.json", n=3)
    out = tmp_path / "figures"
    rc = cli_main(["teacher-figure", "--figure", "all", *_manifest(tmp_path, coco_mini), "--image-id", "first",
                   "--iep", str(tmp_path / "iep.json"), "--dpi", "60", "--out-dir", str(out)])
    assert rc == 0
    assert calls == {"load": 1, "walk": 1}
    assert sorted(p.name for p in out.iterdir()) == sorted(f"teacher_{f}.{e}" for f in ("pca", "kl", "neighbours")
                                                           for e in ("png", "pdf"))
    _nonempty(*out.iterdir())


def test_cli_refuses_a_large_grid_before_any_forward(tmp_path, cli_main, coco_mini, monkeypatch, capsys):
    from trace_edges.backbones import loader

    def boom(*a, **k):
        raise AssertionError("the grid must be checked before the model runs")

    bb = SimpleNamespace(attention_sites=lambda: [SimpleNamespace(grid=(65, 65)), SimpleNamespace(grid=(33, 33))],
                         encode=boom, predict=boom, timesteps=lambda s: [0, 99], resolution=1040)
    monkeypatch.setattr(loader, "load_configured_backbone", lambda *a, **k: bb)
    out = tmp_path / "figures"
    rc = cli_main(["teacher-figure", "--figure", "pca", "neighbours", *_manifest(tmp_path, coco_mini),
                   "--image-id", "37777", "--out-dir", str(out)])
    assert rc == 2 and "65x65" in capsys.readouterr().err
    assert not out.exists() or not list(out.iterdir())


def test_cli_neighbours_from_a_manifest(tmp_path, cli_main, coco_mini, capsys):
    common = _manifest(tmp_path, coco_mini)
    rc = cli_main(["teacher-figure", "--figure", "neighbours", *common, "--image-id", "37777", "--dpi", "60",
                   "--out-png", str(tmp_path / "nb.png"), "--out-pdf", str(tmp_path / "nb.pdf")])
    assert rc == 0
    _nonempty(tmp_path / "nb.png", tmp_path / "nb.pdf")
    rc = cli_main(["teacher-figure", "--figure", "neighbours", *common, "--image-id", "1",
                   "--out-png", str(tmp_path / "x.png"), "--out-pdf", str(tmp_path / "x.pdf")])
    assert rc == 2 and "not in the manifest" in capsys.readouterr().err


def test_backbones_pca_figure_one_row_per_backbone(tmp_path, coco_mini):
    """Fig. 8 analogue: each backbone's own trajectory, t* as run_teacher finds it."""
    from trace_edges.teacher.trajectory import run_teacher

    rgb = load_rgb(coco_mini / "images" / "000000037777.jpg")
    runs, refs = [], {}
    for fam in ("sd15", "sd3", "dinov2"):
        p = validate({"backbone": {"family": fam, "model": str(tiny_model_dir(fam)),
                                   "resolution": tiny_backbone(fam).resolution}}, block="teacher")
        runs.append((fam, av.walk_trajectory(tiny_backbone(fam), rgb, p), p))
        refs[fam] = (tiny_backbone(fam), p)
    out = tf.backbones_pca_figure(runs, tmp_path / "b.png", tmp_path / "b.pdf")
    assert list(out) == ["sd15", "sd3", "dinov2"]
    for fam in ("sd15", "sd3"):
        bb, p = refs[fam]
        assert out[fam]["t_star"] == run_teacher(bb, rgb, p).t_star
    # the non-diffusion control has no trajectory: no IEP, its 16x16 patch grid
    assert out["dinov2"] == {"t_star": None, "grid": (16, 16)}
    assert (tmp_path / "b.png").stat().st_size > 20_000 and (tmp_path / "b.pdf").stat().st_size > 5_000
