"""Classical edge sources: Sobel gradient magnitude and Canny (the paper's Table 6 baseline).

Both work on the luminance ``Y = 0.2125 R + 0.7154 G + 0.0721 B`` (scikit-image ``rgb2gray``,
ITU-R BT.709 weights) of the image scaled to ``[0, 1]``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
from scipy import ndimage as ndi
from skimage import feature
from skimage.color import rgb2gray

from trace_edges.edges.base import EdgeSource
from trace_edges.errors import ConfigError

#: Largest Sobel gradient magnitude any image with values in [0, 1] can produce, 2*sqrt(5).
#: With the unnormalised 3x3 kernels d/dx = [1,2,1]^T [-1,0,1] (and its transpose), the squared
#: magnitude is a convex function of the nine patch values, so its maximum over the box [0,1]^9
#: sits on a vertex; enumerating the 512 binary patches gives gx = 4, gy = 2 (e.g. the patch
#: 0 0 1 / 0 . 1 / 0 1 1), i.e. sqrt(16 + 4). Gaussian pre-smoothing is a convex combination of
#: pixel values (weights sum to 1, reflect padding) so it keeps the input in [0, 1] and the bound
#: holds for every sigma. Dividing by this constant instead of each image's own maximum keeps
#: maps comparable across images: a flat image gives a near-zero map, not a noise map stretched
#: to 1.
SOBEL_MAX_MAGNITUDE = 2.0 * math.sqrt(5.0)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """``float64[H, W]`` luminance in [0, 1] of a ``uint8`` RGB image."""
    return rgb2gray(rgb.astype(np.float64) / 255.0)


class SobelSource(EdgeSource):
    """Gaussian-smoothed Sobel gradient magnitude divided by :data:`SOBEL_MAX_MAGNITUDE`."""

    name = "sobel"
    DEFAULTS = {"sigma": 1.0}

    def _check_params(self, params: Mapping[str, Any]) -> None:
        if not (isinstance(params["sigma"], (int, float)) and params["sigma"] >= 0):
            raise ConfigError(f"edges.sobel.sigma must be a number >= 0, got {params['sigma']!r}")

    def _compute(self, rgb: np.ndarray) -> np.ndarray:
        gray = to_gray(rgb)
        sigma = float(self.params["sigma"])
        if sigma > 0:
            gray = ndi.gaussian_filter(gray, sigma=sigma, mode="reflect")
        # reflect padding: the image border itself is not an edge
        gx = ndi.sobel(gray, axis=1, mode="reflect")
        gy = ndi.sobel(gray, axis=0, mode="reflect")
        mag = np.hypot(gx, gy) / SOBEL_MAX_MAGNITUDE
        return np.clip(mag, 0.0, 1.0).astype(np.float32)


class CannySource(EdgeSource):
    """scikit-image Canny on the luminance.

    Thresholds apply to the Sobel magnitude of the smoothed luminance in [0, 1] (range
    [0, :data:`SOBEL_MAX_MAGNITUDE`]), or are quantiles of it when ``use_quantiles``.

    ``output``: ``binary`` (default) = 1.0 on Canny's edge pixels, else 0.0; ``soft`` = on the
    same pixels, the gradient magnitude Canny thresholded (after its non-maximum suppression,
    kept by its hysteresis) divided by :data:`SOBEL_MAX_MAGNITUDE`, else 0.0 (the BSDS way of
    giving a gradient detector a strength to sweep: a threshold t on it keeps the Canny edges
    whose magnitude is at least t * 2 sqrt(5)).
    """

    name = "canny"
    DEFAULTS = {"sigma": 2.0, "low_threshold": 0.1, "high_threshold": 0.2, "use_quantiles": False,
                "output": "binary"}

    def _check_params(self, params: Mapping[str, Any]) -> None:
        for key in ("sigma", "low_threshold", "high_threshold"):
            v = params[key]
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0):
                raise ConfigError(f"edges.canny.{key} must be a number >= 0, got {v!r}")
        if params["low_threshold"] > params["high_threshold"]:
            raise ConfigError(
                f"edges.canny.low_threshold ({params['low_threshold']}) exceeds high_threshold "
                f"({params['high_threshold']})", fix="set low_threshold <= high_threshold")
        if params["use_quantiles"] and params["high_threshold"] > 1:
            raise ConfigError("edges.canny thresholds are quantiles (use_quantiles) and must be <= 1")
        if params["output"] not in ("binary", "soft"):
            raise ConfigError(f"edges.canny.output must be 'binary' or 'soft', got {params['output']!r}")

    def _compute(self, rgb: np.ndarray) -> np.ndarray:
        p = self.params
        gray = to_gray(rgb)
        edges = feature.canny(
            gray, sigma=float(p["sigma"]), low_threshold=float(p["low_threshold"]),
            high_threshold=float(p["high_threshold"]), use_quantiles=bool(p["use_quantiles"]),
        )
        if p["output"] == "binary":
            return edges.astype(np.float32)
        mag = canny_magnitude(gray, float(p["sigma"]))
        return np.where(edges, np.clip(mag / SOBEL_MAX_MAGNITUDE, 0.0, 1.0), 0.0).astype(np.float32)


def canny_magnitude(gray: np.ndarray, sigma: float) -> np.ndarray:
    """The gradient magnitude ``feature.canny`` thresholds (skimage 0.26: its own masked Gaussian
    ``_preprocess`` with mode 'constant', then ``ndi.sobel`` on each axis); range [0, 2 sqrt(5)].

    Uses skimage's private ``_preprocess`` so the magnitude is exactly Canny's; ``tests/test_edges.py``
    checks it against a closed form and that every soft Canny pixel clears the low threshold."""
    from skimage.feature._canny import _preprocess

    smoothed, _ = _preprocess(gray, None, sigma, "constant", 0.0)
    return np.hypot(ndi.sobel(smoothed, axis=0), ndi.sobel(smoothed, axis=1))
