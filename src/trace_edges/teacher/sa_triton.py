"""A fused GPU kernel for the one thing the teacher adds per block: the head-summed attention.

``head_prob_sum_(out, q, k, scale, weight)`` does, in place,

    out[i, j] += weight * sum_h softmax_j(scale * q[h, i] . k[h, j])

for ``q, k: [heads, n, d]`` — what :class:`~trace_edges.teacher.sa_map.SAAccumulator` computes with
``torch.bmm`` + softmax + a head sum, but without ever writing the per-head probabilities: the
PyTorch path moves ``heads x n x n`` fp32 values through memory several times per block (38 x 4096²
x 4 B = 2.5 GB for one SD3.5-L block), which on a GPU costs far more than the products themselves
(``results/benchmarks/teacher_scale_gpu.json``: teacher 5.1x the bare inversion for SD3.5-L). Two
Triton kernels, flash-attention style:

1. ``_lse_kernel``: per head and query tile, the row log-sum-exp over all keys (online max/sum);
2. ``_prob_sum_kernel``: per (query tile, key tile), ``sum_h exp(s_h - lse_h)`` accumulated in
   registers over the heads, then added once into ``out``.

Products run on the inputs' dtype with fp32 accumulation (``input_precision="ieee"`` for fp32, so
no TF32 rounding); bf16 inputs (the paper preset) are exact in fp32, so the result equals the fp32
PyTorch path to accumulation-order rounding (tests/test_sa_triton.py checks it against the naive
softmax, on CPU through Triton's interpreter, ``TRITON_INTERPRET=1``; there 16-bit inputs are cast
to fp32 inside the kernel, as the interpreter's 16-bit ``tl.dot`` returns garbage, so the bf16
tensor-core product itself is exercised only on a GPU).

Used on CUDA when Triton imports and :func:`self_test` passes there (``teacher.sa_kernel: auto``);
the PyTorch path stays the reference and the CPU path.
"""

from __future__ import annotations

import functools
import math
import os

import torch

try:  # Triton ships with CUDA builds of PyTorch; CPU-only installs may lack it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is absent
    triton = None
    tl = None

BLOCK_M = 64
BLOCK_N = 64


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def available(device: torch.device | str) -> bool:
    """The kernel can run here: Triton imports and ``device`` is CUDA (or Triton's CPU interpreter
    is on, ``TRITON_INTERPRET=1``, as in the tests)."""
    if triton is None:
        return False
    return torch.device(device).type == "cuda" or _interpreting()


if triton is not None:

    @triton.jit
    def _dot(q, k, IEEE: tl.constexpr, UPCAST: tl.constexpr):
        """q kᵀ with fp32 accumulation; fp32 inputs without TF32 (IEEE); UPCAST: 16-bit inputs cast
        to fp32 first (the interpreter's 16-bit dot is wrong; exact, as bf16 values are fp32 values)."""
        if UPCAST:
            return tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision="ieee")
        elif IEEE:
            return tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            return tl.dot(q, tl.trans(k))

    @triton.jit
    def _lse_kernel(q_ptr, k_ptr, lse_ptr, n, d, scale, s_qh, s_qn, s_kh, s_kn,
                    BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, IEEE: tl.constexpr,
                    UPCAST: tl.constexpr):
        pid_m = tl.program_id(0)
        h = tl.program_id(1)
        rm = pid_m * BM + tl.arange(0, BM)
        rd = tl.arange(0, BD)
        q = tl.load(q_ptr + h * s_qh + rm[:, None] * s_qn + rd[None, :],
                    mask=(rm[:, None] < n) & (rd[None, :] < d), other=0.0)
        m_i = tl.full([BM], float("-inf"), tl.float32)
        l_i = tl.zeros([BM], tl.float32)
        for n0 in range(0, n, BN):
            rn = n0 + tl.arange(0, BN)
            k = tl.load(k_ptr + h * s_kh + rn[:, None] * s_kn + rd[None, :],
                        mask=(rn[:, None] < n) & (rd[None, :] < d), other=0.0)
            s = _dot(q, k, IEEE, UPCAST) * scale
            s = tl.where(rn[None, :] < n, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            l_i = l_i * tl.exp(m_i - m_new) + tl.sum(tl.exp(s - m_new[:, None]), 1)
            m_i = m_new
        tl.store(lse_ptr + h * n + rm, m_i + tl.log(l_i), mask=rm < n)

    @triton.jit
    def _prob_sum_kernel(q_ptr, k_ptr, lse_ptr, out_ptr, n, d, heads, scale, weight, s_qh, s_qn, s_kh, s_kn,
                         s_on, BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, IEEE: tl.constexpr,
                         UPCAST: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        rm = pid_m * BM + tl.arange(0, BM)
        rn = pid_n * BN + tl.arange(0, BN)
        rd = tl.arange(0, BD)
        acc = tl.zeros([BM, BN], tl.float32)
        for h in range(0, heads):
            q = tl.load(q_ptr + h * s_qh + rm[:, None] * s_qn + rd[None, :],
                        mask=(rm[:, None] < n) & (rd[None, :] < d), other=0.0)
            k = tl.load(k_ptr + h * s_kh + rn[:, None] * s_kn + rd[None, :],
                        mask=(rn[:, None] < n) & (rd[None, :] < d), other=0.0)
            s = _dot(q, k, IEEE, UPCAST) * scale
            lse = tl.load(lse_ptr + h * n + rm, mask=rm < n, other=0.0)
            acc += tl.exp(s - lse[:, None])
        mask = (rm[:, None] < n) & (rn[None, :] < n)
        o = out_ptr + rm[:, None] * s_on + rn[None, :]
        tl.store(o, tl.load(o, mask=mask, other=0.0) + weight * acc, mask=mask)


@torch.no_grad()
def head_prob_sum_(out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, scale: float, weight: float) -> torch.Tensor:
    """``out += weight * sum_h softmax(scale * q_h k_hᵀ)`` in place (``out``: fp32 ``[n, n]``, row-major
    contiguous rows; ``q, k``: ``[heads, n, d]``, same dtype and device). Returns ``out``."""
    if triton is None:
        raise RuntimeError("head_prob_sum_ needs Triton (pip install triton; it ships with CUDA PyTorch)")
    heads, n, d = q.shape
    if k.shape != q.shape or out.shape != (n, n) or out.dtype != torch.float32 or out.stride(1) != 1:
        raise ValueError(f"head_prob_sum_: q {tuple(q.shape)}, k {tuple(k.shape)}, out {tuple(out.shape)} "
                         f"{out.dtype} do not fit (need q, k [heads, n, d] and a row-major fp32 out [n, n])")
    if k.dtype != q.dtype:
        k = k.to(q.dtype)
    q = q if q.stride(-1) == 1 else q.contiguous()
    k = k if k.stride(-1) == 1 else k.contiguous()
    bd = max(16, 1 << math.ceil(math.log2(d)))
    ieee = q.dtype == torch.float32
    upcast = not ieee and _interpreting()
    lse = torch.empty(heads, n, device=q.device, dtype=torch.float32)
    _lse_kernel[(triton.cdiv(n, BLOCK_M), heads)](
        q, k, lse, n, d, float(scale), q.stride(0), q.stride(1), k.stride(0), k.stride(1),
        BM=BLOCK_M, BN=BLOCK_N, BD=bd, IEEE=ieee, UPCAST=upcast)
    _prob_sum_kernel[(triton.cdiv(n, BLOCK_M), triton.cdiv(n, BLOCK_N))](
        q, k, lse, out, n, d, heads, float(scale), float(weight), q.stride(0), q.stride(1), k.stride(0),
        k.stride(1), out.stride(0), BM=BLOCK_M, BN=BLOCK_N, BD=bd, IEEE=ieee, UPCAST=upcast)
    return out


@functools.lru_cache(maxsize=None)
def self_test(device: str) -> tuple[bool, str]:
    """Compile and check the kernel once per process and device: small odd shapes (fp32 and bf16)
    against the naive softmax in float64. ``(True, "")`` or ``(False, why)``; never raises.
    ``sa_kernel: auto`` uses the kernel only where this passes (the kernel was checked on CPU through
    Triton's interpreter; a GPU compiler that rejects or miscompiles it falls back to the PyTorch path)."""
    try:
        g = torch.Generator(device="cpu").manual_seed(0)
        for heads, n, d in ((3, 70, 40), (2, 130, 72)):
            for dtype in (torch.float32, torch.bfloat16):
                q = torch.randn(heads, n, d, generator=g).to(device, dtype)
                k = torch.randn(heads, n, d, generator=g).to(device, dtype)
                out = head_prob_sum_(torch.zeros(n, n, device=device), q, k, d ** -0.5, 1.0)
                qd, kd = q.double(), k.double()
                ref = torch.softmax(d ** -0.5 * qd @ kd.transpose(1, 2), dim=-1).sum(0)
                err = float((out.double() - ref).abs().max())
                if not err <= 1e-5:
                    return False, f"max |kernel - naive| = {err:.3g} on {heads}x{n}x{d} {dtype}"
        return True, ""
    except Exception as exc:  # a compiler or driver failure: report it, the caller falls back
        return False, f"{type(exc).__name__}: {exc}"


__all__ = ["available", "head_prob_sum_", "self_test"]
