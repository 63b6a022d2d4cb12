import io

import numpy as np
import pytest
from PIL import Image
from strata.errors import InputError, LimitExceededError, UnsupportedMediaError
from strata.frontend.image import pad, read_image, unpad, write_image

from tests.conftest import png_bytes, synthetic_image


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_reads_formats(fmt):
    img = synthetic_image(20, 30)
    out = read_image(png_bytes(img, fmt, **({"quality": 95} if fmt != "PNG" else {})))
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    if fmt == "PNG":
        np.testing.assert_array_equal(out, img)


def test_modes_become_rgb():
    gray = Image.fromarray(np.arange(200, dtype=np.uint8).reshape(10, 20))
    buf = io.BytesIO()
    gray.save(buf, format="PNG")
    out = read_image(buf.getvalue())
    assert out.shape == (10, 20, 3) and (out[..., 0] == out[..., 2]).all()
    rgba = np.dstack([synthetic_image(8, 8), np.full((8, 8), 7, np.uint8)])
    assert read_image(png_bytes(rgba)).shape == (8, 8, 3)
    deep = Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    buf = io.BytesIO()
    deep.save(buf, format="PNG")
    out = read_image(buf.getvalue())
    assert out.shape == (8, 8, 3) and out.max() == (63 * 1000) >> 8


def test_exif_orientation_applied():
    im = Image.fromarray(synthetic_image(10, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif)
    assert read_image(buf.getvalue()).shape == (20, 10, 3)


@pytest.mark.parametrize("data", [b"", b"hello world", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b"GIF89a" + b"\0" * 40])
def test_rejects_non_images(data):
    with pytest.raises(UnsupportedMediaError):
        read_image(data)


def test_truncated_png():
    data = png_bytes(synthetic_image(64, 64))
    with pytest.raises(UnsupportedMediaError):
        read_image(data[: len(data) // 2])


def test_pixel_limit_checked_before_decoding():
    big = png_bytes(np.zeros((300, 400, 3), np.uint8))
    with pytest.raises(LimitExceededError):
        read_image(big, max_pixels=100_000)


def test_pad_unpad_round_trip():
    img = synthetic_image(13, 21)
    p = pad(img, 8)
    assert p.tensor.shape == (1, 3, 16, 24) and p.padding == (3, 3) and p.size == (13, 21)
    np.testing.assert_array_equal(unpad(p.tensor, p.size), img)
    with pytest.raises(InputError):
        pad(img.astype(np.float32), 8)
    with pytest.raises(InputError):
        pad(np.zeros((0, 4, 3), np.uint8), 8)


def test_write_image():
    img = synthetic_image(9, 11)
    np.testing.assert_array_equal(read_image(write_image(img, "png")), img)
    assert read_image(write_image(img, "webp")).shape == img.shape
    with pytest.raises(InputError):
        write_image(img, "gif")


def test_list_images(tmp_path):
    from strata.frontend.image import list_images

    with pytest.raises(InputError, match="does not exist"):
        list_images(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no images"):
        list_images(tmp_path)
    for name in ("b.PNG", "a.jpg", "c.webp"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.webp"]
