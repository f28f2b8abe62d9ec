"""The TRACE student (paper §3.4, Fig. 4b): LoRA-tuned backbone + a new edge decoder G.

One forward pass of the denoiser at t = 0 on the clean latent X_0 = E(I) gives

* the decoder input ``H``: either the **aggregated self-attention** SA ∈ [0,1]^{N×N} of the
  LoRA-tuned backbone (``decoder.input: attention``, the paper's formula Ê = G(H(ε_θ, I, 0)))
  or the **denoiser output** at t = 0 (``features``: ε or v on the latent grid, Fig. 4b);
* Ê = tanh(upsample(G(H))) ∈ [-1, 1]^{R×R} at the training resolution R;
* for the reconstruction loss, Î = D(x̂_0), the frozen VAE decoding of the model's clean-latent
  estimate from a SECOND pass at a sampled t > 0 on x_t = q(x_t | X_0, noise) (flow:
  x̂_0 = x_t − σ(t)·v; ε models: the DDIM estimate (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t). At t = 0 the model
  output enters x̂_0 only through σ(0) ≈ 0.003 (SD3), so L_rec would barely reach the LoRA
  (docs/decisions.md, benchmarks/bench_lrec_gradient.py).

Only the LoRA adapters (``peft``) and G are trainable; the base denoiser and the VAE stay frozen
(their weights are never touched). The text encoders were already released by the backbone
after :meth:`~trace_edges.backbones.base.Backbone.null_condition` was computed.

LoRA targets (``student.lora.targets: null``): the attention projections ``to_q, to_k, to_v,
to_out.0`` of every image self-attention site the teacher reads (``backbone.attention_sites()``),
i.e. SD3 / FLUX double-stream blocks: the image stream only (``add_*_proj`` / ``to_add_out`` of the
text stream are not adapted); FLUX single-stream blocks: ``to_q/k/v`` (they act on the joint
[text, image] sequence; the block's ``proj_out`` mixes attention and MLP and is not adapted);
U-Nets and PixArt: ``attn1`` only (cross-attention ``attn2`` sees only the constant null prompt
and is not adapted); SD3.5-Medium: ``attn`` and the image-only ``attn2``. A list of suffixes
instead adapts every ``Linear`` whose dotted name ends with one of them (PEFT's rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from trace_edges.errors import ConfigError, DataError
from trace_edges.teacher.capture import CapturedQK, capture_qk
from trace_edges.teacher.divergence import aggregate_attention
from trace_edges.teacher.trajectory import _largest_grid

#: the default LoRA targets inside every image self-attention site
ATTN_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
#: the timestep of the student's single forward pass
T0 = 0
#: peft adapter name
ADAPTER = "default"
LORA_PREFIX, DECODER_PREFIX = "lora.", "decoder."


# ---------------------------------------------------------------------------------------------
# edge decoder G
# ---------------------------------------------------------------------------------------------
class EdgeDecoder(nn.Module):
    """``layers`` 3×3 convolutions (``hidden`` channels, ReLU between, 1 output channel), then a
    bilinear upsample to the training image size and ``tanh``: Ê ∈ [-1, 1]. ``layers = 1`` is a
    single 3×3 conv from the input channels to 1."""

    def __init__(self, in_channels: int, hidden: int = 32, layers: int = 1):
        super().__init__()
        if layers < 1 or hidden < 1 or in_channels < 1:
            raise ConfigError(f"edge decoder: need layers >= 1, hidden >= 1, in_channels >= 1; got "
                              f"{layers}, {hidden}, {in_channels}")
        mods: list[nn.Module] = []
        c = in_channels
        for i in range(layers):
            out = 1 if i == layers - 1 else hidden
            mods.append(nn.Conv2d(c, out, kernel_size=3, padding=1))
            if i < layers - 1:
                mods.append(nn.ReLU())
            c = out
        self.net = nn.Sequential(*mods)
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        y = self.net(x)
        if tuple(y.shape[-2:]) != tuple(size):
            y = F.interpolate(y, size=tuple(size), mode="bilinear", align_corners=False)
        return torch.tanh(y)


# ---------------------------------------------------------------------------------------------
# backbone helpers
# ---------------------------------------------------------------------------------------------
def clean_estimate(backbone: Any, x_t: torch.Tensor, out: torch.Tensor, t: int = T0) -> torch.Tensor:
    """The model's clean-latent estimate x̂_0 from ``predict``'s output at ``(x_t, t)``.

    Flow families (SD3, FLUX; ``out`` = v = noise − x_0): x̂_0 = x_t − σ(t)·v.
    ε families (SD1.5, SDXL, PixArt; ``out`` = ε, v-prediction already converted): the DDIM
    estimate x̂_0 = (x_t − √(1−ᾱ_t)·ε) / √ᾱ_t.
    """
    if backbone.kind == "flow":
        return x_t - backbone.sigma(t) * out
    ab = backbone.alphas_cumprod[int(t)].to(out.device, torch.float32)
    return (x_t - (1 - ab).sqrt() * out) / ab.sqrt()


def decode_latent(backbone: Any, z: torch.Tensor) -> torch.Tensor:
    """Differentiable VAE decode of a scaled latent -> ``[1, 3, R, R]`` (float32, not clamped).

    The same computation as :meth:`Backbone.decode` without ``no_grad`` and the final clamp (a clamp
    would cut the reconstruction gradient wherever Î leaves [-1, 1])."""
    z = backbone._unscale_latent(z.to(backbone.device, torch.float32)).to(backbone.vae.dtype)
    return backbone.vae.decode(z).sample.to(torch.float32)


def default_lora_targets(backbone: Any) -> list[str]:
    """Full module names: ``ATTN_PROJECTIONS`` of every image self-attention site (those present)."""
    names = dict(backbone.denoiser.named_modules())
    out = []
    for site in backbone.attention_sites():
        for suffix in ATTN_PROJECTIONS:
            name = f"{site.name}.{suffix}"
            if name in names:
                out.append(name)
    return out


def resolve_lora_targets(backbone: Any, targets: Sequence[str] | None) -> list[str]:
    """The full names of the modules to adapt: the family default, or every ``nn.Linear`` whose
    dotted name equals or ends with ``.<suffix>`` for a given suffix (each must match)."""
    if targets is None:
        out = default_lora_targets(backbone)
    else:
        linear = [n for n, m in backbone.denoiser.named_modules() if isinstance(m, nn.Linear)]
        out, unmatched = [], []
        for t in targets:
            hits = [n for n in linear if n == t or n.endswith("." + t)]
            if not hits:
                unmatched.append(t)
            out += [n for n in hits if n not in out]
        if unmatched:
            raise ConfigError(f"student.lora.targets: {unmatched} match no Linear module of the "
                              f"{backbone.family} denoiser",
                              fix="use module-name suffixes such as 'to_q' or 'attn1.to_q', or null "
                                  "for the family default (docs/student.md)")
    if not out:
        raise ConfigError(f"student: no LoRA target module found in the {backbone.family} denoiser")
    return out


def _decoder_in_channels(backbone: Any, mode: str) -> tuple[int, tuple[int, int] | None]:
    if mode == "attention":
        grid = _largest_grid([tuple(s.grid) for s in backbone.attention_sites()])
        return grid[0] * grid[1], grid
    if mode == "features":
        return backbone.latent_channels, None
    raise ConfigError(f"student.decoder.input must be 'attention' or 'features', got {mode!r}")


def attention_image(captured: Sequence[CapturedQK], out_grid: tuple[int, int]) -> torch.Tensor:
    """The aggregated SA [N, N] of one forward as an N-channel image on the token grid.

    Channel j at query position i holds SA[i, j], unscaled: every row sums to 1, so a 3×3 patch
    of the input has L1 norm 9 at any resolution and an Adam step (≈ lr per weight) moves the
    first conv's output by at most ≈ 9·lr. (Scaling by N, to make uniform attention 1, moved it by
    ≈ 9·N·lr per step: with N = 256 the tanh saturated within one epoch and training died.) SA is
    :func:`~trace_edges.teacher.divergence.aggregate_attention` (heads averaged, multi-scale keys
    upsampled and renormalised, blocks averaged). With gradients enabled each block's [N, N]
    map is recomputed in the backward pass (activation checkpointing) so only the sum is held.
    """
    H, W = out_grid
    N = H * W
    total = None
    for c in captured:
        def block(q, k, grid=tuple(c.grid), scale=c.scale):
            return aggregate_attention([q], [k], [grid], out_grid, [scale])

        q, k = c.q.float(), c.k.float()
        if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
            a = checkpoint(block, q, k, use_reentrant=False)
        else:
            a = block(q, k)
        total = a if total is None else total + a
    sa = total / len(captured)
    return sa.transpose(0, 1).reshape(1, N, H, W)


# ---------------------------------------------------------------------------------------------
# the student
# ---------------------------------------------------------------------------------------------
@dataclass
class StudentOutput:
    edge: torch.Tensor                 # Ê [1, 1, R, R] in [-1, 1]
    recon: torch.Tensor | None         # Î [1, 3, R, R] (None when not asked for)
    model_out: torch.Tensor            # ε / v at t = 0 [1, C, h, w]


def draw_reconstruction(t_range: Sequence[int], latent_shape: Sequence[int],
                        generator: torch.Generator | None = None) -> tuple[int, torch.Tensor]:
    """(t, noise) of one reconstruction: t ~ U{lo..hi} (inclusive), noise ~ N(0, I) of the latent's
    shape, both on the CPU from ``generator`` (the global torch RNG when None)."""
    lo, hi = (int(v) for v in t_range)
    if not 0 <= lo <= hi:
        raise ConfigError(f"student.loss.rec_t must be [lo, hi] with 0 <= lo <= hi, got {list(t_range)}")
    t = int(torch.randint(lo, hi + 1, (1,), generator=generator)) if hi > lo else lo
    return t, torch.randn(tuple(latent_shape), generator=generator, dtype=torch.float32)


def seeded_reconstruction(t_range: Sequence[int], latent_shape: Sequence[int], key: str) -> tuple[int, torch.Tensor]:
    """A fixed (t, noise) per ``key`` (an image id), the same in every epoch, run and ablation cell
    (validation: L_rec and SSIM(I, Î) compare across epochs and students)."""
    import hashlib

    g = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(str(key).encode()).digest()[:8], "little"))
    return draw_reconstruction(t_range, latent_shape, g)


class StudentModel(nn.Module):
    """Backbone (frozen) + LoRA adapters + edge decoder. ``params`` is the validated ``student`` block.

    Adapters and decoder are initialised from ``seed`` (peft's LoRA init: A Kaiming-uniform, B = 0,
    so the adapted denoiser starts equal to the base one; PyTorch's default conv init for G).
    The backbone is modified in place (adapters injected): load a dedicated one.
    """

    def __init__(self, backbone: Any, params: Mapping[str, Any], *, seed: int = 0):
        super().__init__()
        from peft import LoraConfig, inject_adapter_in_model

        if getattr(backbone, "kind", None) not in ("eps", "flow"):
            raise ConfigError(f"student: backbone family {getattr(backbone, 'family', '?')!r} is not a diffusion "
                              f"model (kind {getattr(backbone, 'kind', None)!r}); the student predicts at t = 0 "
                              f"of a denoiser", fix="use a diffusion family for the teacher the student learns from")
        self.backbone = backbone
        self.params = dict(params)
        lora, dec = params["lora"], params["decoder"]
        self.input_mode = dec["input"]
        self.size = (backbone.resolution, backbone.resolution)
        in_ch, self.grid = _decoder_in_channels(backbone, self.input_mode)
        denoiser = backbone.denoiser
        if any("lora_" in n for n, _ in denoiser.named_parameters()):
            raise ConfigError("student: the backbone already carries LoRA adapters",
                              fix="load a fresh backbone for every StudentModel")
        self.lora_targets = resolve_lora_targets(backbone, lora.get("targets"))
        device = torch.device(backbone.device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(seed))
            cfg = LoraConfig(r=int(lora["rank"]), lora_alpha=float(lora["alpha"]),
                             lora_dropout=float(lora["dropout"]), target_modules=list(self.lora_targets),
                             bias="none")
            inject_adapter_in_model(cfg, denoiser, adapter_name=ADAPTER)
            decoder = EdgeDecoder(in_ch, int(dec["hidden"]), int(dec["layers"]))
        denoiser.requires_grad_(False)
        self._lora = {n: p for n, p in denoiser.named_parameters() if "lora_" in n}
        if not self._lora:
            raise ConfigError("student: peft injected no LoRA parameters", fix="check student.lora.targets")
        for p in self._lora.values():
            p.requires_grad_(True)
        backbone.vae.requires_grad_(False)
        self.decoder = decoder.to(device)  # the only registered submodule: backbone is held by reference
        self.sites = backbone.attention_sites() if self.input_mode == "attention" else None
        self.set_train(False)

    # ------------------------------------------------------------------ parameters
    def lora_parameters(self) -> list[nn.Parameter]:
        return list(self._lora.values())

    def decoder_parameters(self) -> list[nn.Parameter]:
        return list(self.decoder.parameters())

    def set_train(self, mode: bool) -> None:
        """Train mode for the decoder and the LoRA dropout only (the frozen base stays in eval)."""
        self.decoder.train(mode)
        for name, mod in self.backbone.denoiser.named_modules():
            if name.endswith("lora_dropout") or ".lora_dropout." in name:
                mod.train(mode)

    def student_state(self) -> dict[str, torch.Tensor]:
        """LoRA + decoder weights (CPU copies): ``lora.<denoiser param>``, ``decoder.<param>``."""
        out = {LORA_PREFIX + n: p.detach().to("cpu", copy=True).contiguous() for n, p in self._lora.items()}
        out.update({DECODER_PREFIX + n: p.detach().to("cpu", copy=True).contiguous()
                    for n, p in self.decoder.state_dict().items()})
        return out

    def load_student_state(self, state: Mapping[str, torch.Tensor], *, where: str = "student weights") -> None:
        """Load exactly the LoRA + decoder tensors of :meth:`student_state` (names and shapes must match)."""
        want = {LORA_PREFIX + n: p for n, p in self._lora.items()}
        dec = self.decoder.state_dict()
        want.update({DECODER_PREFIX + n: t for n, t in dec.items()})
        got = {k: v for k, v in state.items() if k.startswith((LORA_PREFIX, DECODER_PREFIX))}
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        bad = [k for k in set(want) & set(got) if tuple(want[k].shape) != tuple(got[k].shape)]
        if missing or extra or bad:
            raise DataError(f"{where} do not fit this student (missing {missing[:3]}, unexpected "
                            f"{extra[:3]}, shape mismatch {sorted(bad)[:3]})",
                            fix="the weights were trained with another backbone / lora / decoder config; "
                                "use the model.json next to them or retrain")
        with torch.no_grad():
            for n, p in self._lora.items():
                p.copy_(got[LORA_PREFIX + n].to(p.device, p.dtype))
        self.decoder.load_state_dict({n: got[DECODER_PREFIX + n] for n in dec}, strict=True)

    def describe(self) -> dict[str, Any]:
        n_lora = sum(p.numel() for p in self._lora.values())
        n_dec = sum(p.numel() for p in self.decoder.parameters())
        return {"lora_targets": list(self.lora_targets), "lora_parameters": n_lora,
                "decoder_in_channels": self.decoder.in_channels, "decoder_parameters": n_dec,
                "decoder_bytes_float32": 4 * n_dec, "decoder_input": self.input_mode,
                "resolution": self.size[0]}

    # ------------------------------------------------------------------ forward
    def forward(self, x0: torch.Tensor, *, reconstruct: bool = True,
                rec: tuple[int, torch.Tensor] | None = None) -> StudentOutput:  # noqa: D401
        """One denoiser pass at t = 0 on the clean latent ``x0 [1, C, h, w]`` -> Ê; with
        ``reconstruct``, Î = D(x̂_0) from a second pass at ``rec = (t, noise)`` on
        x_t = add_noise(x0, noise, t) (:func:`draw_reconstruction`). ``rec`` None or t = 0: Î from the
        t = 0 pass itself (x̂_0 = x0 − σ(0)·v: the literal reading, whose LoRA gradient is ∝ σ(0))."""
        bb = self.backbone
        x0 = x0.to(bb.device, torch.float32)
        if self.input_mode == "attention":
            with capture_qk(bb, self.sites, detach=not torch.is_grad_enabled()) as cap:
                out = bb.predict(x0, T0)
                captured = cap.pop()
            feats = attention_image(captured, self.grid)
            del captured
        else:
            out = bb.predict(x0, T0)
            feats = out
        edge = self.decoder(feats.to(torch.float32), self.size)
        recon = None
        if reconstruct:
            t, noise = rec if rec is not None else (T0, None)
            if int(t) == T0:
                recon = decode_latent(bb, clean_estimate(bb, x0, out, T0))
            else:
                x_t = bb.add_noise(x0, noise.to(x0.device, x0.dtype), int(t))
                recon = decode_latent(bb, clean_estimate(bb, x_t, bb.predict(x_t, int(t)), int(t)))
        return StudentOutput(edge=edge, recon=recon, model_out=out)


def edge_probability(edge: torch.Tensor) -> torch.Tensor:
    """Ê ∈ [-1, 1] -> (Ê + 1) / 2 ∈ [0, 1], the map the Dice loss and the edge source use."""
    return (edge + 1.0) * 0.5


__all__ = ["ATTN_PROJECTIONS", "EdgeDecoder", "StudentModel", "StudentOutput", "attention_image", "clean_estimate",
           "decode_latent", "default_lora_targets", "draw_reconstruction", "edge_probability", "resolve_lora_targets",
           "seeded_reconstruction"]
