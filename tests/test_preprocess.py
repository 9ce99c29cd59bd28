"""Tests for vit_explain.preprocess (and the decoding it re-exports from vit_explain.imagefile): every
kind of bad upload, and parity with transformers.

All fixtures are made in memory by the tests themselves; nothing is read from disk except the
scikit-image sample photos.
"""

from __future__ import annotations

import hashlib
import io
import tracemalloc
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from pathlib import Path
import torch
from PIL import Image, JpegImagePlugin

from helpers import encode, noise, png_claiming
from vit_explain import imagefile, preprocess as pp
from vit_explain.preprocess import (
    DECODE_MAX_SIDE,
    MAX_PIXELS,
    InvalidImageError,
    PreprocessSpec,
    image_digest,
    load_image,
    to_pixel_values,
)

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


# ------------------------------------------------------------------------------------------
# fixture builders
# ------------------------------------------------------------------------------------------


def close(pixel, expected, tol=3) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected))


@pytest.fixture
def decoder_calls(monkeypatch):
    """Records every pixel decoder PIL creates: empty means nothing was decoded."""
    calls = []
    real = Image._getdecoder

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(Image, "_getdecoder", spy)
    return calls


# ------------------------------------------------------------------------------------------
# refused uploads: InvalidImageError with a message that names the problem
# ------------------------------------------------------------------------------------------

_jpeg = encode(noise(320, 240), "JPEG", quality=90)
_png = encode(noise(320, 240, seed=1), "PNG")

REFUSED = {
    "empty": (b"", "empty"),
    "text": (b"Hello, this is my homework.\nIt is not a picture.\n", "text file"),
    "random-bytes": (np.random.default_rng(3).bytes(4096), "not an image"),
    "pdf": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "PDF"),
    "html": (b"<!DOCTYPE html>\n<html><head><title>cat.jpg</title></head></html>", "web page"),
    "svg": (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
    "heic": (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64, "HEIC"),
    "jpeg-cut-in-half": (_jpeg[: len(_jpeg) // 2], "incomplete"),
    "png-cut-in-half": (_png[: len(_png) // 2], "incomplete"),
    "jpeg-missing-last-bytes": (_jpeg[:-200], "incomplete"),
    "png-damaged-header": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "damaged"),
    "strip-1x4000": (encode(Image.new("RGB", (1, 4000)), "PNG"), "too thin"),
    "strip-4000x1": (encode(Image.new("RGB", (4000, 1)), "PNG"), "too thin"),
    "strip-30x400": (encode(Image.new("RGB", (30, 400)), "PNG"), "too thin"),
    "tiny-4x4": (encode(Image.new("RGB", (4, 4)), "PNG"), "at least 8 pixels"),
    "tiny-1x1-gif": (encode(Image.new("P", (1, 1)), "GIF"), "at least 8 pixels"),
}


@pytest.mark.parametrize("kind", list(REFUSED))
def test_bad_upload_is_refused_with_a_plain_message(kind):
    data, word = REFUSED[kind]
    with pytest.raises(InvalidImageError) as info:
        load_image(data)
    message = str(info.value)
    assert word.lower() in message.lower()
    assert "Traceback" not in message and len(message) < 400


def test_invalid_image_error_is_a_value_error():
    assert issubclass(InvalidImageError, ValueError)
    with pytest.raises(ValueError):
        load_image(b"not an image at all")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    "width,height",
    [(100_000, 100_000), (9_000, 8_000), (10_000, 10_000)],
    ids=["10-gigapixel-header", "72MP-under-PIL-limit", "100MP-PIL-warns"],
)
def test_decompression_bomb_refused_before_decoding(width, height, decoder_calls):
    assert width * height > MAX_PIXELS
    tracemalloc.start()
    try:
        with pytest.raises(InvalidImageError, match="megapixels"):
            load_image(png_claiming(width, height))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Not a single row was decoded (PIL's pixel buffers live outside tracemalloc, so the decoder
    # spy is the real proof); the Python side stayed tiny too.
    assert decoder_calls == []
    assert peak < 5_000_000


def test_pil_bomb_warning_raised_as_error_is_mapped(decoder_calls):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning now raises
        with pytest.raises(InvalidImageError, match="megapixels"):
            load_image(png_claiming(10_000, 10_000))
    assert decoder_calls == []


def test_pil_global_limit_is_left_alone():
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(InvalidImageError):
        load_image(png_claiming(100_000, 100_000))
    load_image(encode(noise(64, 48), "PNG"))
    assert Image.MAX_IMAGE_PIXELS == before
    assert MAX_PIXELS < Image.MAX_IMAGE_PIXELS  # our check always speaks first


def test_encoded_size_limit(monkeypatch):
    data = encode(noise(64, 64), "PNG")
    monkeypatch.setattr(imagefile, "MAX_BYTES", len(data) - 1)  # where load_image reads it
    with pytest.raises(InvalidImageError, match="limit"):
        load_image(data)


def test_missing_path_and_wrong_type(tmp_path):
    with pytest.raises(InvalidImageError, match="No file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(InvalidImageError, match="folder"):
        load_image(str(tmp_path))
    with pytest.raises(TypeError):
        load_image(12345)


# ------------------------------------------------------------------------------------------
# accepted uploads: the exact RGB picture that comes back
# ------------------------------------------------------------------------------------------


def _rgba_half_transparent() -> bytes:
    im = Image.new("RGBA", (16, 16), (0, 0, 0, 0))  # fully transparent *black*
    im.paste((255, 0, 0, 128), (8, 0, 16, 16))  # right half: half-transparent red
    return encode(im, "PNG")


def _la() -> bytes:
    im = Image.new("LA", (16, 16), (0, 0))
    im.paste((0, 255), (0, 8, 16, 16))  # bottom half opaque black
    return encode(im, "PNG")


def _palette_with_transparency() -> bytes:
    im = Image.new("P", (16, 16), 0)
    im.putpalette(list(RED) + list(GREEN) + [0] * 762)
    im.paste(1, (0, 0, 8, 16))  # left half uses index 1 (green), which is transparent
    return encode(im, "PNG", transparency=1)


def _gray_16bit() -> bytes:
    values = np.zeros((16, 16), dtype=np.uint16)
    values[:, 0:4], values[:, 4:8], values[:, 8:12], values[:, 12:16] = 0, 1000, 32896, 65535
    return encode(Image.fromarray(values), "PNG")


def _int32_tiff() -> bytes:
    values = np.full((16, 16), 1000, dtype=np.int32)
    values[:, :8], values[0, 0] = 3000, -1000  # range -1000..3000: stretched to 0..255
    return encode(Image.fromarray(values), "TIFF")


def _float_tiff(scale: float) -> bytes:
    values = np.zeros((16, 16), dtype=np.float32)
    values[:, 4:8], values[:, 8:12], values[:, 12:] = 0.25, 0.5, 1.0
    return encode(Image.fromarray(values * scale), "TIFF")


def _float_tiff_with_nan() -> bytes:
    values = np.linspace(-2.0, 2.0, 256, dtype=np.float32).reshape(16, 16)
    values[3, 3] = np.nan
    return encode(Image.fromarray(values), "TIFF")


def _cmyk_jpeg() -> bytes:
    im = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red in print colours
    im.paste((255, 255, 0, 0), (8, 0, 16, 16))  # blue
    return encode(im, "JPEG", quality=95)


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, BLUE, GREEN)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _multipage_tiff() -> bytes:
    frames = [Image.new("RGB", (16, 16), c) for c in (GREEN, RED)]
    return encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])


def _one_bit() -> bytes:
    im = Image.new("1", (16, 16), 0)
    im.paste(1, (8, 0, 16, 16))
    return encode(im, "PNG")


def _gray_jpeg() -> bytes:
    return encode(Image.new("L", (16, 16), 77), "JPEG", quality=100)


def _webp() -> bytes:
    return encode(Image.new("RGB", (16, 16), (10, 200, 30)), "WEBP", lossless=True)


def _bmp_strip() -> bytes:
    return encode(Image.new("RGB", (80, 8), (40, 50, 60)), "BMP")  # 10:1, the widest accepted


# name -> (bytes, size, {(x, y): expected RGB}, tolerance)
ACCEPTED = {
    "rgba-onto-white": (_rgba_half_transparent(), (16, 16), {(2, 2): WHITE, (12, 2): (255, 127, 127)}, 1),
    "la-onto-white": (_la(), (16, 16), {(2, 2): WHITE, (2, 12): BLACK}, 0),
    "palette-transparency": (_palette_with_transparency(), (16, 16), {(2, 2): WHITE, (12, 2): RED}, 0),
    "gray-16bit-png": (
        _gray_16bit(),
        (16, 16),
        {(0, 0): BLACK, (5, 0): (4, 4, 4), (9, 0): (128, 128, 128), (14, 0): WHITE},
        0,
    ),
    "int32-tiff": (_int32_tiff(), (16, 16), {(0, 0): BLACK, (2, 2): WHITE, (12, 2): (128, 128, 128)}, 0),
    "float-tiff-0-1": (
        _float_tiff(1.0),
        (16, 16),
        {(0, 0): BLACK, (5, 0): (64, 64, 64), (9, 0): (128, 128, 128), (14, 0): WHITE},
        0,
    ),
    "float-tiff-0-1000": (_float_tiff(1000.0), (16, 16), {(0, 0): BLACK, (9, 0): (128, 128, 128), (14, 0): WHITE}, 0),
    "float-tiff-nan": (_float_tiff_with_nan(), (16, 16), {(0, 0): BLACK, (15, 15): WHITE, (3, 3): BLACK}, 0),
    "cmyk-jpeg": (_cmyk_jpeg(), (16, 16), {(2, 8): RED, (13, 8): BLUE}, 6),
    "animated-gif-first-frame": (_animated_gif(), (16, 16), {(8, 8): RED}, 0),
    "multipage-tiff-first-page": (_multipage_tiff(), (16, 16), {(8, 8): GREEN}, 0),
    "one-bit": (_one_bit(), (16, 16), {(2, 2): BLACK, (12, 2): WHITE}, 0),
    "grayscale-jpeg": (_gray_jpeg(), (16, 16), {(8, 8): (77, 77, 77)}, 1),
    "webp": (_webp(), (16, 16), {(8, 8): (10, 200, 30)}, 0),
    "bmp-10-to-1": (_bmp_strip(), (80, 8), {(40, 4): (40, 50, 60)}, 0),
}


@pytest.mark.parametrize("kind", list(ACCEPTED))
def test_awkward_upload_becomes_a_correct_rgb_image(kind):
    data, size, pixels, tol = ACCEPTED[kind]
    im = load_image(data)
    assert type(im) is Image.Image  # a plain image, detached from the file
    assert im.mode == "RGB"
    assert im.size == size
    for xy, expected in pixels.items():
        assert close(im.getpixel(xy), expected, tol), (xy, im.getpixel(xy), expected)


@pytest.mark.parametrize("data, frames", [(_animated_gif(), 3), (_multipage_tiff(), 2)], ids=["gif", "tiff"])
def test_frame_count_is_reported_and_the_first_frame_is_used(data, frames):
    im = load_image(data)
    assert im.info["source"]["frames"] == frames
    assert im.getpixel((8, 8)) == (RED if frames == 3 else GREEN)  # still the first frame after counting


def test_source_description_and_info_are_clean():
    im = load_image(_gray_16bit())
    assert im.info == {"source": {"format": "PNG", "mode": "I;16", "size": (16, 16), "frames": 1}}


@pytest.mark.parametrize(
    "orientation,size,corner",
    [(1, (64, 32), (8, 8)), (3, (64, 32), (56, 24)), (6, (32, 64), (24, 8)), (8, (32, 64), (8, 56))],
)
def test_exif_orientation_is_applied(orientation, size, corner):
    stored = Image.new("RGB", (64, 32), BLACK)
    stored.paste(RED, (0, 0, 16, 16))  # a red marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    im = load_image(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert im.size == size
    assert close(im.getpixel(corner), RED, 8)
    assert "exif" not in im.info  # not rotated a second time by anyone downstream


@pytest.fixture(scope="module")
def photo_50mp():
    width, height = 8660, 5774  # 50.0 megapixels
    im = Image.new("RGB", (width, height), (200, 30, 30))
    im.paste((20, 40, 220), (0, 0, width // 4, height // 4))  # blue block in the top-left
    return im


@pytest.mark.parametrize("orientation", [1, 6])
def test_huge_jpeg_is_decoded_reduced(photo_50mp, orientation, monkeypatch):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(photo_50mp, "JPEG", quality=80, exif=exif.tobytes())

    decoded_sizes = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = real_draft(self, mode, size)
        decoded_sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    im = load_image(data)

    # libjpeg decoded at 1/4 scale (2165 x 1444), never the full 50 megapixels
    assert decoded_sizes == [(2165, 1444)]
    long_side, short_side = DECODE_MAX_SIDE, round(5774 * DECODE_MAX_SIDE / 8660)
    assert im.size == ((long_side, short_side) if orientation == 1 else (short_side, long_side))
    assert im.info["source"]["size"] == (8660, 5774)
    if orientation == 1:
        assert close(im.getpixel((100, 100)), (20, 40, 220), 8)  # blue block top-left
    else:
        assert close(im.getpixel((short_side - 100, 100)), (20, 40, 220), 8)  # now top-right
    assert close(im.getpixel((im.width // 2, im.height // 2)), (200, 30, 30), 8)


def test_phone_photo_jpeg_is_decoded_at_half_scale():
    im = Image.new("RGB", (4032, 3024), (30, 160, 90))
    out = load_image(encode(im, "JPEG", quality=80))
    assert out.size == (2016, 1512)  # libjpeg's 1/2 scale, no resampling pass needed
    assert close(out.getpixel((1000, 700)), (30, 160, 90), 3)


def test_huge_png_is_scaled_down_after_decoding():
    im = Image.new("RGB", (3000, 2000), (200, 30, 30))
    im.paste((20, 40, 220), (1500, 0, 3000, 2000))
    out = load_image(encode(im, "PNG", compress_level=1))
    assert out.size == (2048, 1365)
    assert out.getpixel((10, 10)) == (200, 30, 30) and out.getpixel((2040, 10)) == (20, 40, 220)


def test_max_side_argument():
    out = load_image(encode(noise(400, 200), "PNG"), max_side=100)
    assert out.size == (100, 50)


def test_paths_and_file_objects(tmp_path):
    data = encode(Image.new("RGB", (20, 10), (1, 2, 3)), "PNG")
    path = tmp_path / "pic.png"
    path.write_bytes(data)
    for source in (data, bytearray(data), memoryview(data), path, str(path), io.BytesIO(data)):
        im = load_image(source)
        assert im.size == (20, 10) and im.getpixel((5, 5)) == (1, 2, 3)
    with open(path, "rb") as fh:
        assert load_image(fh).size == (20, 10)


def test_image_digest():
    data = encode(noise(10, 10), "PNG")
    assert image_digest(data) == hashlib.sha256(data).hexdigest()
    assert len(image_digest(b"")) == 64
    assert image_digest(data) != image_digest(data + b"\x00")
    with pytest.raises(TypeError):
        image_digest("a string")


# ------------------------------------------------------------------------------------------
# to_pixel_values: the maths by hand
# ------------------------------------------------------------------------------------------


def test_vit_defaults_by_hand():
    config = SimpleNamespace(image_size=32, num_channels=3)
    x = to_pixel_values(Image.new("RGB", (50, 20), (255, 0, 51)), config)
    assert x.shape == (1, 3, 32, 32) and x.dtype == torch.float32
    # rescale 1/255 then (x - 0.5) / 0.5
    assert torch.allclose(x[0, :, 7, 9], torch.tensor([1.0, -1.0, 51 / 255 * 2 - 1]), atol=1e-6)


def test_imagenet_normalisation_by_hand():
    spec = PreprocessSpec(
        size=(16, 16), image_mean=(0.485, 0.456, 0.406), image_std=(0.229, 0.224, 0.225)
    )
    x = to_pixel_values(Image.new("RGB", (16, 16), (255, 128, 0)), spec)
    expected = [(1 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (0 - 0.406) / 0.225]
    assert torch.allclose(x[0, :, 3, 3], torch.tensor(expected), atol=1e-5)


def test_center_crop_takes_the_middle():
    arr = np.zeros((40, 60, 3), dtype=np.uint8)
    arr[10:30, 20:40] = 255  # white 20 x 20 in the middle
    spec = PreprocessSpec(do_resize=False, do_center_crop=True, crop_size=(20, 20))
    x = to_pixel_values(arr, spec)
    assert x.shape == (1, 3, 20, 20)
    assert torch.all(x == 1.0)


def test_numpy_and_pil_agree_and_rgba_is_composited():
    arr = np.asarray(noise(70, 50, seed=5))
    config = SimpleNamespace(image_size=48, num_channels=3)
    assert torch.equal(to_pixel_values(arr, config), to_pixel_values(Image.fromarray(arr), config))
    clear = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    assert torch.all(to_pixel_values(clear, config) == 1.0)  # white, not black
    rgba = np.dstack([arr, np.full(arr.shape[:2], 255, np.uint8)])
    assert torch.equal(to_pixel_values(rgba, config), to_pixel_values(arr, config))
    with pytest.raises(ValueError, match="uint8"):
        to_pixel_values(arr.astype(np.float32), config)


def test_single_channel_config():
    x = to_pixel_values(Image.new("RGB", (30, 30), (255, 255, 255)), SimpleNamespace(image_size=16, num_channels=1))
    assert x.shape == (1, 1, 16, 16) and torch.all(x == 1.0)


def test_real_vit_config_if_available():
    config_module = pytest.importorskip("vit_explain.config")
    config = config_module.ViTConfig(image_size=64, patch_size=16)
    assert to_pixel_values(noise(90, 60), config).shape == (1, config.num_channels, 64, 64)


# ------------------------------------------------------------------------------------------
# PreprocessSpec: reading and writing preprocessor_config.json
# ------------------------------------------------------------------------------------------

DEIT_STYLE = {
    "image_processor_type": "DeiTImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 256},
    "resample": 3,
    "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224},
    "do_rescale": True,
    "rescale_factor": 0.00392156862745098,
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "some_future_key": {"ignored": True},
}


def test_spec_from_dict_and_round_trip():
    spec = PreprocessSpec.from_dict(DEIT_STYLE)
    assert spec.size is None and spec.shortest_edge == 256 and spec.crop_size == (224, 224)
    assert spec.resample == 3 and spec.image_std == (0.229, 0.224, 0.225)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["image_processor_type"] == "ViTImageProcessor"
    # legacy integers: ViT and DeiT processors read them as squares
    legacy = PreprocessSpec.from_dict({"size": 256, "crop_size": 224, "do_center_crop": True})
    assert legacy.size == (256, 256) and legacy.crop_size == (224, 224)
    assert hash(spec) == hash(PreprocessSpec.from_dict(DEIT_STYLE))


def test_spec_for_config():
    spec = PreprocessSpec.for_config(SimpleNamespace(image_size=384, num_channels=3))
    assert spec == PreprocessSpec(size=(384, 384))
    assert spec.to_dict()["size"] == {"height": 384, "width": 384}
    assert spec.output_size(300, 451) == (384, 384)
    assert PreprocessSpec.from_dict(DEIT_STYLE).resize_size(300, 451) == (256, 384)


@pytest.mark.parametrize(
    "kwargs,word",
    [
        ({"do_center_crop": True}, "crop_size"),
        ({"size": (0, 224)}, "positive"),
        ({"image_std": (0.5, 0.0, 0.5)}, "must not contain 0"),
        ({"image_mean": (0.5, 0.5)}, "one value per channel"),
        ({"resample": 9}, "resample"),
        ({"size": (224, 224), "shortest_edge": 256}, "not both"),
    ],
)
def test_spec_rejects_bad_settings(kwargs, word):
    with pytest.raises(ValueError, match=word):
        PreprocessSpec(**kwargs)


def test_spec_from_dict_rejects_unknown_size_format():
    with pytest.raises(ValueError, match="shortest_edge"):
        PreprocessSpec.from_dict({"size": {"max_height": 500, "max_width": 500}})


# ------------------------------------------------------------------------------------------
# parity with transformers' ViT image processor (PIL backend)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_processor_class():
    transformers = pytest.importorskip("transformers")
    cls = getattr(transformers, "ViTImageProcessorPil", None)
    if cls is None:  # transformers 4.x: the default ViT processor is the PIL/numpy one
        cls = transformers.ViTImageProcessor
    return cls


@pytest.fixture(scope="module")
def photos():
    # real photos shipped with the app (public domain / CC0, see assets/samples/LICENSES.md)
    samples = Path(__file__).resolve().parent.parent / "assets" / "samples"
    chelsea = load_image(samples / "chelsea.jpg")
    return {
        "astronaut": load_image(samples / "astronaut.jpg"),  # 512 x 512
        "chelsea": chelsea,  # wide
        "chelsea-tall": chelsea.transpose(Image.Transpose.TRANSPOSE),  # tall
        "coffee": load_image(samples / "coffee.jpg"),  # 3:2
        "noise-small": noise(37, 91, seed=7),  # upsampled, odd sizes
        "gradient": Image.linear_gradient("L").resize((300, 200)).convert("RGB"),
    }


def _hf(processor, image) -> torch.Tensor:
    return processor(images=image, return_tensors="pt")["pixel_values"]


PARITY_TOL = 1 / 127  # the promise; the measured difference is 0 (same PIL resize, same float ops)


@pytest.mark.parametrize("image_size", [224, 48, 384])
def test_parity_vit_config(hf_processor_class, photos, image_size):
    processor = hf_processor_class(size={"height": image_size, "width": image_size})
    config = SimpleNamespace(image_size=image_size, num_channels=3)
    for name, photo in photos.items():
        ours, theirs = to_pixel_values(photo, config), _hf(processor, photo)
        assert ours.shape == theirs.shape == (1, 3, image_size, image_size), name
        diff = float((ours - theirs).abs().max())
        assert diff <= PARITY_TOL, (name, diff)
        assert diff <= 1e-6, (name, diff)


@pytest.mark.parametrize(
    "settings",
    [
        DEIT_STYLE,
        {**DEIT_STYLE, "size": {"shortest_edge": 224, "longest_edge": 256}, "do_center_crop": False},
        {"do_resize": False, "do_center_crop": True, "crop_size": {"height": 400, "width": 480}},
    ],
    ids=["deit-shortest-edge-crop", "shortest-longest-edge", "crop-pads-small-images"],
)
def test_parity_checkpoint_spec(hf_processor_class, photos, settings):
    settings = {k: v for k, v in settings.items() if k not in ("image_processor_type", "some_future_key")}
    processor = hf_processor_class(**settings)
    spec = PreprocessSpec.from_dict(settings)
    for name, photo in photos.items():
        ours, theirs = to_pixel_values(photo, spec), _hf(processor, photo)
        assert ours.shape == theirs.shape, (name, ours.shape, theirs.shape)
        assert ours.shape[-2:] == spec.output_size(photo.height, photo.width)
        diff = float((ours - theirs).abs().max())
        assert diff <= PARITY_TOL, (name, diff)
        assert diff <= 1e-6, (name, diff)


@pytest.mark.parametrize("class_name", ["ViTImageProcessorPil", "DeiTImageProcessorPil", "BitImageProcessorPil"])
def test_parity_with_each_processor_from_its_own_config(class_name, photos):
    """A Hugging Face checkpoint's preprocessor_config.json keeps transformers' arithmetic (floored crop
    offsets), for ViT, DeiT and BiT processors, on odd and even, tall and wide pictures."""
    transformers = pytest.importorskip("transformers")
    cls = getattr(transformers, class_name, None) or getattr(transformers, class_name.removesuffix("Pil"), None)
    if cls is None:
        pytest.skip(f"this transformers has no {class_name}")
    processor = cls()
    spec = PreprocessSpec.from_dict(processor.to_dict())
    assert spec.convention == "hf" and spec.describe().startswith("Hugging Face image processor: ")
    odd = noise(641, 427, seed=9)
    pictures = {**photos, "odd-641x427": odd, "odd-427x641": odd.transpose(Image.Transpose.TRANSPOSE)}
    for name, photo in pictures.items():
        ours, theirs = to_pixel_values(photo, spec), _hf(processor, photo)
        assert ours.shape == theirs.shape, (name, ours.shape, theirs.shape)
        diff = float((ours - theirs).abs().max())
        assert diff <= 1e-6, (name, diff)


def test_preprocess_reexports_the_decoding_module():
    for name in ("load_image", "InvalidImageError", "image_digest", "MAX_BYTES", "MAX_PIXELS", "DECODE_MAX_SIDE",
                 "MIN_SIDE", "MAX_ASPECT_RATIO", "ACCEPTED_FORMATS"):
        assert getattr(pp, name) is getattr(imagefile, name), name
        assert name in pp.__all__


def test_written_config_loads_in_transformers(hf_processor_class, photos):
    spec = PreprocessSpec.from_dict(DEIT_STYLE)
    written = {k: v for k, v in spec.to_dict().items() if k != "image_processor_type"}
    processor = hf_processor_class(**written)
    photo = photos["coffee"]
    assert torch.allclose(to_pixel_values(photo, spec), _hf(processor, photo), atol=1e-6)


def test_loaded_upload_feeds_the_model_input(photos):
    data = encode(photos["astronaut"], "PNG")
    x = to_pixel_values(load_image(data), SimpleNamespace(image_size=224, num_channels=3))
    assert x.shape == (1, 3, 224, 224)
    assert torch.equal(x, to_pixel_values(photos["astronaut"], SimpleNamespace(image_size=224, num_channels=3)))
