from __future__ import annotations

import errno
import os
import struct
import time
import zlib

import cv2
import numpy as np
import pytest

from cleandoc import imageio
from cleandoc.imageio import (
    PageError,
    image_size,
    read_gray,
    read_page,
    remove_stale_temporaries,
    write_page,
)

RNG = np.random.default_rng(0)


def random_gray(height: int = 40, width: int = 60) -> np.ndarray:
    return RNG.integers(0, 256, (height, width), dtype=np.uint8)


def gradient(height: int = 64, width: int = 96) -> np.ndarray:
    """A smooth page, so lossy codecs stay close to it."""
    return np.tile(np.linspace(0, 1, width, dtype=np.float32), (height, 1))


def encode(extension: str, pixels: np.ndarray, params: tuple[int, ...] = ()) -> bytes:
    ok, encoded = cv2.imencode(extension, pixels, list(params))
    assert ok
    return encoded.tobytes()


def save(path, data: bytes):
    path.write_bytes(data)
    return path


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an APP1 Exif segment holding only an Orientation tag right after the SOI marker."""
    entry = struct.pack(">HHI", 0x0112, 3, 1) + struct.pack(">HH", orientation, 0)  # SHORT, left-justified
    tiff = b"MM\0*" + struct.pack(">I", 8) + struct.pack(">H", 1) + entry + struct.pack(">I", 0)
    payload = b"Exif\0\0" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def tiff_header(order: bytes, width: int, height: int, width_type: int, height_type: int) -> bytes:
    """A TIFF header and first IFD holding only ImageWidth and ImageLength."""
    fmt = "<" if order == b"II" else ">"

    def entry(tag: int, kind: int, value: int) -> bytes:
        value_bytes = struct.pack(fmt + "HH", value, 0) if kind == 3 else struct.pack(fmt + "I", value)
        return struct.pack(fmt + "HHI", tag, kind, 1) + value_bytes

    magic = b"II*\0" if order == b"II" else b"MM\0*"
    return (
        magic
        + struct.pack(fmt + "I", 8)
        + struct.pack(fmt + "H", 2)
        + entry(256, width_type, width)
        + entry(257, height_type, height)
        + struct.pack(fmt + "I", 0)
    )


# --- reading -----------------------------------------------------------------------------------------


def test_gray_png_reads_exactly(tmp_path):
    pixels = random_gray()
    page = read_page(save(tmp_path / "page.png", encode(".png", pixels)))
    assert page.dtype == np.float32 and page.shape == pixels.shape and page.flags.c_contiguous
    np.testing.assert_array_equal(page, pixels.astype(np.float32) / 255)


def test_gray_pages_keep_their_integer_type_and_colour_becomes_float(tmp_path):
    gray = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    cv2.imwrite(str(tmp_path / "g8.png"), gray)
    cv2.imwrite(str(tmp_path / "g16.png"), gray.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "rgb.png"), np.dstack([gray, gray, gray]))
    np.testing.assert_array_equal(read_gray(tmp_path / "g8.png"), gray)
    assert read_gray(tmp_path / "g16.png").dtype == np.uint16
    rgb = read_gray(tmp_path / "rgb.png")
    assert rgb.dtype == np.float32 and np.abs(rgb - gray / 255).max() < 1e-6


def test_sixteen_bit_png_scales_by_65535(tmp_path):
    pixels = np.array([[0, 32768, 65535]], dtype=np.uint16)
    page = read_page(save(tmp_path / "page.png", encode(".png", pixels)))
    np.testing.assert_allclose(page, [[0, 32768 / 65535, 1]], atol=1e-7)


@pytest.mark.parametrize("extension, shape, tolerance", [(".png", (10, 12), 1e-4), (".jpg", (16, 24), 0.02)])
def test_color_page_becomes_gray(tmp_path, extension, shape, tolerance):
    bgr = np.zeros((*shape, 3), dtype=np.uint8)
    bgr[:] = (30, 200, 10)
    page = read_page(save(tmp_path / f"page{extension}", encode(extension, bgr)))
    expected = (0.299 * 10 + 0.587 * 200 + 0.114 * 30) / 255
    assert page.shape == shape
    np.testing.assert_allclose(page, expected, atol=tolerance)


def test_alpha_composites_onto_white(tmp_path):
    bgra = np.zeros((4, 6, 4), dtype=np.uint8)
    bgra[:, :, :3] = (30, 200, 10)
    bgra[:2, :, 3] = 0
    bgra[2:, :, 3] = 255
    page = read_page(save(tmp_path / "page.png", encode(".png", bgra)))
    opaque_gray = (0.299 * 10 + 0.587 * 200 + 0.114 * 30) / 255
    np.testing.assert_allclose(page[:2], 1.0)
    np.testing.assert_allclose(page[2:], opaque_gray, atol=1e-4)


@pytest.mark.parametrize(
    ("name", "dtype", "params"),
    [
        ("page.bmp", np.uint8, ()),
        ("page.tif", np.uint8, ()),
        ("page.tiff", np.uint16, ()),
        ("page.webp", np.uint8, (cv2.IMWRITE_WEBP_QUALITY, 101)),
        ("PAGE.PNG", np.uint8, ()),
    ],
)
def test_lossless_formats_read_exactly(tmp_path, name, dtype, params):
    scale = 65535 if dtype == np.uint16 else 255
    pixels = (random_gray().astype(np.int64) * scale // 255).astype(dtype)
    extension = os.path.splitext(name)[1].lower()
    page = read_page(save(tmp_path / name, encode(extension, pixels, params)))
    np.testing.assert_allclose(page, pixels.astype(np.float32) / scale, atol=1e-6)


def test_exif_orientation_rotates_jpeg(tmp_path):
    jpeg = with_exif_orientation(encode(".jpg", random_gray(30, 50)), orientation=6)
    assert image_size(jpeg) == ("JPEG", 50, 30)
    assert read_page(save(tmp_path / "page.jpg", jpeg)).shape == (50, 30)


# --- image_size --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extension", "pixels", "params", "fmt"),
    [
        (".png", random_gray(37, 53), (), "PNG"),
        (".jpg", random_gray(37, 53), (), "JPEG"),
        (".bmp", random_gray(37, 53), (), "BMP"),
        (".tif", random_gray(37, 53), (), "TIFF"),
        (".webp", random_gray(37, 53), (cv2.IMWRITE_WEBP_QUALITY, 101), "WebP"),  # VP8L
        (".webp", random_gray(37, 53), (cv2.IMWRITE_WEBP_QUALITY, 80), "WebP"),  # VP8
        (".webp", np.dstack([random_gray(37, 53)] * 4), (cv2.IMWRITE_WEBP_QUALITY, 80), "WebP"),  # VP8X
    ],
)
def test_image_size_matches_encoded_size(extension, pixels, params, fmt):
    assert image_size(encode(extension, pixels, params)) == (fmt, 53, 37)


def test_webp_variants_are_all_covered():
    chunks = {
        encode(".webp", random_gray(), (cv2.IMWRITE_WEBP_QUALITY, 101))[12:16],
        encode(".webp", random_gray(), (cv2.IMWRITE_WEBP_QUALITY, 80))[12:16],
        encode(".webp", np.dstack([random_gray()] * 4), (cv2.IMWRITE_WEBP_QUALITY, 80))[12:16],
    }
    assert chunks == {b"VP8L", b"VP8 ", b"VP8X"}


@pytest.mark.parametrize("order", [b"II", b"MM"])
@pytest.mark.parametrize(("width_type", "height_type"), [(3, 3), (4, 4), (3, 4)])
def test_tiff_size_in_both_byte_orders_and_types(order, width_type, height_type):
    assert image_size(tiff_header(order, 1234, 567, width_type, height_type)) == ("TIFF", 1234, 567)


def test_image_size_refuses_unknown_and_truncated_headers():
    with pytest.raises(PageError, match="not an image"):
        image_size(b"hello world, not an image")
    with pytest.raises(PageError, match="truncated or corrupt PNG header"):
        image_size(encode(".png", random_gray())[:20])
    with pytest.raises(PageError, match="truncated or corrupt JPEG header"):
        image_size(encode(".jpg", random_gray())[:40])
    with pytest.raises(PageError, match="truncated or corrupt TIFF header"):
        image_size(tiff_header(b"MM", 10, 10, 3, 3)[:20])


# --- refusing bad input ------------------------------------------------------------------------------


def test_huge_header_is_refused_before_decoding(tmp_path):
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    path = save(tmp_path / "bomb.png", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr))
    start = time.perf_counter()
    with pytest.raises(PageError, match="limit") as caught:
        read_page(path)
    assert time.perf_counter() - start < 0.5
    assert str(caught.value) == "image is 100000x100000 (10000 MP), over the 900 MP limit"


def test_max_pixels_is_configurable(tmp_path):
    path = save(tmp_path / "page.png", encode(".png", random_gray(40, 60)))
    with pytest.raises(PageError, match="limit"):
        read_page(path, max_pixels=40 * 60 - 1)
    assert read_page(path, max_pixels=40 * 60).shape == (40, 60)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.png", b"", "empty file"),
        ("text.png", b"this is just text\n", "not an image (unrecognised content)"),
    ],
)
def test_bad_content_is_refused(tmp_path, name, content, message):
    with pytest.raises(PageError) as caught:
        read_page(save(tmp_path / name, content))
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("extension", "fmt"),
    [(".png", "PNG"), (".jpg", "JPEG"), (".tif", "TIFF"), (".webp", "WebP"), (".bmp", "BMP")],
)
def test_truncated_file_is_refused_silently(tmp_path, capfd, extension, fmt):
    data = encode(extension, random_gray(80, 120))
    path = save(tmp_path / f"cut{extension}", data[: int(len(data) * 0.6)])
    with pytest.raises(PageError, match=f"truncated or corrupt {fmt}"):
        read_page(path)
    assert capfd.readouterr() == ("", "")


def test_tiff_missing_its_pixel_data_is_refused_silently(tmp_path, capfd):
    """OpenCV writes the IFD last, so plain truncation fails in the header; cut the strips out instead so the
    header parses and libtiff itself fails."""
    data = encode(".tif", random_gray(80, 120))
    (ifd,) = struct.unpack_from("<I", data, 4)
    cut = data[:4] + struct.pack("<I", 16) + data[8:16] + data[ifd:]
    with pytest.raises(PageError, match="^truncated or corrupt TIFF$"):
        read_page(save(tmp_path / "cut.tif", cut))
    assert capfd.readouterr() == ("", "")


def test_png_with_bad_crc_is_refused_silently(tmp_path, capfd):
    data = bytearray(encode(".png", random_gray()))
    data[data.find(b"IDAT") + 20] ^= 0xFF
    with pytest.raises(PageError, match="truncated or corrupt PNG"):
        read_page(save(tmp_path / "flipped.png", bytes(data)))
    assert capfd.readouterr() == ("", "")


def test_a_file_without_read_permission_is_refused(tmp_path, monkeypatch):
    path = save(tmp_path / "locked.png", b"whatever")

    def denied(*args, **kwargs):  # what open() does for a user without permission (root can read anything)
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(imageio, "open", denied, raising=False)
    with pytest.raises(PageError, match="^cannot read: Permission denied$"):
        read_page(path)


def test_unreadable_paths_are_refused(tmp_path):
    with pytest.raises(PageError, match="^is a directory$"):
        read_page(tmp_path)
    with pytest.raises(PageError, match="^cannot read: No such file or directory$"):
        read_page(tmp_path / "missing.png")


# --- writing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "tolerance"), [("out.png", 0.5 / 255), ("out.tif", 0.5 / 255), ("out.jpg", 0.03)])
def test_write_then_read_round_trip(tmp_path, name, tolerance):
    page = gradient()
    write_page(tmp_path / name, page)
    np.testing.assert_allclose(read_page(tmp_path / name), page, atol=tolerance)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_write_rounds_and_clips(tmp_path):
    write_page(tmp_path / "out.png", np.array([[-0.5, 0.0, 0.5, 1.0, 1.5, 100.4 / 255]], dtype=np.float32))
    written = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(written, [[0, 0, 128, 255, 255, 100]])


def test_unknown_write_extension_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError):
        write_page(tmp_path / "out.gif", gradient())
    assert set(imageio.WRITE_FORMATS.values()) == {".png", ".tif", ".jpg"}


def test_failed_replace_leaves_original_and_no_temporary(tmp_path, monkeypatch):
    target = save(tmp_path / "out.png", b"original")

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(PageError, match="^cannot write: No space left on device$"):
        write_page(target, gradient())
    assert target.read_bytes() == b"original"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_unwritable_folder_is_refused(tmp_path, monkeypatch):
    def refusing_open(path, flags, mode=0o777):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(PageError, match="^cannot write: Permission denied$"):
        write_page(tmp_path / "out.png", gradient())
    assert list(tmp_path.iterdir()) == []


def test_temporary_name_is_hidden_beside_the_target(tmp_path):
    temporary = imageio.temporary_name(tmp_path / "out.png")
    assert temporary.parent == tmp_path
    assert temporary.name.startswith(".out.png.")
    assert f".{os.getpid()}." in temporary.name
    assert temporary.name.endswith(".cleandoc-tmp")


def test_remove_stale_temporaries_keeps_live_writers(tmp_path):
    dead_pid = 2**22 + 12345
    with pytest.raises(ProcessLookupError):
        os.kill(dead_pid, 0)
    stale = tmp_path / f".a.png.{dead_pid}.00ff.cleandoc-tmp"
    live = imageio.temporary_name(tmp_path / "b.png")
    unrelated = tmp_path / "c.png"
    for path in (stale, live, unrelated):
        path.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, unrelated.name])
