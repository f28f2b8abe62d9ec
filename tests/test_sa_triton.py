"""The fused head-summed attention kernel (teacher/sa_triton.py) against the naive softmax.

Runs through Triton's CPU interpreter (``TRITON_INTERPRET=1``), so it checks the kernel's
arithmetic (masking, online log-sum-exp, head loop, padding of odd head dims) on any machine where
Triton installs; the GPU run (scripts/gpu_rehearsal.sh) compiles the same kernels.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch



# The interpreter must be on before Triton is first imported (its standard library is decorated at
# import), and other test modules import the teacher (hence Triton) first: so the checks below run
# in a child pytest of this file alone, with TRITON_INTERPRET=1 from the start.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@pytest.mark.skipif(INTERPRETED, reason="this is the parent run")
def test_kernel_choice_on_cpu():
    from trace_edges.teacher.sa_map import resolve_kernel

    assert resolve_kernel("auto", "cpu") == "torch" and resolve_kernel("torch", "cpu") == "torch"
    with pytest.raises(ValueError, match="triton needs a CUDA device"):
        resolve_kernel("triton", "cpu")
    with pytest.raises(ValueError, match="sa_kernel must be one of"):
        resolve_kernel("cuda", "cpu")


@pytest.mark.skipif(INTERPRETED, reason="this is the parent run")
def test_kernel_checks_in_the_triton_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    passed = re.search(r"(\d+) passed", r.stdout)
    assert passed and int(passed.group(1)) >= 13, r.stdout[-2000:]     # every case below ran


@pytest.fixture(scope="module")
def kernel():
    if not INTERPRETED:
        pytest.skip("runs in the child pytest (TRITON_INTERPRET=1)")
    pytest.importorskip("triton")
    import trace_edges.teacher.sa_triton as mod

    return mod


def _naive(q, k, scale):
    p = torch.softmax(scale * q.double() @ k.double().transpose(1, 2), dim=-1)
    return p.sum(0)


# (heads, n, d): n not a multiple of the 64-wide tiles, d not a power of two (SD1.5 40/80/160, PixArt 72)
@pytest.mark.parametrize("heads,n,d", [(3, 70, 40), (2, 130, 72), (1, 64, 16), (4, 33, 160)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_head_prob_sum_equals_naive_softmax(kernel, heads, n, d, dtype):
    g = torch.Generator().manual_seed(heads * 1000 + n + d)
    q = (torch.randn(heads, n, d, generator=g) * 2).to(dtype)
    k = (torch.randn(heads, n, d, generator=g) * 2).to(dtype)
    scale = d ** -0.5
    base = torch.rand(n, n, generator=g)
    out = base.clone()
    kernel.head_prob_sum_(out, q, k, scale, 0.25)
    ref = base.double() + 0.25 * _naive(q.float(), k.float(), scale)
    assert torch.allclose(out.double(), ref, rtol=0, atol=2e-6), (out.double() - ref).abs().max()
    # each head's rows sum to 1, so the added mass per row is weight * heads
    assert torch.allclose((out - base).sum(1).double(), torch.full((n,), 0.25 * heads, dtype=torch.float64),
                          atol=1e-5)


def test_head_prob_sum_rejects_mismatched_shapes(kernel):
    q = torch.randn(2, 8, 16)
    with pytest.raises(ValueError, match="do not fit"):
        kernel.head_prob_sum_(torch.zeros(8, 9), q, q, 0.25, 1.0)
    with pytest.raises(ValueError, match="do not fit"):
        kernel.head_prob_sum_(torch.zeros(8, 8, dtype=torch.float64), q, q, 0.25, 1.0)


def test_available_needs_cuda_or_the_interpreter(kernel):
    assert kernel.available("cpu")              # interpreter on (child run)
    os.environ.pop("TRITON_INTERPRET")
    try:
        assert not kernel.available("cpu")
    finally:
        os.environ["TRITON_INTERPRET"] = "1"


def test_accumulator_triton_equals_torch_path(kernel):
    """SAAccumulator with the kernel = with bmm + softmax, a lower-resolution (upsampled) block included."""
    from trace_edges.teacher.sa_map import SAAccumulator

    g = torch.Generator().manual_seed(0)
    grids, out_grid = [(4, 6), (8, 12), (8, 12)], (8, 12)
    blocks = [(torch.randn(3, h * w, 24, generator=g).bfloat16(), torch.randn(3, h * w, 24, generator=g).bfloat16())
              for h, w in grids]
    maps = {}
    for name in ("torch", "triton"):
        acc = SAAccumulator(grids, out_grid, kernel=name)
        assert acc.kernel == name
        acc.begin()
        for (q, k), grid in zip(blocks, grids):
            acc.add_qk(q, k, grid)
        maps[name] = acc.end().clone()
    assert torch.allclose(maps["triton"], maps["torch"], rtol=0, atol=1e-6)
    assert torch.allclose(maps["triton"].sum(1), torch.ones(8 * 12), atol=1e-5)   # rows are distributions


def test_self_test_passes_and_auto_picks_the_kernel(kernel):
    from trace_edges.teacher.sa_map import resolve_kernel

    assert kernel.self_test("cpu") == (True, "")
    assert resolve_kernel("auto", "cpu") == "triton" and resolve_kernel("triton", "cpu") == "triton"


def test_a_failing_self_test_falls_back_or_raises(kernel, monkeypatch, caplog):
    from trace_edges.teacher.sa_map import resolve_kernel

    monkeypatch.setattr(kernel, "self_test", lambda device: (False, "CompilationError: planted"))
    with caplog.at_level("WARNING"):
        assert resolve_kernel("auto", "cpu") == "torch"
    assert "planted" in caplog.text
    with pytest.raises(ValueError, match="failed its self-test.*planted"):
        resolve_kernel("triton", "cpu")
