"""Read a page image into a float32 array and write one back atomically.

Reading is defensive because input folders hold whatever a scanner or a user left there: the image size is
taken from the header and checked against a pixel limit before anything is decoded (a small file can claim
a huge image), and every expected failure becomes a `PageError` with a one-line reason. Writing goes through
a temporary file and `os.replace`, so an interrupted run never leaves a half-written page under a real name.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import shutil
import stat
import struct
import zlib
from pathlib import Path

# OpenCV reads these once, when it is loaded. Our own header check is the pixel limit that should apply, and
# a corrupt file should not print OpenCV's C++ log lines; a value the user set wins.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(2**40))
os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from .options import DEFAULT_MAX_PIXELS  # noqa: E402

if os.environ["OPENCV_LOG_LEVEL"] == "SILENT":  # cv2 may have been loaded before the variable was set
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

READ_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})
WRITE_FORMATS: dict[str, str] = {"png": ".png", "tif": ".tif", "jpg": ".jpg"}

WRITE_EXTENSIONS = frozenset({".png", ".tif", ".tiff", ".jpg", ".jpeg"})
BINARY_EXTENSIONS = frozenset({".png", ".tif", ".tiff"})  # what a 1-bit page can be written as
JPEG_QUALITY = 95
_TEMP_SUFFIX = ".cleandoc-tmp"
_TEMPORARY_NAME = re.compile(r"\.(?P<pid>[1-9][0-9]*)\.[0-9a-f]+" + re.escape(_TEMP_SUFFIX) + "$")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers carry the image size; C4, C8 and CC share the range but are other segments.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers with no length field after them.
_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})


class PageError(Exception):
    """An expected failure about one file; str(e) is a one-line reason without the file name."""


def image_size(data: bytes) -> tuple[str, int, int]:
    """(format name, width, height) read from the header bytes alone, so nothing is decoded to learn the size."""
    if data.startswith(_PNG_SIGNATURE):
        fmt, parse = "PNG", _png_size
    elif data.startswith(b"\xff\xd8"):
        fmt, parse = "JPEG", _jpeg_size
    elif data.startswith(b"BM"):
        fmt, parse = "BMP", _bmp_size
    elif data.startswith((b"II*\0", b"MM\0*")):
        fmt, parse = "TIFF", _tiff_size
    elif data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        fmt, parse = "WebP", _webp_size
    else:
        raise PageError("not an image (unrecognised content)")
    try:
        width, height = parse(data)
    except (struct.error, IndexError, KeyError, ValueError):
        raise PageError(f"truncated or corrupt {fmt} header") from None
    if width <= 0 or height <= 0:
        raise PageError(f"truncated or corrupt {fmt} header")
    return fmt, width, height


def _png_size(data: bytes) -> tuple[int, int]:
    length, kind, width, height = struct.unpack_from(">I4sII", data, 8)
    if kind != b"IHDR" or length != 13:
        raise ValueError("IHDR is not the first chunk")
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int]:
    pos = 2
    while True:
        if data[pos] != 0xFF:
            raise ValueError("expected a marker")
        while data[pos] == 0xFF:  # any number of 0xFF fill bytes may precede a marker
            pos += 1
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE_MARKERS:
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            raise ValueError("no frame header")
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2:
            raise ValueError("bad segment length")
        if marker in _JPEG_SOF_MARKERS:
            height, width = struct.unpack_from(">HH", data, pos + 3)
            return width, height
        pos += length


def _bmp_size(data: bytes) -> tuple[int, int]:
    (header_size,) = struct.unpack_from("<I", data, 14)
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit unsigned sizes
        return struct.unpack_from("<HH", data, 18)
    width, height = struct.unpack_from("<ii", data, 18)
    return width, abs(height)  # a negative height means rows are stored top-down


def _tiff_size(data: bytes) -> tuple[int, int]:
    order = "<" if data.startswith(b"II") else ">"
    (ifd,) = struct.unpack_from(order + "I", data, 4)
    (count,) = struct.unpack_from(order + "H", data, ifd)
    size = {}
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag, kind = struct.unpack_from(order + "HH", data, entry)
        if tag in (256, 257):  # ImageWidth, ImageLength
            value_format = {3: "H", 4: "I"}[kind]  # SHORT or LONG; anything else is a KeyError
            size[tag] = struct.unpack_from(order + value_format, data, entry + 8)[0]
    return size[256], size[257]


def _tiff_page_count(data: bytes, limit: int = 1000) -> int:
    """How many images (IFDs) a TIFF chains together; a broken or looping chain ends the count."""
    order = "<" if data.startswith(b"II") else ">"
    (ifd,) = struct.unpack_from(order + "I", data, 4)
    seen: set[int] = set()
    while ifd and ifd not in seen and len(seen) < limit:
        seen.add(ifd)
        try:
            (count,) = struct.unpack_from(order + "H", data, ifd)
            (ifd,) = struct.unpack_from(order + "I", data, ifd + 2 + 12 * count)
        except struct.error:
            break
    return len(seen)


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: a key frame header after the 3-byte frame tag
        if data[23:26] != b"\x9d\x01\x2a":
            raise ValueError("bad VP8 start code")
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: 14-bit width-1 and height-1 after the signature byte
        if data[20] != 0x2F:
            raise ValueError("bad VP8L signature")
        (bits,) = struct.unpack_from("<I", data, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas width-1 and height-1
        (width,) = struct.unpack_from("<I", data, 24)
        (height,) = struct.unpack_from("<I", data, 27)
        return (width & 0xFFFFFF) + 1, (height & 0xFFFFFF) + 1
    raise ValueError("unknown WebP chunk")


def _check_png_chunks(data: bytes) -> None:
    """Refuse a PNG whose chunks are cut short or fail their CRC before libpng sees it: libpng reports
    those by printing to stderr, which cannot be silenced from here."""
    view = memoryview(data)
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 12 > len(data):
            raise PageError("truncated or corrupt PNG")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data):
            raise PageError("truncated or corrupt PNG")
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(view[pos + 4 : end - 4]) != crc:
            raise PageError("truncated or corrupt PNG")
        if kind == b"IEND":
            return
        pos = end


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f}".removesuffix(".0")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def read_page(path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as a 2-D float32 array in [0, 1] (H x W), 1 = white paper."""
    return to_unit_float(read_gray(path, max_pixels))


def read_gray(path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as one gray plane (H x W), 1 = white paper, in the cheapest exact type: 8- and
    16-bit gray pages stay uint8 or uint16 (a 20000 x 20000 scan stays 400 MB instead of 1.6 GB as floats);
    colour, alpha and float pages become float32 in [0, 1]."""
    return read_image(path, max_pixels)[0]


def read_image(path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, tuple[float, float] | None]:
    """`read_gray`'s page and the resolution the file records (dpi, x and y; None when it records none)."""
    try:
        # Opened without blocking and checked: a FIFO or a device under an image's name would hang or never end.
        with open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NONBLOCK)) as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise PageError("not a regular file")
            data = file.read()
    except IsADirectoryError:
        raise PageError("is a directory") from None
    except OSError as exc:
        raise PageError(f"cannot read: {_reason(exc)}") from exc
    if not data:
        raise PageError("empty file")

    fmt, width, height = image_size(data)
    if width * height > max_pixels:
        raise PageError(
            f"image is {width}x{height} ({_megapixels(width * height)} MP), "
            f"over the {_megapixels(max_pixels)} MP limit"
        )
    if fmt == "PNG":
        _check_png_chunks(data)
    if fmt == "TIFF" and (pages := _tiff_page_count(data)) > 1:
        raise PageError(f"multi-page TIFF ({pages} pages) under a name that does not end in .tif or .tiff: "
                        "rename it to clean it as a document")

    # Grayscale for JPEG lets OpenCV apply the EXIF orientation and convert CMYK; everything else is read
    # unchanged so 16-bit samples and alpha survive.
    flags = cv2.IMREAD_GRAYSCALE if fmt == "JPEG" else cv2.IMREAD_UNCHANGED
    try:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        pixels = None
    if pixels is None:
        raise PageError(f"truncated or corrupt {fmt}")
    decoded = (pixels.shape[1], pixels.shape[0])
    if decoded != (width, height) and not (fmt == "JPEG" and decoded == (height, width)):
        raise PageError(f"truncated or corrupt {fmt}")
    if pixels.dtype not in (np.uint8, np.uint16) and pixels.dtype.kind != "f":
        raise PageError(f"unsupported {fmt} sample type {pixels.dtype}")
    dpi = image_dpi(data)
    if dpi and decoded != (width, height):  # turned by its EXIF orientation
        dpi = dpi[::-1]
    return to_gray(pixels), dpi


def to_gray(pixels: np.ndarray, order: str = "bgr") -> np.ndarray:
    """One gray plane (H x W) from page samples: a 2-D or one-channel page as it is (uint8 and uint16 stay
    integers); colour pages, whose three channels come in `order` ("bgr" as OpenCV reads them, "rgb" as Pillow
    does), by luminance, with transparent areas (a fourth channel) blended over white paper, as float32 in
    [0, 1]."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim == 2:
        return pixels if pixels.dtype.kind == "u" else to_unit_float(pixels)
    if pixels.ndim != 3:
        raise PageError(f"unsupported page shape {pixels.shape}")
    if order == "rgb" and pixels.shape[2] in (3, 4):
        pixels = pixels[..., [2, 1, 0, 3][:pixels.shape[2]]]
    return np.ascontiguousarray(_to_gray(to_unit_float(pixels)), dtype=np.float32)


def to_unit_float(pixels: np.ndarray) -> np.ndarray:
    """Samples as float32 in [0, 1]: 8- and 16-bit integers scaled by their full range, floats clipped."""
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / 255
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float32) / 65535
    return np.clip(pixels.astype(np.float32, copy=False), 0, 1)


def to_uint8(page: np.ndarray) -> np.ndarray:
    """A float page in [0, 1] as 8-bit samples, rounded to nearest and clipped."""
    return np.clip(np.rint(page * 255), 0, 255).astype(np.uint8)


def as_uint8(page: np.ndarray) -> np.ndarray:
    """Any gray page (8- or 16-bit, float) as 8-bit samples; an 8-bit page itself, not a copy."""
    return page if page.dtype == np.uint8 else to_uint8(to_unit_float(page))


def _to_gray(page: np.ndarray) -> np.ndarray:
    """Collapse channels to one gray plane; transparent areas become white paper."""
    if page.ndim == 2:
        return page
    channels = page.shape[2]
    if channels == 1:
        return page[..., 0]
    if channels == 3:
        return cv2.cvtColor(page, cv2.COLOR_BGR2GRAY)
    if channels == 2:
        gray = page[..., 0]
    elif channels == 4:
        gray = cv2.cvtColor(page, cv2.COLOR_BGRA2GRAY)
    else:
        raise PageError(f"unsupported channel count {channels}")
    alpha = page[..., -1]
    return gray * alpha + (1 - alpha)


def write_page(path, page: np.ndarray, binary: bool = False, dpi: tuple[float, float] | None = None,
               jpeg_quality: int = JPEG_QUALITY) -> None:
    """Write a page (uint8, or float in [0, 1]) as 8-bit grayscale, in the format named by the path's extension;
    with `binary`, as 1-bit black and white (paper where the page is at least half white): a 1-bit PNG, or a TIFF
    with CCITT Group 4 compression, the fax coding that OCR engines and PDF writers take as it is. `dpi` is
    recorded in the file (PNG pHYs, TIFF resolution, JPEG density), as OCR engines read it.

    The page is encoded in memory and lands under its real name only by an atomic rename, so a reader (or a
    resumed run) never finds a partial file there.
    """
    path = Path(path)
    encoded = encode_page(page, path.suffix.lower(), binary=binary, dpi=dpi, jpeg_quality=jpeg_quality)
    try:
        write_atomically(path, encoded)
    except OSError as exc:
        raise PageError(f"cannot write: {_reason(exc)}") from exc


def encode_page(page: np.ndarray, extension: str, binary: bool = False, dpi: tuple[float, float] | None = None,
                jpeg_quality: int = JPEG_QUALITY) -> bytes:
    """A page's file in the format of `extension` (see `write_page`), in memory."""
    if extension not in WRITE_EXTENSIONS:
        raise ValueError(f"cannot write {extension!r} files; use one of {sorted(WRITE_EXTENSIONS)}")
    pixels = page if page.dtype == np.uint8 else to_uint8(page)
    if binary:
        return _encode_binary(pixels, extension, dpi)
    if extension in (".tif", ".tiff"):  # Pillow records the resolution, where OpenCV's TIFF writer may not
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="TIFF", compression="tiff_lzw", **({"dpi": dpi} if dpi else {}))
        return buffer.getvalue()
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if extension in (".jpg", ".jpeg") else []
    try:
        ok, encoded = cv2.imencode(extension, pixels, params)
    except cv2.error:
        ok = False
    if not ok:
        raise PageError(f"cannot write: {extension} encoding failed")
    data = encoded.tobytes()
    if dpi and extension == ".png":
        data = _with_png_dpi(data, dpi)
    elif dpi and extension in (".jpg", ".jpeg"):
        data = _with_jpeg_dpi(data, dpi)
    return data


def _with_png_dpi(data: bytes, dpi: tuple[float, float]) -> bytes:
    """The PNG with a pHYs chunk (pixels per metre) right after its header chunk."""
    payload = struct.pack(">IIB", round(dpi[0] / 0.0254), round(dpi[1] / 0.0254), 1)
    chunk = struct.pack(">I", len(payload)) + b"pHYs" + payload + struct.pack(">I", zlib.crc32(b"pHYs" + payload))
    header_end = len(_PNG_SIGNATURE) + 8 + 13 + 4  # signature, IHDR length and type, 13 bytes, CRC
    return data[:header_end] + chunk + data[header_end:]


def _with_jpeg_dpi(data: bytes, dpi: tuple[float, float]) -> bytes:
    """The JPEG with its JFIF header's density set to `dpi` (dots per inch)."""
    if data[2:4] != b"\xff\xe0" or data[6:11] != b"JFIF\0":
        return data
    density = struct.pack(">BHH", 1, min(round(dpi[0]), 65535), min(round(dpi[1]), 65535))
    return data[:13] + density + data[18:]


def _encode_binary(pixels: np.ndarray, extension: str, dpi: tuple[float, float] | None) -> bytes:
    if extension not in BINARY_EXTENSIONS:
        raise ValueError(f"cannot write 1-bit {extension} files; use one of {sorted(BINARY_EXTENSIONS)}")
    image = Image.fromarray(pixels >= 128)
    buffer = io.BytesIO()
    options = {"dpi": dpi} if dpi else {}
    if extension == ".png":
        image.save(buffer, format="PNG", optimize=True, **options)
    else:
        image.save(buffer, format="TIFF", compression="group4", **options)
    return buffer.getvalue()


def image_dpi(data: bytes) -> tuple[float, float] | None:
    """The resolution an image file records (PNG pHYs, JPEG JFIF or EXIF, TIFF tags), read from its header, or
    None."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            dpi = image.info.get("dpi")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    try:
        x, y = float(dpi[0]), float(dpi[1])
    except (TypeError, ValueError, IndexError, ZeroDivisionError):
        return None
    if not (10 <= x <= 100_000 and 10 <= y <= 100_000):  # no unit, or no real resolution
        return None
    return round(x, 1), round(y, 1)  # PNG stores pixels per metre: 300 dpi reads back as 299.9994


def write_atomically(path: Path, data: bytes | memoryview) -> None:
    """Write bytes under a temporary name in the same folder, fsync, then rename onto `path`: whoever
    looks (a reader, a resumed run, a crash) finds the old file or the complete new one, never a torn one."""
    temporary = temporary_name(path)
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 so the umask decides
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def temporary_name(path) -> Path:
    """The temporary file write_page uses: in the same folder (so the rename stays on one filesystem), hidden,
    and naming the writer's pid so a later run can tell an abandoned one from one still being written."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{_TEMP_SUFFIX}")


def remove_stale_temporaries(folder) -> int:
    """Delete the temporary files in folder (not its subfolders), and the temporary folders a document's pages
    wait in, left by writers that are no longer running, e.g. after a killed run. Returns how many were removed."""
    removed = 0
    for entry in Path(folder).iterdir():
        match = _TEMPORARY_NAME.search(entry.name)
        if match is None or _process_alive(int(match["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):  # another cleaner got there first
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists but belongs to another user
        pass
    return True
