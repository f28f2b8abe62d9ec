"""Image loading that survives the real COCO.

COCO val2017 contains grayscale JPEGs, a few CMYK ones, palette PNGs elsewhere in the wild and
photographs with EXIF orientation tags. :func:`load_rgb` turns all of them into an ``H×W×3``
``uint8`` RGB array; a missing, truncated or corrupt file raises :class:`DataError` naming it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from trace_edges.errors import DataError
from trace_edges.io import atomic_path

# Never let PIL silently pad a truncated JPEG with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

_FIX = ("the file is truncated or corrupt: re-download it (paper preset: `trace-edges download-coco`), "
        "restore it with `dvc pull` / `git checkout`, or remove the image from the dataset")


def load_rgb(path: str | Path, *, exif_transpose: bool = True) -> np.ndarray:
    """Load an image as ``uint8`` RGB ``[H, W, 3]``.

    Grayscale (L, I;16, I, F), CMYK, palette (P, with or without transparency), LA/RGBA
    (alpha composited on black, i.e. dropped) all map to RGB. With ``exif_transpose`` the EXIF
    orientation tag is applied, as a viewer would.

    Note: COCO's annotations are defined on the stored pixel grid; COCO val2017 has no image
    whose EXIF orientation differs from 1, so honouring EXIF never moves an annotated pixel there.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("image not found", path=path,
                        fix="check data.root / the image list, or re-run the data stage")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()  # force full decode: truncation surfaces here
                if exif_transpose:
                    im = ImageOps.exif_transpose(im)
                rgb = _to_rgb(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image ({type(exc).__name__}: {exc})", path=path, fix=_FIX) from exc
    arr = np.asarray(rgb, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"decoded to unexpected shape {arr.shape}", path=path, fix=_FIX)
    return np.ascontiguousarray(arr)


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa"):
        return im.convert("RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        im = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8))
    # L, 1, CMYK, YCbCr, LAB, HSV
    return im.convert("RGB")


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` as stored (before EXIF rotation), without decoding pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image header ({exc})", path=path, fix=_FIX) from exc


def read_png(path: str | Path, *, what: str = "PNG") -> np.ndarray:
    """Read a PNG as stored (no mode conversion); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found", path=path,
                        fix="check the path, or rerun the stage that produces it")
    try:
        with Image.open(path) as im:
            im.load()
            return np.array(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot decode {what} ({exc})", path=path,
                        fix="the file is truncated or corrupt: restore it or rerun its stage") from exc


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write ``uint8`` (L or RGB) or ``uint16`` (I;16) arrays as PNG, atomically."""
    array = np.ascontiguousarray(array)
    if array.dtype == np.uint16 and array.ndim == 2:
        im = Image.fromarray(array)  # mode I;16
    elif array.dtype == np.uint8 and array.ndim in (2, 3):
        im = Image.fromarray(array)
    elif array.dtype == bool and array.ndim == 2:
        im = Image.fromarray(array.astype(np.uint8) * 255)
    else:
        raise TypeError(f"write_png: unsupported array {array.dtype} {array.shape}")
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG", optimize=False)
