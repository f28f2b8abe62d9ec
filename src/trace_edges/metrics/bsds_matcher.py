"""pyEdgeEval's BSDS pixel-correspondence matcher (``matchEdgeMaps``), made deterministic.

The matcher draws a random outlier sample from a process-global RNG; :func:`reseed_matcher` resets
that RNG to :data:`MATCHER_SEED` before every call, so a call is a pure function of its inputs.
:func:`matcher_kofn` exposes the matcher's own ``kOfN`` so :mod:`trace_edges.metrics.fast_match`
can rebuild the same outlier sample. Both :mod:`trace_edges.metrics.edges` and ``fast_match``
import from here (a leaf module: no import cycle).
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import io
import sys
import warnings
from typing import Callable

import numpy as np

#: nonzero constant seed for the BSDS matcher's RNG (0 would mean "seed from the clock")
MATCHER_SEED = 1


@functools.lru_cache(maxsize=1)
def import_pyedgeeval() -> None:
    """Import pyEdgeEval once, swallowing the line it prints to stdout when pymatreader (needed
    only for BSDS ``.mat`` files) is absent, and its own SciPy deprecation warning."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        importlib.import_module("pyEdgeEval")
        importlib.import_module("pyEdgeEval._lib")
        importlib.import_module("pyEdgeEval.common.binary_label")


@functools.lru_cache(maxsize=1)
def _matcher_reseed() -> Callable[[], None] | None:
    """A function reseeding the matcher's global RNG, or None when the symbols are not found."""
    import_pyedgeeval()

    module = sys.modules.get("pyEdgeEval._lib.correspond_pixels")
    path = getattr(module, "__file__", None)
    try:
        lib = ctypes.CDLL(path)
        rng = ctypes.c_void_p.in_dll(lib, "_ZN6Random4randE")  # Random Random::rand
        reseed = lib._ZN6Random6reseedEm  # void Random::reseed(u_int64_t)
    except (OSError, AttributeError, TypeError, ValueError):
        warnings.warn("cannot seed pyEdgeEval's BSDS matcher (symbols not found): ODS/OIS will vary "
                      "by a few matched pixels between runs", RuntimeWarning, stacklevel=2)
        return None
    reseed.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
    reseed.restype = None
    address = ctypes.addressof(rng)
    return lambda: reseed(address, MATCHER_SEED)


@functools.lru_cache(maxsize=1)
def matcher_kofn() -> Callable[[int, int, int], None] | None:
    """The BSDS matcher's own ``kOfN(k, n, int* values)`` (k sorted distinct integers of [0, n) from
    its global RNG), callable with a raw address; None when the symbol is not found."""
    if _matcher_reseed() is None:
        return None
    path = getattr(sys.modules.get("pyEdgeEval._lib.correspond_pixels"), "__file__", None)
    try:
        fn = ctypes.CDLL(path)._Z4kOfNiiPi  # void kOfN(int, int, int*)
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    fn.restype = None
    return fn


def reseed_matcher() -> None:
    """Reseed the BSDS matcher's RNG with :data:`MATCHER_SEED`, as before every reference call."""
    reseed = _matcher_reseed()
    if reseed is None:
        raise RuntimeError("pyEdgeEval's BSDS matcher RNG cannot be seeded (symbols not found)")
    reseed()


def matcher_is_seeded() -> bool:
    return _matcher_reseed() is not None


def correspond_pixels(pred: np.ndarray, gt: np.ndarray, max_dist: float):
    """pyEdgeEval's ``correspond_pixels`` after reseeding its RNG (a pure function of its inputs)."""
    from pyEdgeEval._lib import correspond_pixels as _cp

    reseed = _matcher_reseed()
    if reseed is not None:
        reseed()
    return _cp(pred, gt, max_dist=max_dist)


__all__ = ["MATCHER_SEED", "correspond_pixels", "import_pyedgeeval", "matcher_is_seeded", "matcher_kofn",
           "reseed_matcher"]
