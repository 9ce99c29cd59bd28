"""Safe decoding of untrusted image files: from uploaded bytes to a plain 8-bit RGB picture.

``load_image(data)`` takes untrusted bytes (or a path, or a binary file object) and returns a
plain 8-bit ``RGB`` ``PIL.Image.Image`` with the camera's EXIF orientation applied, or raises
:class:`InvalidImageError` with a sentence a person can act on. Nothing else escapes it.
``image_digest(data)`` is the sha256 of the encoded bytes (the app's cache key for an upload).
What the model then does with the picture lives in :mod:`vit_explain.preprocess`, which also
re-exports these names.

What ``load_image`` does with awkward input (the limits are the module constants below):

* empty file, not an image, unsupported format (PDF, HTML, SVG, HEIC, ...): refused, and the
  message names what the file seems to be and what to upload instead;
* truncated file (the upload was cut off): refused, never returned half grey (this relies on
  PIL's default ``ImageFile.LOAD_TRUNCATED_IMAGES = False``, which nothing here changes);
* more than ``MAX_PIXELS`` pixels, judged from the header before a single pixel is decoded
  (decompression bombs): refused; PIL's own bomb error or warning-as-error becomes the same
  refusal. PIL's global ``Image.MAX_IMAGE_PIXELS`` is read by PIL, never changed here;
* larger than ``DECODE_MAX_SIDE`` on its long side: JPEGs are decoded at 1/2, 1/4 or 1/8 scale
  by the JPEG decoder itself (``Image.draft``; it may stop at 3/4 of the limit, e.g. 4032 ->
  2016 px), other formats are decoded in full and then scaled down, so what comes back is at
  most ``DECODE_MAX_SIDE`` pixels on its long side;
* thinner than ``MAX_ASPECT_RATIO`` : 1 or smaller than ``MIN_SIDE`` on a side: refused. A ViT
  squeezes every picture into a square grid of patches, so a 1 x 4000 strip would become
  meaningless stripes; the message says so;
* 16-bit and 32-bit integer images are scaled from their bit depth (65535 -> 255); float images
  from [0, 1] (or [0, 255]) when their values lie there, otherwise from their own min..max, so
  nothing is clipped to white;
* CMYK is converted to RGB (through its embedded ICC profile when it has one);
* transparency (RGBA, LA, palette or colour-key transparency) is composited onto white, so
  transparent areas look as they do in a browser instead of turning black;
* animated GIF/WebP and multi-page TIFF: the first frame;
* grayscale and 1-bit images: copied into three equal channels.

RGB images keep their raw values: an embedded ICC profile (for example Display P3) is not
applied, which is how the models were trained and what transformers does.

Nothing here changes PIL's global settings (``Image.MAX_IMAGE_PIXELS``,
``ImageFile.LOAD_TRUNCATED_IMAGES``, warning filters), so many sessions can load images at once.

The returned image carries only ``image.info["source"]``: the file's format, mode,
width x height before any scaling or rotation, and its number of frames (the app shows it).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageFile

# Importing the plugins registers them with PIL without loading every other format.
from PIL import (  # noqa: F401
    BmpImagePlugin,
    GifImagePlugin,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

try:  # Pillow >= 11.2 with libavif
    from PIL import AvifImagePlugin  # noqa: F401
except ImportError:  # pragma: no cover - depends on the Pillow build
    pass

__all__ = [
    "InvalidImageError",
    "load_image",
    "image_digest",
    "to_rgb",
    "MAX_BYTES",
    "MAX_PIXELS",
    "DECODE_MAX_SIDE",
    "MIN_SIDE",
    "MAX_ASPECT_RATIO",
    "ACCEPTED_FORMATS",
]

# --------------------------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------------------------

#: Largest encoded file accepted (64 MiB). A 60-megapixel JPEG at high quality is about 30 MB.
MAX_BYTES = 64 * 1024 * 1024

#: Largest image accepted, in pixels (width x height read from the file header, before decoding).
#: 64 megapixels covers the photos of nearly every camera and phone in their default modes, and
#: stays under PIL's own warning threshold (about 89.5 megapixels), so PIL's guard never has the
#: last word on an image this module would accept.
MAX_PIXELS = 64_000_000

#: Working size: a decoded image is at most this many pixels on its long side. Every ViT input
#: size the app offers is far smaller, and it bounds the memory of everything downstream.
DECODE_MAX_SIDE = 2048

#: Smallest accepted side, in pixels.
MIN_SIDE = 8

#: Longest accepted ratio of long side to short side (panoramas up to 10:1 pass).
MAX_ASPECT_RATIO = 10.0

#: The file formats PIL may try, in order. Other PIL plugins (EPS through Ghostscript, PSD, ICO,
#: ...) are never given untrusted bytes.
ACCEPTED_FORMATS = tuple(
    f for f in ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "AVIF") if f in Image.OPEN
)

_DRAFT_FRACTION = 0.75  # JPEG reduced decoding may stop at 3/4 of max_side (see load_image)
_WHITE = (255, 255, 255)
_HIGH_BIT_DEPTH_MODES = {"I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
_FORMAT_NAMES = "JPEG, PNG, WebP, GIF, TIFF or BMP"


class InvalidImageError(ValueError):
    """The upload cannot be used as an image; the message says why and what to do instead."""


# --------------------------------------------------------------------------------------------
# bytes -> RGB image
# --------------------------------------------------------------------------------------------


def image_digest(data: bytes | bytearray | memoryview) -> str:
    """The sha256 of the encoded bytes, as 64 hex digits (the app's cache key for an upload)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"image_digest expects the file's bytes, got {type(data).__name__}")
    return hashlib.sha256(data).hexdigest()


def load_image(
    data: bytes | bytearray | memoryview | str | os.PathLike | BinaryIO,
    *,
    max_side: int = DECODE_MAX_SIDE,
) -> Image.Image:
    """Decode an untrusted image file into a safe 8-bit RGB picture.

    ``data`` is the file's bytes (``bytes``, ``bytearray``, ``memoryview``), a path (``str`` or
    ``os.PathLike``), or an open binary file object such as Streamlit's ``UploadedFile``.
    The result is mode ``"RGB"``, EXIF-rotated, and at most ``max_side`` pixels on its long side.
    Raises :class:`InvalidImageError` (a ``ValueError``) for anything that is not a usable image.
    """
    if max_side < MIN_SIDE:
        raise ValueError(f"max_side must be at least MIN_SIDE={MIN_SIDE}, got {max_side}")
    raw = _read_bytes(data)
    if len(raw) == 0:
        raise InvalidImageError(
            "The file is empty (0 bytes). Please choose the image again; the upload may have failed."
        )
    if len(raw) > MAX_BYTES:
        raise InvalidImageError(
            f"The file is {_human_bytes(len(raw))}; the limit is {_human_bytes(MAX_BYTES)}. "
            "Please upload a smaller file (saving the photo as JPEG usually makes it much smaller)."
        )

    im = _open(raw)
    width, height = im.size
    source = {"format": im.format, "mode": im.mode, "size": (width, height), "frames": _frame_count(im)}
    _check_geometry(width, height)

    try:
        if isinstance(im, JpegImagePlugin.JpegImageFile) and max(width, height) > max_side:
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: the smallest scale whose long side is
            # still at least 3/4 of max_side. A 50-megapixel photo then costs a few megabytes, and
            # a 12-megapixel phone photo (4032 px) comes out at 2016 px with no resampling pass.
            k = _DRAFT_FRACTION * max_side / max(width, height)
            im.draft("RGB", (math.ceil(width * k), math.ceil(height * k)))
        im.load()  # decodes the first frame only (animated GIF, multi-page TIFF)
        orientation = _exif_orientation(im)  # read now: resizing drops a TIFF's own tags
        im = _flatten_palette_and_bits(im)
        im = _shrink(im, max_side, (width, height))
        im = _orient(im, orientation)
        out = to_rgb(im)
    except InvalidImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_many_pixels_error(str(exc)) from exc
    except MemoryError as exc:
        raise InvalidImageError(
            "The server ran out of memory while decoding this image. "
            "Please upload a smaller version of it."
        ) from exc
    except Exception as exc:  # any decoder failure on untrusted bytes means a broken file
        raise _decode_error(exc) from exc

    if out is im and isinstance(out, ImageFile.ImageFile):
        out = out.copy()  # a plain Image, detached from the file object
    out.info = {"source": source}
    return out


def _read_bytes(data: Any) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        try:
            size = os.stat(path).st_size
            if size > MAX_BYTES:
                raise InvalidImageError(
                    f"The file {path!r} is {_human_bytes(size)}; the limit is "
                    f"{_human_bytes(MAX_BYTES)}. Please use a smaller file."
                )
            with open(path, "rb") as fh:
                return fh.read()
        except FileNotFoundError as exc:
            raise InvalidImageError(f"No file was found at {path!r}. Check the path.") from exc
        except IsADirectoryError as exc:
            raise InvalidImageError(f"{path!r} is a folder, not an image file.") from exc
        except OSError as exc:
            raise InvalidImageError(f"The file {path!r} could not be read: {exc.strerror or exc}.") from exc
    if hasattr(data, "getvalue"):  # BytesIO, Streamlit's UploadedFile
        return bytes(data.getvalue())
    if hasattr(data, "read"):
        chunk = data.read(MAX_BYTES + 1)  # one byte over the limit is enough to refuse
        if isinstance(chunk, str):
            raise TypeError("load_image needs a file opened in binary mode ('rb'), not text mode")
        return bytes(chunk)
    raise TypeError(
        "load_image expects bytes, a path or a binary file object, "
        f"got {type(data).__name__}"
    )


def _open(raw: bytes) -> ImageFile.ImageFile:
    """Parse the header only (PIL decodes lazily)."""
    try:
        return Image.open(io.BytesIO(raw), formats=ACCEPTED_FORMATS)
    except Image.UnidentifiedImageError as exc:
        raise InvalidImageError(_describe_non_image(raw)) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # (the warning arrives as an exception when warnings are set to "error")
        raise _too_many_pixels_error(str(exc)) from exc
    except Exception as exc:  # a plugin choking on a malformed header
        raise _decode_error(exc) from exc


def _frame_count(im: Image.Image) -> int:
    """How many frames (animation) or pages (TIFF) the file holds; 1 for a still picture."""
    try:
        count = int(getattr(im, "n_frames", 1) or 1)
        if count > 1:
            im.seek(0)  # counting may have moved the file to its last frame
        return count
    except Exception:  # a damaged later frame: the first one may still decode
        try:
            im.seek(0)
        except Exception:
            pass
        return 1


def _check_geometry(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise InvalidImageError(
            f"The file claims to be {width} x {height} pixels, which is impossible; it is damaged."
        )
    if width * height > MAX_PIXELS:
        raise InvalidImageError(
            f"This image is {width} x {height} pixels ({_megapixels(width * height)}); the limit "
            f"is {_megapixels(MAX_PIXELS)}, to keep the server's memory safe. Please scale it down "
            "(for example to 4000 pixels on the long side) and upload it again."
        )
    short, long = sorted((width, height))
    if long / short > MAX_ASPECT_RATIO:
        raise InvalidImageError(
            f"This image is {width} x {height} pixels: too thin to cut into patches. A ViT "
            "squeezes every picture into a square grid, so this one would turn into stripes. "
            f"Please crop it so the long side is at most {MAX_ASPECT_RATIO:g} times the short side."
        )
    if short < MIN_SIDE:
        raise InvalidImageError(
            f"This image is only {width} x {height} pixels; it needs at least {MIN_SIDE} pixels "
            "on each side. Please upload a larger picture."
        )


def _flatten_palette_and_bits(im: Image.Image) -> Image.Image:
    """Palette, 1-bit and colour-key transparency become plain L/RGB/RGBA (resizable modes)."""
    has_key = "transparency" in im.info
    if im.mode in ("P", "PA"):
        return im.convert("RGBA" if has_key or im.mode == "PA" else "RGB")
    if im.mode == "1":
        return im.convert("L")
    if has_key and im.mode in ("L", "RGB"):
        return im.convert("RGBA")
    if im.mode in ("La", "RGBa"):  # premultiplied alpha back to straight alpha
        return im.convert({"La": "LA", "RGBa": "RGBA"}[im.mode])
    return im


def _shrink(im: Image.Image, max_side: int, source_size: tuple[int, int]) -> Image.Image:
    """Scale down so the long side is at most max_side, keeping the file's aspect ratio (taken
    from ``source_size``, so a JPEG decoded at a reduced scale ends at the same size)."""
    if max(im.size) <= max_side:
        return im
    width, height = source_size
    if width >= height:
        size = (max_side, max(1, round(height * max_side / width)))
    else:
        size = (max(1, round(width * max_side / height)), max_side)
    # High bit-depth data is scaled to 8 bits from its value range afterwards; a filter with no
    # negative lobes (bilinear, box) keeps that range. 8-bit images get bicubic (sharp, and faster
    # than Lanczos; the model sees a 224-pixel version anyway).
    resample = Image.Resampling.BILINEAR if im.mode in _HIGH_BIT_DEPTH_MODES else Image.Resampling.BICUBIC
    return im.resize(size, resample, reducing_gap=2.0)


# EXIF orientation tag value -> the transpose that puts the picture upright.
_ORIENT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _exif_orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # unreadable EXIF: keep the pixels as stored rather than refuse the photo
        return 1


def _orient(im: Image.Image, orientation: int) -> Image.Image:
    method = _ORIENT.get(orientation)
    return im if method is None else im.transpose(method)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB: bit depth scaled, alpha composited onto white."""
    im = _flatten_palette_and_bits(im)
    if im.mode in _HIGH_BIT_DEPTH_MODES:
        im = _high_bit_depth_to_l(im)
    if im.mode == "RGB":
        return im
    if im.mode in ("RGBA", "LA"):
        background = Image.new("RGB", im.size, _WHITE)
        background.paste(im.convert("RGB"), mask=im.getchannel("A"))
        return background
    if im.mode == "CMYK":
        return _cmyk_to_rgb(im)
    try:
        return im.convert("RGB")
    except ValueError as exc:
        raise InvalidImageError(
            f"This image uses the colour format {im.mode!r}, which cannot be converted to RGB here. "
            "Please save it as an ordinary RGB PNG or JPEG and upload that."
        ) from exc


def _high_bit_depth_to_l(im: Image.Image) -> Image.Image:
    """16/32-bit integer or float grayscale -> 8-bit L, scaled from its real range."""
    values = np.asarray(im).astype(np.float64)
    if im.mode.startswith("I;16"):
        scaled = values / 257.0  # 65535 -> 255 exactly
    else:
        finite = np.isfinite(values)
        if not finite.any():
            values = np.zeros_like(values)
        else:
            lo, hi = float(values[finite].min()), float(values[finite].max())
            values = np.nan_to_num(values, nan=lo, posinf=hi, neginf=lo)
        lo, hi = float(values.min()), float(values.max())
        if im.mode == "F" and lo >= 0.0 and hi <= 1.0:
            scaled = values * 255.0
        elif lo >= 0.0 and hi <= 255.0:
            scaled = values
        elif im.mode == "I" and lo >= 0.0 and hi <= 65535.0:
            scaled = values / 257.0  # a 16-bit image PIL widened to 32 bits
        elif hi > lo:
            scaled = (values - lo) * (255.0 / (hi - lo))  # arbitrary range: stretch min..max
        else:
            scaled = values  # one constant value outside 0..255: clipped below
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    icc = im.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            return ImageCms.profileToProfile(
                im,
                ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                ImageCms.createProfile("sRGB"),
                outputMode="RGB",
            )
        except Exception:  # a broken profile or no littlecms: the plain formula below
            pass
    return im.convert("RGB")


# --------------------------------------------------------------------------------------------
# Error messages
# --------------------------------------------------------------------------------------------


def _describe_non_image(raw: bytes) -> str:
    """Name what the bytes seem to be, for the 'not an image' message."""
    head = raw[:2048]
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    upload = f"Please upload a photo or picture saved as {_FORMAT_NAMES}."
    if head.startswith(b"%PDF"):
        return (
            "This is a PDF document, not an image. Export the page you want as PNG or JPEG "
            "(or take a screenshot of it) and upload that."
        )
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text[:512]:
        return (
            "This is a web page (HTML), not an image. This often happens when 'Save as' saves "
            "the page around a picture: open the picture on its own, save it, and upload that file."
        )
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return (
            "This is an SVG drawing (vector graphics), which cannot be read here. "
            "Export it as PNG and upload that."
        )
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"):
            return (
                "This is a HEIC/HEIF photo (the iPhone's default format), which cannot be read "
                "here. Export or share it as JPEG (or set the camera to 'Most Compatible') and "
                "upload that."
            )
        if brand in (b"avif", b"avis"):
            return "This AVIF image cannot be read with this installation. " + upload
        return "This is a video or other ISO media file, not a still image. " + upload
    if head.startswith(b"%!PS"):
        return "This is a PostScript/EPS file, which is not read here for safety. " + upload
    if head.startswith(b"8BPS"):
        return "This is a Photoshop (PSD) file. Export it as PNG or JPEG and upload that."
    if head.startswith(b"PK\x03\x04"):
        return "This is a ZIP archive or an Office document, not an image. " + upload
    if raw[128:132] == b"DICM":
        return "This is a DICOM medical image, which is not read here. Export it as PNG."
    if head.startswith((b"\x00\x00\x01\x00", b"BM", b"GIF8", b"\x89PNG", b"\xff\xd8", b"II*", b"MM\x00*")):
        # an accepted format's signature (or an icon) whose header PIL could not parse
        return (
            "The file starts like an image but its header is damaged, so it cannot be read. "
            "Try opening it in an image viewer and saving it again as PNG or JPEG."
        )
    try:
        head.decode("utf-8")
        is_text = all(c >= 32 or c in (9, 10, 13) for c in head)
    except UnicodeDecodeError:
        is_text = False
    if is_text:
        return "This is a text file, not an image. " + upload
    return "This file is not an image that can be read here. " + upload


def _decode_error(exc: BaseException) -> InvalidImageError:
    detail = str(exc).strip() or type(exc).__name__
    if "truncated" in detail.lower() or isinstance(exc, EOFError):
        return InvalidImageError(
            "The image file is incomplete: it ends before all of its pixels are stored (the "
            "download or upload was probably cut off). Please upload the complete file."
        )
    return InvalidImageError(
        f"The image could not be decoded; the file looks damaged ({detail}). "
        "Try opening it in an image viewer and saving it again as PNG or JPEG."
    )


def _too_many_pixels_error(pil_message: str) -> InvalidImageError:
    match = re.search(r"\((\d+) pixels\)", pil_message)
    size = f"This image has {_megapixels(int(match.group(1)))}" if match else "This image is too large"
    return InvalidImageError(
        f"{size}; the limit is {_megapixels(MAX_PIXELS)}, to keep the server's memory safe "
        "(files this large are also used to attack servers). Please scale it down (for example "
        "to 4000 pixels on the long side) and upload it again."
    )


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:,.1f} megapixels"


def _human_bytes(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n} bytes"
