"""One attention evaluation per block per step (teacher/sa_map.py): both map modes equal the
reference definitions, and run_teacher gives the same result whichever mode it is forced into."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trace_edges.teacher.divergence import abdiv, aggregate_attention, iep
from trace_edges.teacher.sa_map import (SAAccumulator, abdiv_from_map, choose_map_mode, chunked_step,
                                        iep_point_from_maps, map_bytes, step_from_maps)

GRIDS = [(8, 8), (4, 4), (8, 8), (2, 2), (3, 5)]  # multi-scale, one grid that divides nothing
OUT = (8, 8)


def _blocks(seed, heads=3, dim=8, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    qs = [torch.randn(heads, h * w, dim, generator=g, dtype=dtype) * 1.5 for h, w in GRIDS]
    ks = [torch.randn(heads, h * w, dim, generator=g, dtype=dtype) * 1.5 for h, w in GRIDS]
    return qs, ks


def _accumulate(acc, qs, ks, scales=None):
    acc.begin()
    for i, (q, k, g) in enumerate(zip(qs, ks, GRIDS)):
        acc.add_qk(q, k, g, None if scales is None else scales[i])
    return acc.end()


@pytest.mark.parametrize("rows,work_mb", [(3, 1e-4), (16, 0.01), (256, 64)])   # 1 to all query rows per chunk
def test_accumulated_map_is_the_aggregated_sa(rows, work_mb):
    qs, ks = _blocks(0)
    scales = [0.3, None, 0.5, None, 0.2]
    acc = SAAccumulator(GRIDS, OUT, rows=rows, work_mb=work_mb, dtype=torch.float64)
    got = _accumulate(acc, qs, ks, scales)
    assert torch.allclose(got, aggregate_attention(qs, ks, GRIDS, OUT, scales), atol=1e-12)


def test_accumulator_keeps_two_maps_and_checks_the_block_count():
    acc = SAAccumulator(GRIDS, OUT, dtype=torch.float64)
    maps = [_accumulate(acc, *_blocks(s)).clone() for s in (1, 2)]
    assert torch.equal(acc.prev, maps[0]) and torch.equal(acc.cur, maps[1])
    buf = acc.prev
    _accumulate(acc, *_blocks(3))
    assert acc.cur is buf  # the buffer of two steps ago is reused: never a third map
    acc.begin()
    with pytest.raises(RuntimeError, match="blocks were added"):
        acc.end()
    with pytest.raises(RuntimeError, match="before begin"):
        SAAccumulator(GRIDS, OUT).add_qk(*(t[0] for t in _blocks(0)), GRIDS[0])


@pytest.mark.parametrize("divergence", ["kl", "jsd", "mse", "mae"])
@pytest.mark.parametrize("neighbourhood", [4, 8])
def test_both_modes_equal_the_definitions(divergence, neighbourhood):
    steps = [_blocks(s) for s in (4, 5, 6)]
    ref_maps = {t: aggregate_attention(q, k, GRIDS, OUT) for t, (q, k) in zip((0, 99, 199), steps)}
    _, ref_curve = iep(ref_maps, divergence)
    acc = SAAccumulator(GRIDS, OUT, rows=7, work_mb=0.005, dtype=torch.float64)
    prev = None
    for t, (qs, ks) in zip((0, 99, 199), steps):
        ref_abdiv = abdiv(ref_maps[t], OUT, divergence, neighbourhood=neighbourhood)
        sa = _accumulate(acc, qs, ks)
        mat = abdiv_from_map(sa, OUT, divergence, neighbourhood=neighbourhood, chunk=20)
        chk, point = chunked_step(qs, ks, GRIDS, OUT, prev, divergence=divergence, neighbourhood=neighbourhood,
                                  chunk=30)
        one, one_point = step_from_maps(sa, OUT, acc.prev, divergence, neighbourhood=neighbourhood, chunk=20)
        assert torch.allclose(mat, ref_abdiv, atol=1e-9)
        assert torch.allclose(chk, ref_abdiv, atol=1e-9)
        assert torch.allclose(one, ref_abdiv, atol=1e-9)
        if prev is None:
            assert point is None and one_point is None
        else:
            assert point == pytest.approx(ref_curve[t], abs=1e-9)
            assert iep_point_from_maps(acc.prev, sa, divergence, chunk=9) == pytest.approx(ref_curve[t], abs=1e-9)
            assert one_point == pytest.approx(ref_curve[t], abs=1e-9)
        prev = (qs, ks)


def test_mode_follows_the_budget():
    assert map_bytes((64, 64)) == 64 * 2 ** 20
    assert choose_map_mode((64, 64), 64) == "materialised"
    assert choose_map_mode((64, 64), 63.9) == "chunked"
    assert choose_map_mode((16, 16), 0) == "chunked"


@pytest.mark.parametrize("family", ["sd15", "sd3", "flux"])
def test_run_teacher_is_the_same_in_both_modes(family, one_torch_thread):
    """The whole teacher forced into each mode (budget 0 -> chunked, 1024 -> materialised):
    the same IEP curve, t* and ABDiv maps; only the memory layout differs."""
    from trace_edges.backbones.tiny import tiny_backbone
    from trace_edges.teacher.trajectory import run_teacher

    params = dict(trajectory="inversion", stride=250, mode="exact", divergence="kl", neighbourhood=4,
                  chunk=64, eps=1e-12)
    rgb = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    bb = tiny_backbone(family)
    a = run_teacher(bb, rgb, dict(params, map_budget_mb=1024))
    b = run_teacher(bb, rgb, dict(params, map_budget_mb=0))
    assert (a.info["map_mode"], b.info["map_mode"]) == ("materialised", "chunked")
    assert a.t_star == b.t_star
    assert a.divergence_curve == pytest.approx(b.divergence_curve, rel=1e-4)
    np.testing.assert_allclose(a.abdiv, b.abdiv, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_lse_path_equals_the_softmax_path(dtype, tol):
    """The forward's log-sum-exp fast paths (capture_qk(lse=True)) against the definition: over the
    image keys only (``exp(s q.k - lse)`` is the softmax itself), over image + text keys (a
    stabiliser, rows renormalised), and a text mass so large that the image keys underflow under
    it (the chunk falls back to the max-subtracted softmax)."""
    qs, ks = _blocks(7, dtype=dtype)
    scales = [0.3, None, 0.5, None, 0.2]
    ref = aggregate_attention(qs, ks, GRIDS, OUT, scales)
    g = torch.Generator().manual_seed(8)
    for case in ("image_only", "with_text", "underflow"):
        acc = SAAccumulator(GRIDS, OUT, rows=5, work_mb=0.002, dtype=dtype)
        acc.begin()
        for q, k, grid, sc in zip(qs, ks, GRIDS, scales):
            s = q.shape[-1] ** -0.5 if sc is None else sc
            logits = s * q @ k.transpose(-1, -2)
            if case == "image_only":
                lse = torch.logsumexp(logits, -1)
            else:   # keys of the forward: the image tokens + 6 text tokens
                k_text = torch.randn(q.shape[0], 6, q.shape[-1], generator=g, dtype=dtype) * 1.5
                text = s * q @ k_text.transpose(-1, -2)
                if case == "underflow":
                    text = text + 200.0
                lse = torch.logsumexp(torch.cat([logits, text], -1), -1)
            acc.add_qk(q, k, grid, sc, lse=lse, lse_image_only=case == "image_only")
        got = acc.end()
        assert torch.isfinite(got).all(), case
        assert torch.allclose(got, ref, atol=tol, rtol=tol), (case, float((got - ref).abs().max()))
