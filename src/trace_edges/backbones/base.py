"""The backbone adapter interface shared by the five diffusion families.

A :class:`Backbone` wraps one diffusers pipeline (loaded with the family's own pipeline class
``from_pretrained``, for hub ids and local directories alike) and exposes exactly what the TRACE
teacher needs, in one convention for every family:

* :meth:`Backbone.encode`: ``uint8`` RGB image -> scaled VAE latent ``[1, C, h, w]``
  (deterministic: posterior mean, ``scaling_factor`` / ``shift_factor`` as the pipeline uses
  them in reverse when decoding);
* :meth:`Backbone.null_condition`: denoiser kwargs for the empty prompt ``""``, no CFG;
* :meth:`Backbone.predict`: one denoiser forward at a timestep index ``t`` of the 1000-step
  training scale, returning ε (``kind == "eps"``) or the flow velocity (``kind == "flow"``);
* :meth:`Backbone.attention_sites`: every image self-attention module with its token grid;
* :meth:`Backbone.timesteps`: the paper's stride grid ``[0, s-1, 2s-1, ..., 999]``;
* :meth:`Backbone.model_info`: what to put in provenance records.

See ``docs/backbones.md`` for the per-family details and every decision taken.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
from PIL import Image

from trace_edges.errors import ConfigError, DataError

#: keys a backbone spec may carry (anything else is a typo and is rejected).
SPEC_KEYS = ("family", "model", "revision", "resolution", "drop_t5", "guidance")

#: the training scale every timestep index refers to.
NUM_TRAIN_TIMESTEPS = 1000


@dataclass(frozen=True, eq=False)
class AttnSite:
    """One image self-attention module of the denoiser.

    ``name`` is the dotted module path inside the denoiser (``denoiser.get_submodule(name)``).
    ``kind``: ``"self"`` (image tokens only: U-Net ``attn1``, PixArt ``attn1``, SD3.5-M's
    ``attn2``), ``"joint"`` (SD3/FLUX double-stream: image and text are separate inputs; the
    image part is the whole ``hidden_states``), ``"single"`` (FLUX single-stream: the input is
    ``[text, image]`` concatenated; the image tokens are the last ``grid[0] * grid[1]``), ``"vit"``
    (a transformers ViT encoder's attention, DINOv2: CLS/register tokens first, then the patches;
    recorded by a forward pre-hook, see :mod:`trace_edges.teacher.capture`).
    ``grid`` is the ``(h, w)`` token grid; token ``n`` sits at row ``n // w``, column ``n % w``.
    ``n_text`` is the number of leading text tokens of a ``"single"`` site (None otherwise).
    """

    name: str
    module: torch.nn.Module
    kind: str
    grid: tuple[int, int]
    n_text: int | None = None

    @property
    def n_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def __repr__(self) -> str:  # the module repr is huge
        extra = "" if self.n_text is None else f", n_text={self.n_text}"
        return f"AttnSite({self.name!r}, {self.kind}, grid={self.grid}{extra})"


def normalize_spec(spec: Mapping[str, Any], cls: type[Backbone]) -> dict[str, Any]:
    """Validate a spec against ``cls`` and fill defaults; raise :class:`ConfigError` on errors."""
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(f"backbone spec: unknown key(s) {unknown}",
                          fix=f"allowed keys: {list(SPEC_KEYS)}")
    model = spec.get("model")
    if not model or not isinstance(model, (str, Path)):
        raise ConfigError("backbone spec: 'model' (hub id or local pipeline directory) is required",
                          fix=f"e.g. model: {cls.default_model!r}")
    res = spec.get("resolution", cls.native_resolution)
    if isinstance(res, bool) or not isinstance(res, (int, np.integer)) or res <= 0:
        raise ConfigError(f"backbone spec: resolution must be a positive int (pixels), got {res!r}")
    drop_t5 = bool(spec.get("drop_t5", False))
    if drop_t5 and cls.family != "sd3":
        raise ConfigError(f"backbone spec: drop_t5 is only meaningful for family 'sd3', not {cls.family!r}",
                          fix="remove drop_t5 from the spec")
    guidance = spec.get("guidance")
    if guidance is not None and cls.family != "flux":
        raise ConfigError(f"backbone spec: guidance is only meaningful for family 'flux', not {cls.family!r}",
                          fix="remove guidance from the spec (no classifier-free guidance is used)")
    out = {
        "family": cls.family,
        "model": str(model),
        "revision": spec.get("revision"),
        "resolution": int(res),
        "drop_t5": drop_t5,
    }
    if cls.family == "flux":
        out["guidance"] = float(cls.default_guidance if guidance is None else guidance)
    return out


def _dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """diffusers >= 0.42 takes ``dtype=`` (``torch_dtype`` is deprecated); older ones ``torch_dtype=``."""
    import diffusers

    major, minor = (int(x) for x in re.findall(r"\d+", diffusers.__version__)[:2])
    return {"dtype": dtype} if (major, minor) >= (0, 42) else {"torch_dtype": dtype}


def resize_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize ``uint8 [H, W, 3]`` to ``size x size`` with PIL bicubic (antialiased: PIL widens the
    bicubic kernel by the downscale factor). The aspect ratio is NOT kept (no crop, no pad): the
    whole image is seen and a token-grid map is stretched back to ``H x W`` by the caller."""
    if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
        raise DataError(f"encode expects a uint8 [H, W, 3] RGB array, got "
                        f"{getattr(rgb, 'dtype', type(rgb))} {getattr(rgb, 'shape', '')}",
                        fix="load images with trace_edges.data.images.load_rgb")
    im = Image.fromarray(rgb)
    if im.size != (size, size):
        im = im.resize((size, size), resample=Image.Resampling.BICUBIC)
    return np.asarray(im, dtype=np.uint8)


class Backbone:
    """Base adapter. Subclasses set the class attributes and implement the ``_`` hooks."""

    family: ClassVar[str]
    kind: ClassVar[str]  # "eps" | "flow"
    pipeline_class_name: ClassVar[str]
    denoiser_attr: ClassVar[str]  # "unet" | "transformer"
    text_encoder_attrs: ClassVar[tuple[str, ...]]
    native_resolution: ClassVar[int]
    default_model: ClassVar[str]
    default_guidance: ClassVar[float] = 1.0

    def __init__(self, spec: Mapping[str, Any], device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, *, null_text: Mapping[str, torch.Tensor] | None = None):
        self.spec = normalize_spec(spec, type(self))
        self.resolution: int = self.spec["resolution"]
        self.device = torch.device(device)
        self.dtype = dtype
        # ``null_text`` (the null_prompt stage's artifact, :mod:`trace_edges.null_prompt`):
        # the empty prompt's text-encoder outputs, so the text encoders are never loaded.
        self.pipe = self._load_pipeline(without_text=null_text is not None)
        self.vae = self.pipe.vae
        self.denoiser: torch.nn.Module = getattr(self.pipe, self.denoiser_attr)
        self.scheduler = self.pipe.scheduler
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self._check_resolution()
        if null_text is None:
            # Null-prompt conditioning, computed once with the pipeline's own encode_prompt; the
            # text encoders are then released (the null prompt is the only prompt TRACE uses).
            null_text = self.encode_null_text(self.pipe, self.device)
            for name in self.text_encoder_attrs:
                if getattr(self.pipe, name, None) is not None:
                    setattr(self.pipe, name, None)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        self.null_text: dict[str, torch.Tensor] = self._check_null_text(null_text)
        self._null = self._null_from_text({k: v.to(self.device) for k, v in self.null_text.items()})
        for module in (self.vae, self.denoiser):
            module.to(self.device)
            module.eval()
            module.requires_grad_(False)
        if self._vae_upcast():
            self.vae.to(torch.float32)
        self._setup_schedule()

    # ------------------------------------------------------------------ loading
    @classmethod
    def _pipeline_cls(cls):
        import diffusers

        return getattr(diffusers, cls.pipeline_class_name)

    @classmethod
    def _load_kwargs(cls, spec: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    @classmethod
    def _text_components(cls) -> dict[str, None]:
        """Every text encoder and its tokenizer set to None (``from_pretrained`` then skips them)."""
        out: dict[str, None] = {}
        for name in cls.text_encoder_attrs:
            out[name] = None
            out[name.replace("text_encoder", "tokenizer")] = None
        return out

    def _load_pipeline(self, without_text: bool = False):
        return self.load_pipeline(self.spec, self.dtype, **(self._text_components() if without_text else {}))

    @classmethod
    def load_pipeline(cls, spec: Mapping[str, Any], dtype: torch.dtype, **components: Any):
        """The family's pipeline ``from_pretrained`` for a normalized ``spec`` in ``dtype``;
        ``components`` (e.g. ``transformer=None``) replace or skip pipeline components."""
        pipe_cls = cls._pipeline_cls()
        model, revision = spec["model"], spec["revision"]
        kwargs = {**cls._load_kwargs(spec), **components}
        try:
            return pipe_cls.from_pretrained(model, revision=revision, **_dtype_kwarg(dtype), **kwargs)
        except (OSError, ValueError, EnvironmentError) as exc:
            local = Path(model).exists()
            raise DataError(
                f"cannot load {cls.family} pipeline {pipe_cls.__name__} from "
                f"{'local directory' if local else 'hub id'} {model!r} (revision {revision!r}): "
                f"{type(exc).__name__}: {exc}",
                fix=("check that the directory is a diffusers pipeline (model_index.json); tiny "
                     "models are built with trace_edges.backbones.tiny.build_tiny" if local else
                     "check the hub id / revision, accept the model licence on the hub and log in, "
                     "or pre-download it; with HF_HUB_OFFLINE=1 it must already be in the HF cache"),
            ) from exc

    def _check_resolution(self) -> None:
        mult = self.resolution_multiple
        if self.resolution % mult:
            raise ConfigError(
                f"backbone {self.family}: resolution {self.resolution} is not a multiple of {mult} "
                f"(VAE factor {self.vae_scale_factor} x the denoiser's token/level factor)",
                fix=f"use e.g. {max(mult, round(self.resolution / mult) * mult)}")

    @property
    def resolution_multiple(self) -> int:
        return self.vae_scale_factor * 2

    def _vae_upcast(self) -> bool:
        return False

    # ------------------------------------------------------------------ shapes
    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        s = self.resolution // self.vae_scale_factor
        return (1, self.latent_channels, s, s)

    # ------------------------------------------------------------------ VAE
    def _latent_shift_scale(self) -> tuple[float, float]:
        cfg = self.vae.config
        shift = getattr(cfg, "shift_factor", None)
        return (0.0 if shift is None else float(shift)), float(cfg.scaling_factor)

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """``uint8 [H, W, 3]`` -> ``float [1, 3, R, R]`` in ``[-1, 1]`` (R = resolution)."""
        arr = resize_rgb(rgb, self.resolution)
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].to(torch.float32)
        return x / 127.5 - 1.0

    @torch.no_grad()
    def encode(self, rgb: np.ndarray) -> torch.Tensor:
        """Image -> scaled latent ``[1, C, R/f, R/f]`` (float32): ``(mean - shift) * scale``."""
        x = self.preprocess(rgb).to(self.device, self.vae.dtype)
        mean = self.vae.encode(x).latent_dist.mean
        return self._scale_latent(mean.to(torch.float32))

    def _scale_latent(self, mean: torch.Tensor) -> torch.Tensor:
        shift, scale = self._latent_shift_scale()
        return (mean - shift) * scale

    def _unscale_latent(self, z: torch.Tensor) -> torch.Tensor:
        shift, scale = self._latent_shift_scale()
        return z / scale + shift

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latent -> image ``float [1, 3, R, R]`` in ``[-1, 1]`` (the pipeline's decode)."""
        z = self._unscale_latent(z.to(self.device, torch.float32)).to(self.vae.dtype)
        return self.vae.decode(z).sample.to(torch.float32).clamp(-1, 1)

    # ------------------------------------------------------------------ conditioning
    #: the names of :meth:`_encode_text`'s tensors (the null_prompt artifact's keys)
    null_text_keys: ClassVar[tuple[str, ...]] = ("prompt_embeds",)

    @classmethod
    def encode_null_text(cls, pipe: Any, device: torch.device) -> dict[str, torch.Tensor]:
        """The empty prompt through ``pipe``'s text encoders (moved to ``device``): the tensors
        :meth:`_encode_text` returns, detached, in the encoders' dtype, on the CPU."""
        for name in cls.text_encoder_attrs:
            enc = getattr(pipe, name, None)
            if enc is not None:
                enc.to(device)
        with torch.no_grad():
            out = cls._encode_text(pipe, torch.device(device))
        return {k: v.detach().to("cpu") for k, v in out.items()}

    @classmethod
    def _encode_text(cls, pipe: Any, device: torch.device) -> dict[str, torch.Tensor]:
        """``pipe.encode_prompt("")`` as the pipeline's ``__call__`` runs it (no CFG): only the
        tensors that come from the text encoders, named as :attr:`null_text_keys`."""
        raise NotImplementedError

    def _null_from_text(self, text: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """The denoiser kwargs for the empty prompt from :meth:`_encode_text`'s tensors (plus the
        family's non-text conditioning: micro-conditions, position ids, guidance)."""
        raise NotImplementedError

    def _check_null_text(self, text: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if set(text) != set(self.null_text_keys):
            raise DataError(f"{self.family}: null-prompt tensors {sorted(text)} are not the family's "
                            f"{sorted(self.null_text_keys)}",
                            fix="recompute them with `trace-edges null-prompt` for this backbone")
        return {k: text[k].detach().to("cpu") for k in self.null_text_keys}

    def null_condition(self) -> dict[str, Any]:
        """Denoiser kwargs for the empty prompt ``""`` (no CFG), computed once at load."""
        return dict(self._null)

    # ------------------------------------------------------------------ time
    def _setup_schedule(self) -> None:
        raise NotImplementedError

    def _check_t(self, t: int) -> int:
        if isinstance(t, torch.Tensor):
            t = int(t.item())
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= t < NUM_TRAIN_TIMESTEPS:
            raise ValueError(f"timestep index must be an int in [0, {NUM_TRAIN_TIMESTEPS - 1}], got {t!r}")
        return int(t)

    def timesteps(self, stride: int) -> list[int]:
        """The trajectory grid ``[0] + [k*stride - 1 for k = 1 .. 1000 // stride]``.

        ``stride=100`` -> ``[0, 99, 199, ..., 999]`` (11 steps, paper Fig. 1). For ``stride=1``
        the duplicate 0 is dropped (``[0, 1, ..., 999]``).
        """
        if (isinstance(stride, bool) or not isinstance(stride, (int, np.integer))
                or not 1 <= stride <= NUM_TRAIN_TIMESTEPS):
            raise ConfigError(f"timestep stride must be an int in [1, {NUM_TRAIN_TIMESTEPS}], got {stride!r}")
        grid = [0] + [k * int(stride) - 1 for k in range(1, NUM_TRAIN_TIMESTEPS // int(stride) + 1)]
        return sorted(set(grid))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        """Forward-process sample ``x_t`` from a clean latent (q(x_t | x_0) with the given noise)."""
        raise NotImplementedError

    def step(self, x: torch.Tensor, t_from: int, t_to: int, model_out: torch.Tensor) -> torch.Tensor:
        """Deterministic transfer of ``x`` from ``t_from`` to ``t_to`` using ``predict``'s output at
        ``(x, t_from)``: DDIM (η = 0) for eps models, an Euler step of the flow ODE for flow models.
        With ``t_to > t_from`` this is one step of DDIM / flow inversion."""
        raise NotImplementedError

    # ------------------------------------------------------------------ denoiser
    def _forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        raise NotImplementedError

    def _to_common(self, out: torch.Tensor, x_t: torch.Tensor, t: int) -> torch.Tensor:
        return out

    def predict(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """One denoiser forward on latents ``x_t [1, C, h, w]`` at timestep index ``t``.

        Returns float32 ε (eps families) or velocity ``noise - x0`` (flow families), same shape as
        ``x_t``. Gradients are NOT disabled here (LoRA distillation needs them): wrap calls in
        ``torch.inference_mode()`` for the teacher.
        """
        t = self._check_t(t)
        if x_t.ndim != 4 or x_t.shape[0] != 1 or x_t.shape[1] != self.latent_channels:
            raise ValueError(f"predict expects latents [1, {self.latent_channels}, h, w], got {tuple(x_t.shape)}")
        x = x_t.to(self.device, self.dtype)
        out = self._forward(x, t)
        return self._to_common(out.to(torch.float32), x_t.to(self.device, torch.float32), t)

    # ------------------------------------------------------------------ attention
    def attention_sites(self, latent_shape: tuple[int, ...] | None = None) -> list[AttnSite]:
        raise NotImplementedError

    @staticmethod
    def _latent_hw(latent_shape: tuple[int, ...] | None, default: tuple[int, ...]) -> tuple[int, int]:
        shape = tuple(default if latent_shape is None else latent_shape)
        if len(shape) < 2:
            raise ValueError(f"latent_shape must end with (h, w), got {shape}")
        return int(shape[-2]), int(shape[-1])

    # ------------------------------------------------------------------ provenance
    def model_info(self) -> dict[str, Any]:
        import diffusers

        info: dict[str, Any] = {
            "family": self.family,
            "model": self.spec["model"],
            "revision": self.spec["revision"],
            "commit": self._resolved_commit(),
            "local": Path(self.spec["model"]).exists(),
            "pipeline_class": type(self.pipe).__name__,
            "denoiser_class": type(self.denoiser).__name__,
            "dtype": str(self.dtype).replace("torch.", ""),
            "resolution": self.resolution,
            "kind": self.kind,
            "diffusers": diffusers.__version__,
        }
        if self.family == "sd3":
            info["drop_t5"] = self.spec["drop_t5"]
        if self.family == "flux":
            info["guidance"] = self.spec["guidance"]
        return info

    def _resolved_commit(self) -> str | None:
        """The hub commit the files came from (``.../snapshots/<sha>/...`` of the HF cache)."""
        from trace_edges.hub import snapshot_commit

        for module in (self.denoiser, self.vae):
            commit = snapshot_commit(getattr(module.config, "_name_or_path", None))
            if commit:
                return commit
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.spec['model']!r}, resolution={self.resolution}, kind={self.kind!r})"


class EpsBackbone(Backbone):
    """ε / v-prediction families (SD1.5, SDXL, PixArt-α): DDPM noise schedule ``alphas_cumprod``."""

    kind: ClassVar[str] = "eps"

    def _setup_schedule(self) -> None:
        n = int(self.scheduler.config.num_train_timesteps)
        if n != NUM_TRAIN_TIMESTEPS:
            raise ConfigError(f"{self.family}: scheduler has {n} training timesteps, expected {NUM_TRAIN_TIMESTEPS}")
        self.alphas_cumprod: torch.Tensor = self.scheduler.alphas_cumprod.to(torch.float32).clone()
        self.prediction_type: str = str(getattr(self.scheduler.config, "prediction_type", "epsilon") or "epsilon")

    def _ab(self, t: int, like: torch.Tensor) -> torch.Tensor:
        return self.alphas_cumprod[t].to(like.device, torch.float32)

    def _to_common(self, out: torch.Tensor, x_t: torch.Tensor, t: int) -> torch.Tensor:
        ab = self._ab(t, out)
        if self.prediction_type == "epsilon":
            return out
        if self.prediction_type == "v_prediction":  # v = a eps - s x0  ->  eps = a v + s x_t
            return ab.sqrt() * out + (1 - ab).sqrt() * x_t
        if self.prediction_type == "sample":  # eps = (x_t - a x0) / s
            return (x_t - ab.sqrt() * out) / (1 - ab).sqrt()
        raise ConfigError(f"{self.family}: unsupported scheduler prediction_type {self.prediction_type!r}")

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        ab = self._ab(self._check_t(t), x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def step(self, x: torch.Tensor, t_from: int, t_to: int, model_out: torch.Tensor) -> torch.Tensor:
        a_f, a_t = self._ab(self._check_t(t_from), x), self._ab(self._check_t(t_to), x)
        x0 = (x - (1 - a_f).sqrt() * model_out) / a_f.sqrt()
        return a_t.sqrt() * x0 + (1 - a_t).sqrt() * model_out


class FlowBackbone(Backbone):
    """Rectified-flow families (SD3, FLUX): ``x_t = (1 - σ) x0 + σ noise``, velocity ``noise - x0``.

    ``σ(t)`` is the scheduler's own map: the unshifted training sigmas ``(t + 1) / 1000`` are put
    through ``scheduler.set_timesteps(sigmas=..., mu=...)`` (static shift for SD3, the
    resolution-dependent exponential shift ``mu`` for FLUX, as the pipeline computes it); the
    denoiser's timestep input is ``σ * 1000`` as in the pipelines.
    """

    kind: ClassVar[str] = "flow"

    def _mu(self) -> float | None:
        return None

    def _setup_schedule(self) -> None:
        import copy

        sched = copy.deepcopy(self.scheduler)
        n = int(sched.config.num_train_timesteps)
        if n != NUM_TRAIN_TIMESTEPS:
            raise ConfigError(f"{self.family}: scheduler has {n} training timesteps, expected {NUM_TRAIN_TIMESTEPS}")
        unshifted = np.arange(n, 0, -1, dtype=np.float64) / n  # 1.0, 0.999, ..., 0.001 (t = 999 .. 0)
        sched.set_timesteps(sigmas=unshifted.astype(np.float32), mu=self._mu())
        sig = sched.sigmas[:n].to(torch.float32)  # drop the appended terminal 0
        ts = sched.timesteps[:n].to(torch.float32)
        self.sigmas: torch.Tensor = sig.flip(0).clone()  # indexed by t
        self.model_timesteps: torch.Tensor = ts.flip(0).clone()  # denoiser input (σ * 1000)

    def sigma(self, t: int) -> float:
        return float(self.sigmas[self._check_t(t)])

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        s = self.sigma(t)
        return (1.0 - s) * x0 + s * noise

    def step(self, x: torch.Tensor, t_from: int, t_to: int, model_out: torch.Tensor) -> torch.Tensor:
        return x + (self.sigma(t_to) - self.sigma(t_from)) * model_out
