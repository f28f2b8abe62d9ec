"""Capture the per-head queries and keys of every image self-attention site of a denoiser.

Only diffusers' attention-processor API is used (``module.set_processor``); no ``forward`` is
ever patched. (The one exception is the non-diffusion control DINOv2, a transformers ViT with no
processor API: its sites, kind ``"vit"``, are recorded by a PyTorch forward pre-hook on the
attention module that recomputes ``q_proj`` / ``k_proj`` on the patch tokens, CLS and register
tokens dropped; the module's output is untouched.) For each
:class:`~trace_edges.backbones.AttnSite` of a diffusion denoiser, :func:`capture_qk` installs a
recording processor that

1. recomputes, for the image tokens only, the query and key exactly as the original processor
   does before its softmax (projections, ``norm_q`` / ``norm_k`` qk-norms, FLUX's rotary
   embedding on the image positions) together with the softmax scale the original uses;
2. hands them over as :class:`CapturedQK` (``q, k: [heads, n_img_tokens, head_dim]``);
3. delegates to the original processor, so the module's output is unchanged.

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
    """

    name: str
    q: torch.Tensor
    k: torch.Tensor
    scale: float
    grid: tuple[int, int]
    kind: str

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
def _known() -> dict[type, Callable]:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0, JointAttnProcessor2_0
    from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

    return {
        AttnProcessor2_0: _extract_attn_processor_2_0,
        AttnProcessor: _extract_attn_processor,
        JointAttnProcessor2_0: _extract_joint,
        FluxAttnProcessor: _extract_flux,
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


# ---------------------------------------------------------------------------- recorder
class _RecordingProcessor:
    """Wraps the original processor of one site: record Q/K, then call the original.

    ``Attention.forward`` filters keyword arguments by the processor's ``__call__`` signature;
    ``__call__`` is therefore exposed as a wrapper whose signature is the original's
    (``functools.update_wrapper``), so exactly the same arguments reach the original.
    """

    def __init__(self, capture: QKCapture, site: AttnSite, original: Any, extractor: Callable):
        self._capture = capture
        self._site = site
        self._original = original
        self._extractor = extractor
        self._signature = inspect.signature(original.__call__)

        def call(attn, *args, **kwargs):
            self._record(attn, args, kwargs)
            return self._original(attn, *args, **kwargs)

        functools.update_wrapper(call, original.__call__)
        self._call = call

    @property
    def __call__(self):  # noqa: D401 - see class docstring
        return self._call

    @property
    def original(self) -> Any:
        return self._original

    def _record(self, attn, args, kwargs) -> None:
        site = self._site
        try:
            bound = self._signature.bind(attn, *args, **kwargs)
        except TypeError as exc:
            raise CaptureError(f"site {site.name}: cannot bind the call to "
                               f"{type(self._original).__name__}.__call__ ({exc})", fix=FIX) from exc
        a = dict(bound.arguments)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self._capture.detach):
            q, k, scale = self._extractor(attn, a, site)
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
        self._capture._add(CapturedQK(site.name, q, k, float(scale), tuple(site.grid), site.kind))


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
                 store: bool = True, detach: bool = True):
        names = [s.name for s in sites]
        if len(set(names)) != len(names):
            raise ValueError("capture_qk: duplicate site names")
        if not sites:
            raise ValueError("capture_qk: no sites")
        self.sites: list[AttnSite] = list(sites)
        self.callback = callback
        self.store = store
        self.detach = detach
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
            extractor = known.get(type(proc))
            if extractor is None:
                raise _unknown_processor_error(site, proc)
            plan.append((site, proc, extractor))
        try:
            for site, proc, extractor in plan:
                if site.kind == "vit":
                    self._hooks.append(site.module.register_forward_pre_hook(_vit_hook(self, site),
                                                                             with_kwargs=True))
                    continue
                site.module.set_processor(_RecordingProcessor(self, site, proc, extractor))
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
               detach: bool = True) -> QKCapture:
    """Record image-token Q/K at ``sites`` (default: ``backbone.attention_sites()``).

    ``callback(CapturedQK)`` is called for every site as soon as it runs; with ``store=False``
    nothing is buffered (``pop()`` then only checks that every site ran and returns ``[]``).
    ``detach=False`` keeps the autograd graph (for distillation through the attention maps).
    """
    if sites is None:
        if backbone is None:
            raise ValueError("capture_qk needs a backbone or explicit sites")
        sites = backbone.attention_sites()
    return QKCapture(list(sites), callback=callback, store=store, detach=detach)


def attention_probs(c: CapturedQK, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``softmax(scale * q k^T)`` per head, ``[heads, n, n]`` (for tests / small grids only)."""
    q, k = c.q.to(dtype), c.k.to(dtype)
    return torch.softmax(c.scale * q @ k.transpose(-1, -2), dim=-1)
