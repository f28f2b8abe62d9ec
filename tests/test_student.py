"""The TRACE student: LoRA + edge decoder, its loss, bit-exact resumable training, inference.

Everything runs the tiny random SD3 model at 128 px (8x8 token grid) on 4 real images with
synthetic ternary pseudo-labels (Sobel quantiles) written in the teacher's on-disk layout.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import pytest
import torch

from trace_edges.backbones import load_backbone
from trace_edges.backbones.tiny import tiny_model_dir, tiny_spec
from trace_edges.config import validate
from trace_edges.errors import ConfigError
from trace_edges.teacher.labels import EDGE, IGNORE

RES = 128
BASE = {"lora": {"rank": 4, "alpha": 4, "dropout": 0.1},
        "train": {"epochs": 2, "batch_size": 1, "val_fraction": 0.25, "checkpoint_every": 2,
                  "lr_decoder": 3e-3, "lr_lora": 1e-3, "snapshots": [0.0, 0.5, 1.0]}}


def student_params(**over):
    from trace_edges.config import deep_merge

    return validate(deep_merge(BASE, over), block="student")


def fresh_backbone():
    """A dedicated backbone (the student injects adapters in place; the shared tiny one must stay clean)."""
    return load_backbone(tiny_spec("sd3", tiny_model_dir("sd3"), resolution=RES))


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test of this module runs torch on one thread (conftest.one_torch_thread)."""
    yield


@pytest.fixture(scope="module")
def data(tmp_path_factory, coco_mini):
    """4 prepared images + teacher-layout labels (tests/pseudo_labels.py: Sobel quantiles)."""
    from pseudo_labels import write_sobel_pseudo_labels

    from trace_edges.data.coco import prepare

    root = tmp_path_factory.mktemp("student_data")
    cfg = validate({"data": {"root": str(coco_mini), "max_images": 4}})
    manifest = prepare(cfg["data"], cfg["edge_gt"], root / "data")
    labels = write_sobel_pseudo_labels(manifest["images"], root / "teacher/sd3")
    return {"root": root, "manifest": root / "data/manifest.json", "labels": labels, "images": manifest["images"]}


def teacher_params():
    return validate({"backbone": {"model": str(tiny_model_dir("sd3")), "resolution": RES, "device": "cpu"}},
                    block="teacher")


def _train(data, out_dir, params=None, **kw):
    from trace_edges.stages.student import run_distill

    bb = fresh_backbone()
    out = run_distill(params or student_params(), teacher_params(), data["manifest"], data["labels"], out_dir,
                    backbone=bb, **kw)
    return out, bb


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("student_a")
    meta, bb = _train(data, out_dir)
    return {"dir": out_dir, "meta": meta, "backbone": bb}


# ------------------------------------------------------------------------------------ loss
def test_dice_ignores_ignore_pixels():
    from trace_edges.student.loss import dice_loss

    g = torch.Generator().manual_seed(0)
    prob = torch.rand(2, 1, 16, 16, generator=g)
    labels = torch.randint(0, 3, (2, 1, 16, 16), generator=g).to(torch.uint8)
    labels[labels == 2] = IGNORE
    ign = labels == IGNORE
    base = dice_loss(prob, labels)
    # predictions on ignore pixels do not matter at all ...
    other = prob.clone()
    other[ign] = 1.0 - other[ign]
    assert torch.equal(dice_loss(other, labels), base)
    # ... nor does a label flipped between "ignore" and anything on an ignore-only basis: the reference
    valid = ~ign
    e = (labels == EDGE) & valid
    ref = torch.stack([1 - (2 * (prob[b][e[b]]).sum() + 1) / (prob[b][valid[b]].sum() + e[b].sum() + 1)
                       for b in range(2)]).mean()
    assert torch.allclose(base, ref, atol=1e-6)
    # a labelled pixel changes it, and ignore pixels get no gradient
    idx = tuple(int(i) for i in torch.nonzero(valid)[0])
    moved = prob.clone()
    moved[idx] = 1.0 - moved[idx]
    assert not torch.equal(dice_loss(moved, labels), base)
    p = prob.clone().requires_grad_(True)
    dice_loss(p, labels).backward()
    assert torch.all(p.grad[ign] == 0) and torch.any(p.grad[valid] != 0)
    # all-ignore image: contributes 0, no NaN
    assert float(dice_loss(prob[:1], torch.full_like(labels[:1], IGNORE))) == 0.0


def test_rec_weight_zero_drops_the_reconstruction_term():
    from trace_edges.student.loss import dice_loss, student_loss

    edge = torch.rand(1, 1, 8, 8) * 2 - 1
    labels = torch.randint(0, 2, (1, 1, 8, 8)).to(torch.uint8)
    img, rec = torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    lp = student_params(loss={"rec_weight": 0.0, "edge_weight": 2.0})["loss"]
    t = student_loss(edge, labels, lp, image=img, recon=rec)
    assert t.rec is None and torch.equal(t.total, 2.0 * dice_loss((edge + 1) / 2, labels))
    assert student_loss(edge, labels, lp).rec is None  # no image / reconstruction needed
    lp1 = student_params()["loss"]
    t1 = student_loss(edge, labels, lp1, image=img, recon=rec)
    assert float(t1.rec) == 1.0 and torch.allclose(t1.total, t1.rec + t1.edge)


def test_rec_weight_zero_training_never_decodes(data, tmp_path, monkeypatch):
    """With rec_weight = 0 a training step never touches the VAE decoder (L_rec is gone, not zeroed)."""
    from trace_edges.data.images import load_rgb
    from trace_edges.stages.student import labelled_images
    from trace_edges.data.manifest import load_manifest
    from trace_edges.student.model import StudentModel
    from trace_edges.student.train import Trainer, make_sample

    params = student_params(loss={"rec_weight": 0.0}, decoder={"input": "features"})
    model = StudentModel(fresh_backbone(), params)
    rec, path = labelled_images(load_manifest(data["manifest"]), data["labels"])[0]
    sample = make_sample(model, rec["id"], load_rgb(rec["file"]), path)
    trainer = Trainer(model, params, [sample], [], tmp_path, seed=0, key="k")

    def boom(*a, **k):
        raise AssertionError("VAE decode called with rec_weight = 0")

    monkeypatch.setattr(model.backbone.vae, "decode", boom)
    trainer._train_step([0])
    assert trainer.step == 1 and trainer.running["rec"] == 0.0


def test_reconstruction_gradient_reaches_the_lora(data):
    """Issue 14.3: ‖∇_LoRA L_rec‖ is of the order of ‖∇_LoRA Dice‖ with the default formulation (Î from a
    pass at a sampled t > 0), and ~σ(0) times smaller with the literal t = 0 reading ([0, 0])."""
    from trace_edges.student.gradients import lora_gradient_norms
    from trace_edges.student.model import StudentModel, seeded_reconstruction
    from trace_edges.student.train import load_labels

    params = student_params()
    assert params["loss"]["rec_t"] == [1, 999]
    model = StudentModel(fresh_backbone(), params)
    bb = model.backbone
    old, new = [], []
    for rec in data["images"][:2]:
        rgb = __import__("trace_edges.data.images", fromlist=["load_rgb"]).load_rgb(rec["file"])
        image, latent = bb.preprocess(rgb), bb.encode(rgb)
        labels = load_labels(data["root"] / f"teacher/sd3/labels/{rec['id']}.png", RES)
        old.append(lora_gradient_norms(model, latent, image, labels, params["loss"], None)["ratio"])
        for d in range(2):
            draw = seeded_reconstruction(params["loss"]["rec_t"], latent.shape, f"{rec['id']}/{d}")
            assert draw[0] > 0
            new.append(lora_gradient_norms(model, latent, image, labels, params["loss"], draw)["ratio"])
    assert min(new) > 0.1, new          # same order as the Dice term's
    assert max(old) < 0.05, old         # the t = 0 reading: scaled by sigma(0) = 0.003
    assert min(new) > 10 * max(old)


# ------------------------------------------------------------------------------------ model
@pytest.mark.parametrize("mode", ["attention", "features"])
def test_both_decoder_inputs_run_and_backpropagate(mode):
    from trace_edges.student.model import StudentModel

    bb = fresh_backbone()
    model = StudentModel(bb, student_params(decoder={"input": mode, "layers": 1}))
    assert model.decoder.in_channels == (64 if mode == "attention" else bb.latent_channels)
    out = model(bb.encode(np.full((40, 60, 3), 120, np.uint8)), reconstruct=True)
    assert out.edge.shape == (1, 1, RES, RES) and out.recon.shape == (1, 3, RES, RES)
    assert float(out.edge.detach().min()) >= -1 and float(out.edge.detach().max()) <= 1
    (out.edge.mean() + out.recon.mean()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.lora_parameters())
    assert all(p.grad is not None for p in model.decoder_parameters())
    assert not any(p.requires_grad for n, p in bb.denoiser.named_parameters() if "lora_" not in n)
    assert not any(p.requires_grad for p in bb.vae.parameters())


def test_default_decoder_is_the_papers_lightweight_size():
    """Table 9: the paper's decoder is 0.1 MB. At SD3.5-L 1024 px the attention input has N = 64² = 4096
    channels: the default is one 3x3 conv (36 865 parameters, 0.147 MB in float32; the old 2 layers x 32
    channels had 1.18 M = 4.7 MB), and the wide cell stays ~50x larger."""
    from trace_edges.student.model import EdgeDecoder

    dec = validate({}, block="student")["decoder"]
    n = sum(p.numel() for p in EdgeDecoder(4096, int(dec["hidden"]), int(dec["layers"])).parameters())
    assert n == 4096 * 9 + 1
    assert 4 * n < 0.2e6  # "0.1 MB" to one significant figure (0.074 MB in float16)
    wide = sum(p.numel() for p in EdgeDecoder(4096, 128, 4).parameters())
    assert wide > 100 * n


def test_default_lora_targets_are_the_image_attention_projections():
    from trace_edges.student.model import resolve_lora_targets

    bb = fresh_backbone()
    names = resolve_lora_targets(bb, None)
    assert names == [f"transformer_blocks.{i}.attn.{s}" for i in range(3) for s in ("to_q", "to_k", "to_v", "to_out.0")]
    assert not any("add_" in n for n in names)
    assert len(resolve_lora_targets(bb, ["to_q"])) == 3
    with pytest.raises(ConfigError):
        resolve_lora_targets(bb, ["no_such_layer"])


# ------------------------------------------------------------------------------------ training
def test_training_only_changes_adapters_and_decoder(trained):
    bb = trained["backbone"]
    ref = fresh_backbone()
    ref_den = dict(ref.denoiser.named_parameters())
    n_base = 0
    for name, p in bb.denoiser.named_parameters():
        if "lora_" in name:
            continue
        assert torch.equal(p, ref_den[name.replace(".base_layer", "")]), name
        n_base += 1
    assert n_base == len(ref_den)
    for (n1, p1), (n2, p2) in zip(bb.vae.named_parameters(), ref.vae.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    from safetensors.torch import load_file

    first = load_file(str(trained["dir"] / "snapshots/step_000000.safetensors"))
    final = load_file(str(trained["dir"] / "model.safetensors"))
    assert set(first) == set(final)
    assert all(torch.count_nonzero(first[k]) == 0 for k in first if "lora_B" in k)  # peft init: B = 0
    for prefix in ("lora.", "decoder."):
        assert any(not torch.equal(first[k], final[k]) for k in final if k.startswith(prefix))
    assert all(not torch.equal(first[k], final[k]) for k in final if "lora_B" in k and ".attn.to_q" in k)


def test_training_lowers_the_loss(trained, data):
    from trace_edges.data.manifest import load_manifest
    from trace_edges.data.images import load_rgb
    from trace_edges.stages.student import labelled_images
    from trace_edges.student.infer import load_student, load_weights
    from trace_edges.student.train import evaluate, make_sample

    model = load_student(trained["dir"] / "model.safetensors", backbone=fresh_backbone())
    ids = set(trained["meta"]["training_data"]["train_ids"])
    samples = [make_sample(model, rec["id"], load_rgb(rec["file"]), p)
               for rec, p in labelled_images(load_manifest(data["manifest"]), data["labels"]) if str(rec["id"]) in ids]
    after = evaluate(model, samples, model.params["loss"])
    load_weights(model, trained["dir"] / "snapshots/step_000000.safetensors")
    before = evaluate(model, samples, model.params["loss"])
    assert after["val_loss"] < before["val_loss"] and after["val_edge"] < before["val_edge"]


def test_training_outputs(trained):
    d, meta = trained["dir"], trained["meta"]
    assert meta["steps"] == 6 and meta["steps_per_epoch"] == 3
    # the default decoder on the 8x8 token grid: one 3x3 conv from 64 attention channels
    assert meta["architecture"]["decoder_parameters"] == 64 * 9 + 1
    assert meta["architecture"]["decoder_bytes_float32"] == 4 * (64 * 9 + 1)
    assert len(meta["training_data"]["train_ids"]) == 3 and len(meta["training_data"]["val_ids"]) == 1
    assert set(meta["val_metrics"]) == {"val_loss", "val_rec", "val_edge", "val_dice", "val_f1", "val_ssim"}
    assert 0 < meta["val_metrics"]["val_ssim"] <= 1
    assert meta["provenance"]["stage"] == "student" and meta["provenance"]["model"]["family"] == "sd3"
    rows = (d / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,train_loss") and len(rows) == 3
    assert (d / "training_curve.png").stat().st_size > 0
    idx = __import__("json").loads((d / "snapshots/index.json").read_text())
    assert [(s["fraction"], s["step"]) for s in idx["snapshots"]] == [(0.0, 0), (0.5, 3), (1.0, 6)]
    assert all((d / "snapshots" / s["file"]).is_file() for s in idx["snapshots"])


def test_kill_and_resume_is_bit_identical(trained, data, tmp_path, caplog):
    """Interrupt after step 5 (last checkpoint: step 4, mid-epoch), rerun: identical final weights."""
    from safetensors.torch import load_file

    class Killed(Exception):
        pass

    def kill_at_5(step):
        if step == 5:
            raise Killed

    with pytest.raises(Killed):
        _train(data, tmp_path, callback=kill_at_5)
    assert not (tmp_path / "model.json").exists()
    assert __import__("json").loads((tmp_path / "checkpoints/last.json").read_text())["step"] == 4
    with caplog.at_level(logging.INFO, logger="trace_edges.student.train"):
        meta, _ = _train(data, tmp_path)
    assert "resumed from" in caplog.text and "at step 4/6" in caplog.text
    a = load_file(str(trained["dir"] / "model.safetensors"))
    b = load_file(str(tmp_path / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "model.safetensors").read_bytes() == (trained["dir"] / "model.safetensors").read_bytes()
    assert (tmp_path / "metrics.csv").read_text() == (trained["dir"] / "metrics.csv").read_text()
    assert meta["history"] == trained["meta"]["history"]
    for s in ("step_000000", "step_000003", "step_000006"):
        assert (tmp_path / f"snapshots/{s}.safetensors").read_bytes() == \
            (trained["dir"] / f"snapshots/{s}.safetensors").read_bytes()


def test_checkpoint_of_another_config_is_not_resumed(trained, tmp_path, caplog):
    import shutil

    from trace_edges.student.model import StudentModel
    from trace_edges.student.train import Trainer

    shutil.copytree(trained["dir"] / "checkpoints", tmp_path / "checkpoints")
    params = student_params()
    model = StudentModel(fresh_backbone(), params)
    dummy = [object()] * 3
    with caplog.at_level(logging.WARNING, logger="trace_edges.student.train"):
        assert not Trainer(model, params, dummy, [], tmp_path, seed=0, key="another").load_checkpoint()
    assert "starts over" in caplog.text


def test_split_and_order_are_deterministic():
    from trace_edges.student.train import epoch_order, snapshot_steps, split_train_val

    ids = [str(i) for i in range(16)]
    tr, va = split_train_val(ids, 0.125)
    assert len(va) == 2 and sorted(tr + va, key=int) == ids
    assert split_train_val(list(reversed(ids)), 0.125)[1] == list(reversed(va))
    assert split_train_val(ids, 0.0) == (ids, [])
    assert epoch_order(14, 0, 0) == epoch_order(14, 0, 0) != epoch_order(14, 0, 1)
    assert snapshot_steps([0.0, 0.2, 0.4, 1.0], 140) == {0: [0.0], 28: [0.2], 56: [0.4], 140: [1.0]}


# ------------------------------------------------------------------------------------ inference
def test_save_load_gives_identical_outputs(data, tmp_path):
    from trace_edges.data.images import load_rgb
    from trace_edges.student.infer import load_weights, predict_unit
    from trace_edges.student.model import StudentModel
    from trace_edges.student.train import save_weights

    params = student_params()
    a = StudentModel(fresh_backbone(), params, seed=0)
    with torch.no_grad():  # non-trivial adapters (B = 0 at init would hide a LoRA that fails to load)
        g = torch.Generator().manual_seed(1)
        for p in a.lora_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    save_weights(tmp_path / "w.safetensors", a.student_state())
    b = StudentModel(fresh_backbone(), params, seed=1)  # another init, overwritten by the load
    rgb = load_rgb(data["images"][0]["file"])
    assert not np.array_equal(predict_unit(a, rgb), predict_unit(b, rgb))
    load_weights(b, tmp_path / "w.safetensors")
    ea, eb = predict_unit(a, rgb), predict_unit(b, rgb)
    assert ea.shape == (RES, RES) and np.array_equal(ea, eb) and ea.std() > 0


def test_infer_stage_and_edge_source(trained, data, tmp_path):
    from trace_edges.data.images import load_rgb
    from trace_edges.edges.store import MAX_ROUNDTRIP_ERROR, EdgeSet
    from trace_edges.stages.student import run_infer
    from trace_edges.student.infer import load_student
    from trace_edges.student.source import StudentEdgeSource

    ckpt = trained["dir"] / "model.safetensors"
    student = load_student(ckpt, backbone=fresh_backbone())
    run_infer(ckpt, data["manifest"], tmp_path / "edges", student=student)
    es = EdgeSet(tmp_path / "edges")
    assert es.source == "trace_student" and len(es) == 4 and es.provenance["stage"] == "student"
    before = (tmp_path / "edges/manifest.json").read_bytes()
    run_infer(ckpt, data["manifest"], tmp_path / "edges", student=student)  # every image reused
    assert (tmp_path / "edges/manifest.json").read_bytes() == before
    rec = data["images"][1]
    stored = es.load(rec["id"], shape=(rec["height"], rec["width"]))
    assert stored.min() >= 0 and stored.max() <= 1 and stored.std() > 0

    assert set(StudentEdgeSource.DEFAULTS) == set(validate({}, block="student")) | {"checkpoint"}
    src = StudentEdgeSource({"checkpoint": str(ckpt)})
    src._model, src._meta = student, __import__("json").loads(ckpt.with_suffix(".json").read_text())
    assert np.abs(src.compute(load_rgb(rec["file"])) - stored).max() <= MAX_ROUNDTRIP_ERROR + 1e-6
    assert src.describe()["model_sha256"] == trained["meta"]["weights_sha256"]
    with pytest.raises(ConfigError, match="checkpoint"):
        StudentEdgeSource({}).compute(load_rgb(rec["file"]))
    with pytest.raises(ConfigError, match="differs"):
        StudentEdgeSource({"checkpoint": str(ckpt), "decoder": {"input": "features"}}).model


def test_cli_registers_both_subcommands():
    from trace_edges.commands import student

    parser = argparse.ArgumentParser()
    student.register(parser.add_subparsers(dest="command"))
    a = parser.parse_args(["distill", "--manifest", "m.json", "--labels", "l.json", "--out-dir", "o",
                           "--params", "{}", "--teacher-params", "{}", "--seed", "3", "--threads", "2"])
    assert a.func is student.run_distill and a.seed == 3
    b = parser.parse_args(["student-infer", "--model", "m.safetensors", "--manifest", "m.json", "--out-dir", "o"])
    assert b.func is student.run_infer and b.device is None
