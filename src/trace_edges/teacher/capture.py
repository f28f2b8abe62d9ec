"""Capture the per-head queries and keys of every image self-attention site of a denoiser.

Only diffusers' attention-processor API is used (``module.set_processor``); no ``forward`` is
ever patched. (The one exception is the non-diffusion control DINOv2, a transformers ViT with no
processor API: its sites, kind ``"vit"``, are recorded by a PyTorch forward pre-hook on the
attention module that recomputes ``q_proj`` / ``k_proj`` on the patch tokens, CLS and register
tokens dropped; the module's output is untouched.) For each
:class:`~trace_edges.backbones.AttnSite` of a diffusion denoiser, :func:`capture_qk` installs a
recording processor that

1. delegates to the original processor, so the module's output is unchanged;
2. takes the image tokens' query and key exactly as the original processor hands them to its
   ``F.scaled_dot_product_attention`` call (after projections, ``norm_q`` / ``norm_k`` qk-norms,
   FLUX's rotary embedding), together with the softmax scale: the call is seen by a
   ``TorchFunctionMode`` (:class:`_SDPATap`) active only while the original processor runs, so
   nothing is recomputed. Processors that do not call SDPA (the classic ``AttnProcessor``, or a
   non-native diffusers attention backend) fall back to recomputing Q/K from the call's inputs as
   the processor does (the ``_extract_*`` functions);
3. with ``capture_qk(..., lse=True)`` on CPU, the tap runs the very kernel ``F.scaled_dot_product_attention``
   dispatches to (``aten._scaled_dot_product_flash_attention_for_cpu``), which also returns the row
   log-sum-exp of the attention it computes; the module output is the same tensor. The teacher then
   needs no max / sum passes to normalise its own softmax (``CapturedQK.lse``);
4. hands them over as :class:`CapturedQK` (``q, k: [heads, n_img_tokens, head_dim]``).

The attention the teacher uses is then ``softmax(scale * q @ k.T)`` over the image keys, computed
by the consumer in chunks: an ``N x N`` map is never stored here. For joint attention (SD3,
FLUX) this is the image->image block renormalised over the image keys (see docs/backbones.md).

Usage::

    with capture_qk(backbone) as cap:
        eps = backbone.predict(z_t, t)
        for c in cap.pop():          # site order; the buffer is cleared (one step held at most)
            ...

Anything unexpected (an unknown processor class on a site, a forward that captured nothing, a
token count that does not match the site grid, head dims that do not match the module) raises
:class:`CaptureError` naming the module and the fix.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from trace_edges.backbones.base import AttnSite
from trace_edges.errors import TraceEdgesError

FIX = "diffusers changed its attention processor; update trace_edges.teacher.capture"

#: the processor classes the recorder knows how to reproduce (exact class match).
KNOWN_PROCESSORS = (
    "AttnProcessor2_0 (U-Net attn1, PixArt attn1)",
    "AttnProcessor (classic, after set_default_attn_processor)",
    "JointAttnProcessor2_0 (SD3 joint blocks, SD3.5-M attn2)",
    "FluxAttnProcessor (FLUX double/single blocks; FluxAttnProcessor2_0 is an alias that builds it)",
)


class CaptureError(TraceEdgesError):
    """Q/K capture cannot reproduce what the attention processor does."""


@dataclass(frozen=True, eq=False)
class CapturedQK:
    """Image-token queries / keys of one site for one forward.

    ``q``, ``k``: ``[heads, n, head_dim]`` with ``n = grid[0] * grid[1]`` (row-major token order);
    the site's attention is ``softmax(scale * q @ k.transpose(-1, -2))`` per head, rows over the
    image keys. Tensors are in the denoiser's dtype (upcast before the softmax for fp16/bf16).

    ``lse`` (``capture_qk(lse=True)``, CPU only, else ``None``): ``[heads, n]`` float32, the row
    log-sum-exp of ``scale * q @ k_fwd.T`` over the keys the forward attended to. With
    ``lse_image_only`` those keys were exactly the image tokens, so ``exp(scale * q @ k.T - lse)``
    *is* the site's attention; otherwise (joint attention: text keys too) ``lse`` is only an upper
    bound usable as the softmax's stabiliser, the rows still need normalising over the image keys.
    """

    name: str
    q: torch.Tensor
    k: torch.Tensor
    scale: float
    grid: tuple[int, int]
    kind: str
    lse: torch.Tensor | None = None
    lse_image_only: bool = False

    @property
    def heads(self) -> int:
        return int(self.q.shape[0])

    @property
    def head_dim(self) -> int:
        return int(self.q.shape[-1])


# ---------------------------------------------------------------------------- extractors
# Each returns (q, k, scale) with q, k: [B, heads, n_img, head_dim], mirroring one processor class.

def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, s, inner = x.shape
    return x.view(b, s, heads, inner // heads).transpose(1, 2)


def _self_qk(attn, a: dict[str, Any], *, qk_norm: bool):
    hs = a["hidden_states"]
    if getattr(attn, "spatial_norm", None) is not None:
        hs = attn.spatial_norm(hs, a.get("temb"))
    if hs.ndim == 4:
        b, c, h, w = hs.shape
        hs = hs.view(b, c, h * w).transpose(1, 2)
    if getattr(attn, "group_norm", None) is not None:
        hs = attn.group_norm(hs.transpose(1, 2)).transpose(1, 2)
    q = _split_heads(attn.to_q(hs), attn.heads)
    k = _split_heads(attn.to_k(hs), attn.heads)
    if qk_norm:
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
    return q, k


def _extract_attn_processor_2_0(attn, a, site):
    _no_context(attn, a, site)
    q, k = _self_qk(attn, a, qk_norm=True)
    # F.scaled_dot_product_attention is called without `scale`: its default 1/sqrt(head_dim)
    return q, k, float(q.shape[-1]) ** -0.5


def _extract_attn_processor(attn, a, site):
    _no_context(attn, a, site)
    q, k = _self_qk(attn, a, qk_norm=False)  # the classic processor applies no qk-norm
    return q, k, float(attn.scale)  # get_attention_scores: baddbmm(alpha=attn.scale)


def _extract_joint(attn, a, site):
    _no_mask(attn, a, site)
    hs = a["hidden_states"]  # image stream only; the context stream is ignored
    q = _split_heads(attn.to_q(hs), attn.heads)
    k = _split_heads(attn.to_k(hs), attn.heads)
    if attn.norm_q is not None:
        q = attn.norm_q(q)
    if attn.norm_k is not None:
        k = attn.norm_k(k)
    return q, k, float(q.shape[-1]) ** -0.5


def _extract_flux(attn, a, site):
    from diffusers.models.embeddings import apply_rotary_emb

    _no_mask(attn, a, site)
    hs = a["hidden_states"]
    ehs = a.get("encoder_hidden_states")
    rot = a.get("image_rotary_emb")
    if getattr(attn, "fused_projections", False):
        q, k, _ = attn.to_qkv(hs).chunk(3, dim=-1)
    else:
        q, k = attn.to_q(hs), attn.to_k(hs)
    q = attn.norm_q(q.unflatten(-1, (-1, attn.head_dim)))  # [B, S, H, D]
    k = attn.norm_k(k.unflatten(-1, (-1, attn.head_dim)))
    seq = hs.shape[1]
    double = ehs is not None and attn.added_kv_proj_dim is not None
    if double:  # hidden_states = image tokens; the processor puts the text first: [text, image]
        n_img, total = seq, ehs.shape[1] + seq
        if site.kind != "joint":
            raise CaptureError(f"site {site.name}: declared {site.kind!r} but receives a separate text stream",
                               fix=FIX)
    else:  # single-stream: hidden_states = [text, image]; image tokens are the last N
        n_img, total = site.n_tokens, seq
        if site.n_text is not None and seq != site.n_text + n_img:
            raise CaptureError(
                f"site {site.name}: single-stream sequence has {seq} tokens, expected "
                f"{site.n_text} text + {n_img} image (grid {site.grid})", fix=FIX)
        if seq < n_img:
            raise CaptureError(f"site {site.name}: sequence of {seq} tokens is shorter than the "
                               f"{n_img}-token image grid {site.grid}", fix=FIX)
        q, k = q[:, seq - n_img:], k[:, seq - n_img:]
    if rot is not None:
        cos, sin = rot
        if cos.shape[0] != total:
            raise CaptureError(f"site {site.name}: rotary embedding covers {cos.shape[0]} positions, "
                               f"the joint sequence has {total}", fix=FIX)
        # RoPE is per position: rotating the image slice with the image rows of (cos, sin) is
        # exactly what the processor does to those tokens.
        q = apply_rotary_emb(q, (cos[-n_img:], sin[-n_img:]), sequence_dim=1)
        k = apply_rotary_emb(k, (cos[-n_img:], sin[-n_img:]), sequence_dim=1)
    # dispatch_attention_fn is called without `scale`: the SDPA default 1/sqrt(head_dim)
    return q.transpose(1, 2), k.transpose(1, 2), float(attn.head_dim) ** -0.5


def _no_mask(attn, a, site):
    if a.get("attention_mask") is not None:
        raise CaptureError(f"site {site.name}: an attention_mask is passed to an image self-attention; "
                           f"restricting it to the image keys is not implemented", fix=FIX)


def _no_context(attn, a, site):
    _no_mask(attn, a, site)
    if a.get("encoder_hidden_states") is not None:
        raise CaptureError(f"site {site.name}: receives encoder_hidden_states, i.e. it is a "
                           f"cross-attention, not an image self-attention", fix=FIX)


@functools.lru_cache(maxsize=1)
def _known() -> dict[type, tuple[Callable, str | None]]:
    """processor class -> (the recomputing extractor, where its SDPA call puts the image tokens)."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0, JointAttnProcessor2_0
    from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

    return {
        AttnProcessor2_0: (_extract_attn_processor_2_0, _LAYOUT_SELF),
        AttnProcessor: (_extract_attn_processor, None),             # baddbmm + softmax, no SDPA
        JointAttnProcessor2_0: (_extract_joint, _LAYOUT_FIRST),     # cat([image, context])
        FluxAttnProcessor: (_extract_flux, _LAYOUT_LAST),           # cat([text, image])
    }


def _unknown_processor_error(site: AttnSite, proc: Any) -> CaptureError:
    name = type(proc).__name__
    if isinstance(proc, _RecordingProcessor):
        return CaptureError(f"site {site.name}: a recording processor is already installed "
                            f"(nested capture_qk on the same module)",
                            fix="exit the outer capture_qk first; captures cannot be nested")
    return CaptureError(
        f"site {site.name} ({type(site.module).__name__}): unknown attention processor {name}; "
        f"known: {', '.join(KNOWN_PROCESSORS)}",
        fix=f"{FIX} (or reset the default processors with denoiser.set_default_attn_processor() / "
            f"drop xformers / fused projections)")


# ---------------------------------------------------------------------------- SDPA tap
#: where the image tokens sit in the sequence a processor passes to SDPA (None: it calls no SDPA)
_LAYOUT_SELF, _LAYOUT_FIRST, _LAYOUT_LAST = "self", "image_first", "image_last"
_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
_LSE_DTYPES = (torch.float32, torch.float64, torch.bfloat16)


class _SDPATap(TorchFunctionMode):
    """Active only while one original processor runs: records the arguments of its
    ``F.scaled_dot_product_attention`` call(s). With ``want_lse`` (CPU, no mask / dropout / causal /
    GQA, no autograd) the call is answered by ``aten._scaled_dot_product_flash_attention_for_cpu``,
    the kernel SDPA itself dispatches to on CPU, which also returns the log-sum-exp."""

    def __init__(self, want_lse: bool):
        super().__init__()
        self.want_lse = want_lse
        self.calls: list[tuple[torch.Tensor, torch.Tensor, float | None, torch.Tensor | None, bool]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        a = dict(zip(_SDPA_ARGS, args), **kwargs)
        q, k, v = a["query"], a["key"], a["value"]
        plain = (a.get("attn_mask") is None and not a.get("dropout_p", 0.0) and not a.get("is_causal", False)
                 and not a.get("enable_gqa", False))
        out, lse = None, None
        if (self.want_lse and plain and q.device.type == "cpu" and q.dtype in _LSE_DTYPES
                and not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad))):
            op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
            if op is not None:
                try:
                    out, lse = op(q, k, v, dropout_p=0.0, is_causal=False, attn_mask=None, scale=a.get("scale"))[:2]
                except (RuntimeError, TypeError):  # pragma: no cover - depends on the torch build
                    out, lse = None, None
        if out is None:
            out = func(*args, **kwargs)
        self.calls.append((q, k, a.get("scale"), lse, plain))
        return out


# ---------------------------------------------------------------------------- recorder
class _RecordingProcessor:
    """Wraps the original processor of one site: record Q/K, then call the original.

    ``Attention.forward`` filters keyword arguments by the processor's ``__call__`` signature;
    ``__call__`` is therefore exposed as a wrapper whose signature is the original's
    (``functools.update_wrapper``), so exactly the same arguments reach the original.
    """

    def __init__(self, capture: QKCapture, site: AttnSite, original: Any, extractor: Callable,
                 layout: str | None = None):
        self._capture = capture
        self._site = site
        self._original = original
        self._extractor = extractor
        self._layout = layout
        self._signature = inspect.signature(original.__call__)

        def call(attn, *args, **kwargs):
            if self._layout is None:
                self._record(attn, args, kwargs)
                return self._original(attn, *args, **kwargs)
            a = self._bind(attn, args, kwargs)
            self._precheck(attn, a)
            tap = _SDPATap(want_lse=self._capture.lse)
            with tap:
                out = self._original(attn, *args, **kwargs)
            if tap.calls:
                self._record_tapped(attn, a, tap.calls)
            else:  # a non-native attention backend: recompute Q/K from the inputs as before
                self._record(attn, args, kwargs)
            return out

        functools.update_wrapper(call, original.__call__)
        self._call = call

    @property
    def __call__(self):  # noqa: D401 - see class docstring
        return self._call

    @property
    def original(self) -> Any:
        return self._original

    def _bind(self, attn, args, kwargs) -> dict[str, Any]:
        try:
            bound = self._signature.bind(attn, *args, **kwargs)
        except TypeError as exc:
            raise CaptureError(f"site {self._site.name}: cannot bind the call to "
                               f"{type(self._original).__name__}.__call__ ({exc})", fix=FIX) from exc
        return dict(bound.arguments)

    def _precheck(self, attn, a: dict[str, Any]) -> None:
        """The checks of the extractor that do not compute anything (mask, context stream)."""
        if self._layout == _LAYOUT_SELF:
            _no_context(attn, a, self._site)
        else:
            _no_mask(attn, a, self._site)

    def _record_tapped(self, attn, a: dict[str, Any], calls) -> None:
        site = self._site
        if len(calls) != 1:
            raise CaptureError(f"site {site.name}: the processor called scaled_dot_product_attention "
                               f"{len(calls)} times (expected once)", fix=FIX)
        q, k, scale, lse, plain = calls[0]
        if not plain:
            raise CaptureError(f"site {site.name}: scaled_dot_product_attention is called with a mask, "
                               f"dropout, causal or GQA attention; the image self-attention is not plain", fix=FIX)
        n = site.n_tokens
        seq = q.shape[2] if q.ndim == 4 else -1
        if q.ndim != 4 or k.shape != q.shape:
            raise CaptureError(f"site {site.name}: SDPA got query {tuple(q.shape)}, key {tuple(k.shape)}; "
                               f"expected [batch, heads, tokens, head_dim] both", fix=FIX)
        if self._layout == _LAYOUT_SELF and seq != n:
            raise CaptureError(f"site {site.name}: {seq} tokens but the site grid {site.grid} has {n}",
                               fix=FIX + " (or pass the right latent_shape to attention_sites)")
        if self._layout != _LAYOUT_SELF:
            n_img_in = a["hidden_states"].shape[1]
            double = a.get("encoder_hidden_states") is not None
            if self._layout == _LAYOUT_LAST and not double:  # FLUX single-stream: [text, image] in
                if site.n_text is not None and n_img_in != site.n_text + n:
                    raise CaptureError(
                        f"site {site.name}: single-stream sequence has {n_img_in} tokens, expected "
                        f"{site.n_text} text + {n} image (grid {site.grid})", fix=FIX)
            elif n_img_in != n:
                raise CaptureError(f"site {site.name}: {n_img_in} image tokens but the site grid "
                                   f"{site.grid} has {n}", fix=FIX)
            if self._layout == _LAYOUT_LAST and double and site.kind != "joint":
                raise CaptureError(f"site {site.name}: declared {site.kind!r} but receives a separate text "
                                   f"stream", fix=FIX)
            if seq < n:
                raise CaptureError(f"site {site.name}: SDPA sequence of {seq} tokens is shorter than the "
                                   f"{n}-token image grid {site.grid}", fix=FIX)
        img = slice(0, n) if self._layout != _LAYOUT_LAST else slice(seq - n, seq)
        q, k = q[:, :, img], k[:, :, img]
        if lse is not None:
            lse = lse[:, :, img]
        scale = float(q.shape[-1]) ** -0.5 if scale is None else float(scale)
        self._finish(attn, q, k, scale, lse, lse_image_only=seq == n)

    def _record(self, attn, args, kwargs) -> None:
        site = self._site
        a = self._bind(attn, args, kwargs)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self._capture.detach):
            q, k, scale = self._extractor(attn, a, site)
        self._finish(attn, q, k, scale)

    def _finish(self, attn, q, k, scale, lse=None, lse_image_only=False) -> None:
        site = self._site
        if q.ndim != 4 or q.shape[0] != 1:
            raise CaptureError(f"site {site.name}: expected one image (batch 1, no CFG), got query "
                               f"shape {tuple(q.shape)}", fix="call predict with a single latent")
        heads = int(attn.heads)
        head_dim = int(attn.inner_dim) // heads
        n = site.n_tokens
        if q.shape[2] != n or k.shape[2] != n:
            raise CaptureError(f"site {site.name}: {q.shape[2]} image tokens but the site grid "
                               f"{site.grid} has {n}", fix=FIX + " (or pass the right latent_shape "
                               "to attention_sites)")
        if tuple(q.shape[1:]) != (heads, n, head_dim) or tuple(k.shape) != tuple(q.shape):
            raise CaptureError(f"site {site.name}: head dims mismatch: q {tuple(q.shape)}, "
                               f"k {tuple(k.shape)}, module has {heads} heads x {head_dim}", fix=FIX)
        q, k = q[0], k[0]
        if self._capture.detach:
            q, k = q.detach(), k.detach()
        if lse is not None:
            lse = lse[0].detach().float()
        self._capture._add(CapturedQK(site.name, q, k, float(scale), tuple(site.grid), site.kind, lse,
                                      bool(lse_image_only and lse is not None)))


# ---------------------------------------------------------------------------- ViT encoders
def _vit_hook(capture: QKCapture, site: AttnSite):
    """A forward pre-hook for a transformers ViT attention module (``q_proj``, ``k_proj``,
    ``num_attention_heads``, ``head_dim``, ``scaling``: DINOv2's ``Dinov2Attention``): records the
    patch tokens' per-head Q/K exactly as the module computes them before its softmax."""

    def hook(module, args, kwargs):
        hs = args[0] if args else kwargs.get("hidden_states")
        if hs is None or hs.ndim != 3 or hs.shape[0] != 1:
            raise CaptureError(f"site {site.name}: expected hidden_states [1, tokens, dim], got "
                               f"{None if hs is None else tuple(hs.shape)}", fix="call predict with one image")
        if (args[1] if len(args) > 1 else kwargs.get("attention_mask")) is not None:
            raise CaptureError(f"site {site.name}: an attention_mask is passed; restricting it to the "
                               f"patch keys is not implemented", fix=FIX)
        n = site.n_tokens
        prefix = hs.shape[1] - n  # CLS (+ register tokens) come first
        if prefix < 0:
            raise CaptureError(f"site {site.name}: {hs.shape[1]} tokens but the site grid {site.grid} "
                               f"has {n} patches", fix="encode at the backbone's resolution")
        heads, head_dim = int(module.num_attention_heads), int(module.head_dim)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not capture.detach):
            q = module.q_proj(hs[:, prefix:]).view(n, heads, head_dim).transpose(0, 1)
            k = module.k_proj(hs[:, prefix:]).view(n, heads, head_dim).transpose(0, 1)
        if capture.detach:
            q, k = q.detach(), k.detach()
        capture._add(CapturedQK(site.name, q, k, float(module.scaling), tuple(site.grid), site.kind))

    return hook


def _check_vit_site(site: AttnSite) -> None:
    missing = [a for a in ("q_proj", "k_proj", "num_attention_heads", "head_dim", "scaling")
               if not hasattr(site.module, a)]
    if missing:
        raise CaptureError(f"site {site.name} ({type(site.module).__name__}): a ViT attention module "
                           f"without {missing}", fix="transformers changed its ViT attention; update "
                                                     "trace_edges.teacher.capture._vit_hook")


# ---------------------------------------------------------------------------- context
class QKCapture:
    """Context manager returned by :func:`capture_qk`."""

    def __init__(self, sites: Sequence[AttnSite], *, callback: Callable[[CapturedQK], None] | None = None,
                 store: bool = True, detach: bool = True, lse: bool = False):
        names = [s.name for s in sites]
        if len(set(names)) != len(names):
            raise ValueError("capture_qk: duplicate site names")
        if not sites:
            raise ValueError("capture_qk: no sites")
        self.sites: list[AttnSite] = list(sites)
        self.callback = callback
        self.store = store
        self.detach = detach
        self.lse = lse
        self._buffer: dict[str, CapturedQK] = {}
        self._seen: set[str] = set()
        self._originals: list[tuple[AttnSite, Any]] = []
        self._hooks: list[Any] = []   # forward pre-hook handles of "vit" sites
        self._active = False

    # -- install / restore
    def __enter__(self) -> QKCapture:
        if self._active:
            raise CaptureError("capture_qk context entered twice", fix="use a fresh capture_qk(...)")
        known = _known() if any(s.kind != "vit" for s in self.sites) else {}
        plan = []
        for site in self.sites:
            if site.kind == "vit":
                _check_vit_site(site)
                plan.append((site, None, None))
                continue
            proc = getattr(site.module, "processor", None)
            if proc is None or not hasattr(site.module, "set_processor"):
                raise CaptureError(f"site {site.name} ({type(site.module).__name__}) has no attention "
                                   f"processor API (processor / set_processor)", fix=FIX)
            entry = known.get(type(proc))
            if entry is None:
                raise _unknown_processor_error(site, proc)
            plan.append((site, proc, entry))
        try:
            for site, proc, extractor in plan:
                if site.kind == "vit":
                    self._hooks.append(site.module.register_forward_pre_hook(_vit_hook(self, site),
                                                                             with_kwargs=True))
                    continue
                site.module.set_processor(_RecordingProcessor(self, site, proc, *extractor))
                self._originals.append((site, proc))
        except BaseException:
            self._restore()
            raise
        self._active = True
        self._buffer.clear()
        self._seen.clear()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._restore()
        self._active = False
        self._buffer.clear()
        self._seen.clear()

    def _restore(self) -> None:
        errors = []
        while self._hooks:
            self._hooks.pop().remove()
        while self._originals:
            site, proc = self._originals.pop()
            try:
                site.module.set_processor(proc)
            except Exception as e:  # keep restoring the others
                errors.append(f"{site.name}: {e}")
        if errors:
            raise CaptureError("could not restore the original attention processors: " + "; ".join(errors),
                               fix=FIX)

    # -- buffer
    def _add(self, item: CapturedQK) -> None:
        if item.name in self._seen:
            raise CaptureError(f"site {item.name} captured twice without pop()",
                               fix="call cap.pop() after every predict (one forward per step)")
        self._seen.add(item.name)
        if self.store:
            self._buffer[item.name] = item
        if self.callback is not None:
            self.callback(item)

    def pop(self) -> list[CapturedQK]:
        """The Q/K of the last forward, in site order; clears the buffer.

        Raises :class:`CaptureError` if the forward captured no site, or only some of them.
        """
        if not self._seen:
            raise CaptureError(
                f"no attention site was captured since the last pop() ({len(self.sites)} sites "
                f"installed, e.g. {self.sites[0].name}); either predict was not called inside the "
                f"capture block or the model no longer routes through the processors", fix=FIX)
        missing = [s.name for s in self.sites if s.name not in self._seen]
        if missing:
            self._seen.clear()
            self._buffer.clear()
            raise CaptureError(f"{len(missing)} of {len(self.sites)} sites were not called during the "
                               f"forward: {missing[:5]}{' ...' if len(missing) > 5 else ''}", fix=FIX)
        out = [self._buffer[s.name] for s in self.sites] if self.store else []
        self._buffer.clear()
        self._seen.clear()
        return out


def capture_qk(backbone: Any = None, sites: Iterable[AttnSite] | None = None, *,
               callback: Callable[[CapturedQK], None] | None = None, store: bool = True,
               detach: bool = True, lse: bool = False) -> QKCapture:
    """Record image-token Q/K at ``sites`` (default: ``backbone.attention_sites()``).

    ``callback(CapturedQK)`` is called for every site as soon as it runs; with ``store=False``
    nothing is buffered (``pop()`` then only checks that every site ran and returns ``[]``).
    ``detach=False`` keeps the autograd graph (for distillation through the attention maps).
    ``lse=True`` also hands over each site's row log-sum-exp where the forward's own kernel yields it
    (CPU; :class:`CapturedQK`), at no extra cost to the forward.
    """
    if sites is None:
        if backbone is None:
            raise ValueError("capture_qk needs a backbone or explicit sites")
        sites = backbone.attention_sites()
    return QKCapture(list(sites), callback=callback, store=store, detach=detach, lse=lse)


def attention_probs(c: CapturedQK, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``softmax(scale * q k^T)`` per head, ``[heads, n, n]`` (for tests / small grids only)."""
    q, k = c.q.to(dtype), c.k.to(dtype)
    return torch.softmax(c.scale * q @ k.transpose(-1, -2), dim=-1)
