"""Image loading survives what real COCO contains and names the file when it cannot."""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from trace_edges.data.images import load_rgb, read_png, write_png
from trace_edges.errors import DataError


def _save(tmp_path, name, im, **kw):
    p = tmp_path / name
    im.save(p, **kw)
    return p


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)


def test_rgb_jpeg_real_coco(coco_mini):
    arr = load_rgb(coco_mini / "images" / "000000397133.jpg")
    assert arr.shape == (427, 640, 3) and arr.dtype == np.uint8


def test_grayscale_becomes_three_equal_channels(tmp_path):
    g = np.arange(600, dtype=np.uint8).reshape(20, 30)
    arr = load_rgb(_save(tmp_path, "g.png", Image.fromarray(g)))
    assert arr.shape == (20, 30, 3)
    assert (arr[..., 0] == g).all() and (arr[..., 1] == g).all() and (arr[..., 2] == g).all()


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    g = np.full((4, 5), 65535, dtype=np.uint16)
    g[0, 0] = 0
    arr = load_rgb(_save(tmp_path, "g16.png", Image.fromarray(g)))
    assert arr[1, 1, 0] == 255 and arr[0, 0, 0] == 0


def test_cmyk_jpeg_converts_to_rgb(tmp_path, rgb):
    cmyk = Image.fromarray(rgb).convert("CMYK")
    p = _save(tmp_path, "c.jpg", cmyk, quality=95)
    with Image.open(p) as im:
        assert im.mode == "CMYK"
    arr = load_rgb(p)
    assert arr.shape == (20, 30, 3)
    expected = np.asarray(Image.open(p).convert("RGB"))
    assert np.array_equal(arr, expected)


def test_palette_with_transparency(tmp_path, rgb):
    pal = Image.fromarray(rgb).convert("P")
    pal.info["transparency"] = 0
    p = _save(tmp_path, "p.png", pal, transparency=0)
    arr = load_rgb(p)
    assert arr.shape == (20, 30, 3) and arr.dtype == np.uint8


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((10, 20, 3), dtype=np.uint8)
    a[:, :5] = 255  # white stripe on the left
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW when displayed
    p = tmp_path / "rot.jpg"
    im.save(p, exif=exif, quality=100)
    arr = load_rgb(p)
    assert arr.shape == (20, 10, 3)  # transposed
    assert arr[:5].mean() > 200 and arr[-5:].mean() < 50  # stripe now on top
    assert load_rgb(p, exif_transpose=False).shape == (10, 20, 3)


def test_truncated_jpeg_names_the_file(tmp_path, coco_mini):
    data = (coco_mini / "images" / "000000397133.jpg").read_bytes()
    p = tmp_path / "trunc.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as ei:
        load_rgb(p)
    assert "trunc.jpg" in str(ei.value) and "fix:" in str(ei.value)


def test_corrupt_bytes_and_missing_file(tmp_path):
    p = tmp_path / "junk.jpg"
    p.write_bytes(b"not an image at all" * 10)
    with pytest.raises(DataError, match="junk.jpg"):
        load_rgb(p)
    with pytest.raises(DataError, match="not found"):
        load_rgb(tmp_path / "missing.jpg")


def test_write_png_roundtrip_and_atomic(tmp_path):
    a16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    write_png(tmp_path / "a.png", a16)
    assert np.array_equal(read_png(tmp_path / "a.png"), a16)
    with pytest.raises(TypeError):
        write_png(tmp_path / "b.png", np.zeros((3, 4), dtype=np.float32))
    assert not (tmp_path / "b.png").exists()
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]
