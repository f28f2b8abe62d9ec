"""IEP / ABDiv: the Q/K paths against the definitions, and planted-structure known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trace_edges.teacher.divergence import (
    abdiv, abdiv_from_qk, aggregate_attention, attention_with_lse, iep, iep_divergence_from_qk,
    iep_from_qk, kl_rows,
)
from trace_edges.teacher.labels import IGNORE, ternarize

GRIDS = [(8, 8), (4, 4), (8, 8), (2, 2)]  # a multi-scale "U-Net": two levels + a bottleneck
OUT = (8, 8)


def _random_blocks(seed, grids=GRIDS, heads=3, dim=8, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    qs = [torch.randn(heads, h * w, dim, generator=g, dtype=dtype) * 1.5 for h, w in grids]
    ks = [torch.randn(heads, h * w, dim, generator=g, dtype=dtype) * 1.5 for h, w in grids]
    return qs, ks


def test_aggregate_rows_are_distributions():
    qs, ks = _random_blocks(0)
    sa = aggregate_attention(qs, ks, GRIDS, OUT)
    assert sa.shape == (64, 64)
    assert torch.allclose(sa.sum(-1), torch.ones(64, dtype=sa.dtype), atol=1e-12)
    assert (sa > 0).all()


def test_aggregate_single_block_is_head_mean_softmax():
    qs, ks = _random_blocks(1, grids=[(4, 4)])
    sa = aggregate_attention(qs, ks, [(4, 4)], (4, 4))
    ref = sum(torch.softmax(qs[0][h] @ ks[0][h].T / 8 ** 0.5, -1) for h in range(3)) / 3
    assert torch.allclose(sa, ref, atol=1e-12)


def test_upsampling_queries_nearest_keys_bilinear():
    """A 2x2 block on a 4x4 output: query (i, j) reads block query (i//2, j//2); key dims bilinear."""
    qs, ks = _random_blocks(2, grids=[(2, 2)])
    sa = aggregate_attention(qs, ks, [(2, 2)], (4, 4))
    a = sum(torch.softmax(qs[0][h] @ ks[0][h].T / 8 ** 0.5, -1) for h in range(3)) / 3
    up = F.interpolate(a.reshape(4, 1, 2, 2), size=(4, 4), mode="bilinear", align_corners=False).reshape(4, 16)
    up = up / up.sum(-1, keepdim=True)
    for i in range(4):
        for j in range(4):
            assert torch.allclose(sa[i * 4 + j], up[(i // 2) * 2 + j // 2], atol=1e-12)


@pytest.mark.parametrize("divergence", ["kl", "jsd", "mse", "mae"])
@pytest.mark.parametrize("chunk", [8, 30, 4096])
def test_exact_abdiv_equals_definition(divergence, chunk):
    qs, ks = _random_blocks(3)
    ref = abdiv(aggregate_attention(qs, ks, GRIDS, OUT), OUT, divergence)
    got = abdiv_from_qk(qs, ks, GRIDS, OUT, "exact", divergence=divergence, chunk=chunk)
    assert torch.allclose(got, ref, atol=1e-5, rtol=0)


def test_exact_abdiv_float32_and_8_neighbourhood():
    qs, ks = _random_blocks(4, dtype=torch.float32)
    ref = abdiv(aggregate_attention(qs, ks, GRIDS, OUT), OUT, neighbourhood=8)
    got = abdiv_from_qk(qs, ks, GRIDS, OUT, "exact", neighbourhood=8, chunk=16)
    assert torch.allclose(got, ref, atol=1e-5, rtol=0)


def test_abdiv_border_replicate_padding():
    qs, ks = _random_blocks(5, grids=[(4, 4)])
    sa = aggregate_attention(qs, ks, [(4, 4)], (4, 4))
    e = abdiv(sa, (4, 4))
    row = lambda i, j: sa[i * 4 + j]  # noqa: E731
    # corner (0, 0): vertical pair (1,0) vs (0,0) [replicated], horizontal (0,1) vs (0,0)
    expect = kl_rows(row(1, 0), row(0, 0)) + kl_rows(row(0, 1), row(0, 0))
    assert torch.isclose(e[0, 0], expect, atol=1e-12)


@pytest.mark.parametrize("divergence", ["kl", "jsd"])
def test_exact_iep_equals_definition(divergence):
    steps = {0: _random_blocks(6), 99: _random_blocks(7), 199: _random_blocks(8)}
    maps = {t: aggregate_attention(q, k, GRIDS, OUT) for t, (q, k) in steps.items()}
    t_ref, curve_ref = iep(maps, divergence)
    t_got, curve_got = iep_from_qk(steps, GRIDS, OUT, "exact", divergence=divergence, chunk=10)
    assert t_got == t_ref
    for t in curve_ref:
        assert abs(curve_got[t] - curve_ref[t]) < 1e-5


def test_fast_abdiv_is_mean_of_per_head_kls():
    qs, ks = _random_blocks(9)
    fast = abdiv_from_qk(qs, ks, GRIDS, OUT, "fast")
    expect = 0
    for q, k, g in zip(qs, ks, GRIDS):
        per_head = sum(abdiv(torch.softmax(q[h] @ k[h].T / 8 ** 0.5, -1), g, eps=0) for h in range(q.shape[0]))
        m = per_head / q.shape[0]
        if g != OUT:
            m = F.interpolate(m[None, None], size=OUT, mode="bilinear", align_corners=False)[0, 0]
        expect = expect + m
    assert torch.allclose(fast, expect / len(GRIDS), atol=1e-9)
    exact = abdiv_from_qk(qs, ks, GRIDS, OUT, "exact")
    assert not torch.allclose(fast, exact, atol=1e-3)  # a different quantity, by design


def test_fast_iep_is_mean_of_per_head_kls():
    a, b = _random_blocks(10), _random_blocks(11)
    got = iep_divergence_from_qk(a, b, GRIDS, OUT, "fast")
    vals = []
    for q1, k1, q2, k2 in zip(a[0], a[1], b[0], b[1]):
        A1 = torch.softmax(q1 @ k1.transpose(-1, -2) / 8 ** 0.5, -1)
        A2 = torch.softmax(q2 @ k2.transpose(-1, -2) / 8 ** 0.5, -1)
        vals.append(kl_rows(A1, A2, 0).mean())
    assert abs(got - float(torch.stack(vals).mean())) < 1e-9


def test_fast_rejects_other_divergences():
    qs, ks = _random_blocks(12)
    with pytest.raises(ValueError, match="only for divergence='kl'"):
        abdiv_from_qk(qs, ks, GRIDS, OUT, "fast", divergence="jsd")


def test_attention_with_lse_fused_equals_chunked():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 300, 16, generator=g) for _ in range(3))
    out, lse = attention_with_lse(q, k, v, 0.25)
    logits = 0.25 * q @ k.transpose(-1, -2)
    assert torch.allclose(lse, torch.logsumexp(logits, -1), atol=1e-5)
    assert torch.allclose(out, torch.softmax(logits, -1) @ v, atol=1e-5)


# ---- planted structure -----------------------------------------------------------------------
def _region_qk(labels: np.ndarray, strength: float, noise: float, seed: int, heads=2, dim=8):
    """Q = K = strength·onehot(region) embedded in `dim`, plus noise: attention stays inside a region."""
    g = torch.Generator().manual_seed(seed)
    lab = torch.as_tensor(labels.reshape(-1))
    emb = torch.zeros(lab.numel(), dim, dtype=torch.float64)
    emb[torch.arange(lab.numel()), lab] = strength
    q = emb[None].repeat(heads, 1, 1) + noise * torch.randn(heads, lab.numel(), dim, generator=g, dtype=torch.float64)
    k = emb[None].repeat(heads, 1, 1) + noise * torch.randn(heads, lab.numel(), dim, generator=g, dtype=torch.float64)
    return [q], [k]


def test_iep_picks_the_planted_emergence_step():
    labels = np.zeros((8, 8), dtype=int)
    labels[:, 4:] = 1  # two instances: left and right halves
    steps = [0, 99, 199, 299, 399, 499]
    planted = 299
    traj = {}
    for i, t in enumerate(steps):
        if t < planted:  # semantic / unstructured: near-uniform attention, slowly drifting
            traj[t] = _region_qk(labels, 0.0, 0.3, seed=i)
        else:            # instance-structured from the planted step on, slowly decaying
            traj[t] = _region_qk(labels, 6.0 - 0.3 * (t - planted) / 100, 0.3, seed=i)
    for mode in ("exact", "fast"):
        t_star, curve = iep_from_qk(traj, [(8, 8)], (8, 8), mode)
        assert t_star == planted, (mode, curve)


def test_abdiv_peaks_on_the_planted_boundary():
    labels = np.zeros((8, 8), dtype=int)
    labels[:, 4:] = 1
    qs, ks = _region_qk(labels, 5.0, 0.05, seed=0)
    e = abdiv_from_qk(qs, ks, [(8, 8)], (8, 8), "exact").numpy()
    boundary = e[:, 3:5].mean()
    interior = np.concatenate([e[:, :2], e[:, 6:]], axis=1).mean()
    assert boundary > 20 * interior
    assert set(np.argmax(e, axis=1).tolist()) <= {3, 4}
    lab = ternarize(e)
    assert (lab[:, 3:5] == 1).all() and not (lab[:, :2] == 1).any()


def test_ternarize_rule():
    e = np.array([[0.0, 1.0, 2.0, 3.0, 4.0]])
    mu, sd = e.mean(), e.std()
    lab = ternarize(e)
    assert lab.tolist() == [[0, IGNORE, IGNORE, IGNORE, 1]]
    assert (e[lab == 1] > mu + sd).all() and (e[lab == 0] < mu - sd).all()
    assert (ternarize(np.ones((3, 3))) == IGNORE).all()
