"""timm checkpoints get timm's eval transform, ``create_transform(**resolve_data_config(...))``, exactly.

The grid (odd and even sizes, portrait and landscape, upsampled small pictures; crop_pct 0.875,
0.9, 0.95 and 1.0; bicubic and bilinear; crop modes center, squash and border) is checked twice:

* against a reference written here from torchvision's documented semantics with PIL and numpy
  only (``Resize`` of a PIL picture is ``Image.resize(size, filter)``, the short side going to
  ``scale`` and the long one to ``int(scale * long / short)``; ``CenterCrop`` starts at
  ``int(round((H - h) / 2.0))``; ``ToTensor`` divides by 255; ``Normalize`` subtracts and
  divides), which always runs;
* against timm's own transform, wherever timm and torchvision import. PyPI's torchvision wheels
  are linked to the CUDA build of torch, so beside a CPU-only torch they fail to import; those
  tests then skip.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from vit_explain.preprocess import PreprocessSpec, load_image, to_pixel_values

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
TOL = 1e-6  # float32 rounding; the measured difference is 0
GRID = list(itertools.product((0.875, 0.9, 0.95, 1.0), ("bicubic", "bilinear"), ("center", "squash", "border")))
GRID_IDS = [f"{pct}-{interp}-{mode}" for pct, interp, mode in GRID]


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    samples = Path(__file__).resolve().parent.parent / "assets" / "samples"
    coffee, chelsea = load_image(samples / "coffee.jpg"), load_image(samples / "chelsea.jpg")
    rng = np.random.default_rng(11)
    return {
        "landscape-640x427": coffee.resize((640, 427), Image.Resampling.BICUBIC),
        "portrait-427x640": coffee.resize((640, 427), Image.Resampling.BICUBIC).transpose(Image.Transpose.TRANSPOSE),
        "landscape-500x374": chelsea.resize((500, 374), Image.Resampling.BICUBIC),
        "portrait-375x500": chelsea.resize((500, 375), Image.Resampling.BICUBIC).transpose(Image.Transpose.TRANSPOSE),
        "square-301": Image.fromarray(rng.integers(0, 256, (301, 301, 3), dtype=np.uint8)),
        "small-150x97": Image.fromarray(rng.integers(0, 256, (97, 150, 3), dtype=np.uint8)),
        "small-96x151": Image.fromarray(rng.integers(0, 256, (151, 96, 3), dtype=np.uint8)),
    }


def pretrained_cfg(crop_pct: float, interpolation: str, mode: str, stats=IMAGENET, size: int = 224) -> dict:
    return {"input_size": (3, size, size), "crop_pct": crop_pct, "interpolation": interpolation, "crop_mode": mode,
            "mean": stats[0], "std": stats[1]}


def reference_timm_eval(image: Image.Image, cfg: dict) -> torch.Tensor:
    """timm's eval transform for a PIL picture, from torchvision's semantics, with PIL and numpy."""
    size = cfg["input_size"][1]
    scale = math.floor(size / cfg["crop_pct"])
    resample = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}[cfg["interpolation"]]
    w, h = image.size
    fill = (0, 0, 0)
    if cfg["crop_mode"] == "center":  # Resize(scale): the short side to scale
        new = (scale, int(scale * h / w)) if w <= h else (int(scale * w / h), scale)
    elif cfg["crop_mode"] == "squash":  # Resize((scale, scale))
        new = (scale, scale)
    else:  # border: ResizeKeepRatio(scale, longest=1), then CenterCropOrPad with the mean colour
        ratio = max(h / scale, w / scale)
        new = (round(w / ratio), round(h / ratio))
        fill = tuple(round(255 * v) for v in cfg["mean"])
    image = image.resize(new, resample)
    w, h = image.size
    if size > w or size > h:  # pad: the odd pixel goes right / below
        left, top = max(0, size - w) // 2, max(0, size - h) // 2
        right, bottom = max(0, size - w + 1) // 2, max(0, size - h + 1) // 2
        image = ImageOps.expand(image, border=(left, top, right, bottom), fill=fill)
        w, h = image.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    x = np.asarray(image).astype(np.float32).transpose(2, 0, 1) / np.float32(255)
    mean = np.asarray(cfg["mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(cfg["std"], dtype=np.float32)[:, None, None]
    return torch.from_numpy((x - mean) / std)[None]


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


@pytest.mark.parametrize("crop_pct,interpolation,mode", GRID, ids=GRID_IDS)
def test_timm_convention_matches_the_reference(photos, crop_pct, interpolation, mode):
    for stats in (IMAGENET, HALF):
        cfg = pretrained_cfg(crop_pct, interpolation, mode, stats)
        spec = PreprocessSpec.from_timm(cfg)
        for name, photo in photos.items():
            ours = to_pixel_values(photo, spec)
            assert ours.shape == (1, 3, 224, 224) == (1, 3, *spec.output_size(photo.height, photo.width))
            assert max_diff(ours, reference_timm_eval(photo, cfg)) <= TOL, name


@pytest.fixture(scope="module")
def timm_eval_transform():
    try:
        from timm.data import create_transform, resolve_data_config
    except Exception as exc:  # not installed, or torchvision's compiled ops do not load beside this torch
        pytest.skip(f"timm's transforms cannot be imported here ({type(exc).__name__}: {exc})")
    return lambda cfg: create_transform(**resolve_data_config(pretrained_cfg=cfg))


@pytest.mark.parametrize("crop_pct,interpolation,mode", GRID, ids=GRID_IDS)
def test_timm_convention_matches_timm_itself(photos, timm_eval_transform, crop_pct, interpolation, mode):
    for stats in (IMAGENET, HALF):
        cfg = pretrained_cfg(crop_pct, interpolation, mode, stats)
        transform, spec = timm_eval_transform(cfg), PreprocessSpec.from_timm(cfg)
        for name, photo in photos.items():
            theirs = transform(photo)[None]
            assert max_diff(to_pixel_values(photo, spec), theirs) <= TOL, name
            assert max_diff(reference_timm_eval(photo, cfg), theirs) <= TOL, name  # the reference is timm's too


def test_timm_defaults_match_timm_itself(photos, timm_eval_transform):
    # every setting left to timm's defaults (resolve_data_config refuses an empty dict), then a few
    for cfg in ({"num_classes": 1000}, {"input_size": (3, 384, 384), "crop_pct": 1.0},
                {"interpolation": "bilinear", "crop_pct": 0.9}):
        spec = PreprocessSpec.from_timm(cfg)
        for name, photo in photos.items():
            assert max_diff(to_pixel_values(photo, spec), timm_eval_transform(cfg)(photo)[None]) <= TOL, (cfg, name)


def test_the_reported_photo_is_cropped_where_timm_crops_it(photos):
    """640 x 427 at crop_pct 0.9: 248 x 371 after the resize, so the crop starts 73.5 px in.
    torchvision rounds that half to 74; transformers floors it to 73, one pixel off."""
    photo = photos["landscape-640x427"]
    cfg = pretrained_cfg(0.9, "bicubic", "center")
    spec = PreprocessSpec.from_timm(cfg)
    assert spec.resize_size(427, 640) == (248, 371)
    resized = np.asarray(photo.resize((371, 248), Image.Resampling.BICUBIC)).astype(np.float32) / np.float32(255)
    window = resized[12:236, 74:298].transpose(2, 0, 1)  # int(round(24 / 2)) = 12, int(round(147 / 2)) = 74
    mean, std = (np.asarray(v, dtype=np.float32)[:, None, None] for v in IMAGENET)
    ours = to_pixel_values(photo, spec)
    assert max_diff(ours, torch.from_numpy((window - mean) / std)[None]) <= TOL
    assert max_diff(ours, reference_timm_eval(photo, cfg)) <= TOL
    # the Hugging Face rounding of the same steps is the one-pixel-off crop the fix removes
    assert max_diff(to_pixel_values(photo, dataclasses.replace(spec, convention="hf")), ours) > 1.0


def test_rounding_goes_to_even_like_python():
    """The crop offset is Python's round of a half: 1.5 -> 2, 2.5 -> 2, 3.5 -> 4; transformers floors."""
    spec = PreprocessSpec(do_resize=False, do_center_crop=True, crop_size=(4, 4), convention="timm",
                          do_normalize=False, do_rescale=False)
    for width, timm_left, hf_left in ((7, 2, 1), (9, 2, 2), (11, 4, 3), (8, 2, 2)):
        arr = np.arange(5 * width, dtype=np.uint8).reshape(5, width)[:, :, None].repeat(3, axis=2)
        for convention, left in (("timm", timm_left), ("hf", hf_left)):  # top: (5 - 4) / 2 -> 0 for both
            x = to_pixel_values(arr, dataclasses.replace(spec, convention=convention))[0, 0]
            assert torch.equal(x, torch.from_numpy(arr[0:4, left : left + 4, 0].astype(np.float32))), (width, convention)


def test_rescaling_gives_totensors_values():
    """ToTensor divides by 255 in float32 (torch); the float64 product rounded to float32 is the same
    for all 256 byte values, so both conventions share the rescale step."""
    row = np.arange(256, dtype=np.uint8).reshape(1, 256)
    spec = PreprocessSpec(do_resize=False, do_normalize=False, convention="timm")
    totensor = torch.from_numpy(row).to(torch.float32).div(255)
    assert torch.equal(to_pixel_values(np.dstack([row] * 3), spec)[0, 0], totensor)


def test_from_timm_reads_like_resolve_data_config():
    spec = PreprocessSpec.from_timm({})  # timm's defaults: 224, crop_pct 0.875, bicubic, ImageNet
    assert spec.convention == "timm" and spec.shortest_edge == 256 and spec.crop_size == (224, 224)
    assert spec.resample == int(Image.Resampling.BICUBIC) and (spec.image_mean, spec.image_std) == IMAGENET
    squash = PreprocessSpec.from_timm(pretrained_cfg(0.95, "bilinear", "squash", HALF, size=384))
    assert squash.size == (404, 404) and squash.crop_size == (384, 384) and not squash.fit_inside
    border = PreprocessSpec.from_timm(pretrained_cfg(0.9, "bicubic", "border"))
    assert border.size == (248, 248) and border.fit_inside and border.pad_fill == (124, 116, 104)
    assert border.resize_size(427, 640) == (165, 248) and border.resize_size(640, 427) == (248, 165)
    for bad, word in (({"crop_mode": "random"}, "crop_mode"), ({"interpolation": "random"}, "interpolation"),
                      ({"input_size": (3, 224, 256)}, "not square")):
        with pytest.raises(ValueError, match=word):
            PreprocessSpec.from_timm(bad)


def test_describe_names_the_transform():
    spec = PreprocessSpec.from_timm(pretrained_cfg(0.9, "bicubic", "center"))
    assert spec.describe() == ("timm eval transform: shortest side to 248 px (bicubic), centre crop 224 px "
                               "(rounded offsets), ImageNet mean/std")
    squash = PreprocessSpec.from_timm(pretrained_cfg(1.0, "bilinear", "squash", HALF))
    assert squash.describe() == ("timm eval transform: both sides to 224 px (bilinear), centre crop 224 px "
                                 "(rounded offsets), mean = std = 0.5")
    border = PreprocessSpec.from_timm(pretrained_cfg(0.9, "bicubic", "border"))
    assert border.describe() == ("timm eval transform: longest side to 248 px (bicubic), centre crop 224 px "
                                 "(rounded offsets, padded with RGB (124, 116, 104)), ImageNet mean/std")
    deit = PreprocessSpec.from_dict({"size": {"shortest_edge": 256}, "resample": 3, "do_center_crop": True,
                                     "crop_size": 224, "image_mean": IMAGENET[0], "image_std": IMAGENET[1]})
    assert deit.describe() == ("Hugging Face image processor: shortest side to 256 px (bicubic), centre crop 224 px "
                               "(floored offsets), ImageNet mean/std")
    assert PreprocessSpec().describe() == "Hugging Face image processor: resize to 224 px (bilinear), mean = std = 0.5"


def test_a_timm_spec_survives_to_dict_and_from_dict():
    for mode in ("center", "squash", "border"):
        spec = PreprocessSpec.from_timm(pretrained_cfg(0.9, "bicubic", mode))
        written = spec.to_dict()
        assert written["convention"] == "timm" and PreprocessSpec.from_dict(written) == spec
    plain = PreprocessSpec().to_dict()
    assert not {"convention", "fit_inside", "pad_fill"} & set(plain)  # Hugging Face files are unchanged
    with pytest.raises(ValueError, match="convention"):
        PreprocessSpec(convention="keras")
    with pytest.raises(ValueError, match="fit_inside"):
        PreprocessSpec(fit_inside=True)  # timm's border resize only


def test_timm_config_json_gets_the_timm_transform():
    from vit_explain.weights.common import CheckpointError
    from vit_explain.weights.timm_format import read_timm_config

    raw = {"architecture": "vit_tiny_patch16_224.augreg_in21k_ft_in1k", "num_classes": 0,
           "pretrained_cfg": pretrained_cfg(0.9, "bicubic", "border", HALF)}
    info = read_timm_config(raw, "test/repo")
    assert info["spec"] == PreprocessSpec.from_timm(raw["pretrained_cfg"]) and info["spec"].convention == "timm"
    assert info["spec_text"].startswith(info["spec"].describe()) and "crop_pct 0.9" in info["spec_text"]
    raw["pretrained_cfg"] = {**raw["pretrained_cfg"], "crop_mode": "letterbox"}
    with pytest.raises(CheckpointError, match="test/repo.*crop_mode"):
        read_timm_config(raw, "test/repo")


def test_resampling_a_timm_model_keeps_timm_geometry():
    from vit_explain.config import ViTConfig
    from vit_explain.weights.resampling import _spec_for_size

    for mode, scaled in (("center", "shortest_edge"), ("border", "size")):
        spec = PreprocessSpec.from_timm(pretrained_cfg(0.875, "bicubic", mode))
        new = _spec_for_size(spec, ViTConfig(image_size=224), ViTConfig(image_size=448))
        assert new.convention == "timm" and new.crop_size == (448, 448) and new.fit_inside == spec.fit_inside
        assert getattr(new, scaled) in (512, (512, 512))
