"""The model's preprocessing: from an RGB picture to the ``[1, C, H, W]`` tensor a ViT reads.

``to_pixel_values(image, spec)`` resizes, crops, rescales and normalises a picture as the
checkpoint's pictures were in training. ``spec`` is a ViT config (anything with ``image_size`` and
``num_channels``), a :class:`PreprocessSpec`, or a ``preprocessor_config.json`` dict. A spec follows
one of two conventions (``PreprocessSpec.convention``); its numbers equal that library's to float32
rounding, and ``spec.describe()`` says in one sentence which transform is in use.

* ``"hf"``: transformers' ViT / DeiT / BiT image processors (PIL backend). A centre crop starts at
  ``(H - h) // 2`` (floored); a picture smaller than the crop is padded with zeros, the extra odd
  pixel before it; rescaling multiplies in float64, then rounds to float32.
* ``"timm"``: timm's eval transform, ``create_transform(**resolve_data_config(...))``, built by
  :meth:`PreprocessSpec.from_timm`. torchvision's ``Resize`` of a PIL picture is PIL's
  ``Image.resize`` with the filter (always antialiased); its ``CenterCrop`` starts at
  ``int(round((H - h) / 2.0))`` (Python's round: an exact half goes to the even number, so it often
  lands one pixel after the Hugging Face crop) and pads the extra odd pixel after the picture;
  ``ToTensor`` divides by 255 in float32 (the same 256 values as the float64 product), and
  ``Normalize`` subtracts and divides in float32, as both conventions do here. crop_mode
  ``"center"`` resizes the shortest side, ``"squash"`` both sides, and ``"border"`` the longest
  (``fit_inside``), padding with the mean colour (``pad_fill``) before the crop.

Safe decoding of uploaded files lives in :mod:`vit_explain.imagefile`; its public names
(``load_image``, ``InvalidImageError``, ``image_digest`` and the limits) are re-exported here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from .imagefile import (ACCEPTED_FORMATS, DECODE_MAX_SIDE, MAX_ASPECT_RATIO, MAX_BYTES, MAX_PIXELS, MIN_SIDE,
                        InvalidImageError, image_digest, load_image, to_rgb)

__all__ = ["InvalidImageError", "PreprocessSpec", "load_image", "to_pixel_values", "image_digest", "MAX_BYTES",
           "MAX_PIXELS", "DECODE_MAX_SIDE", "MIN_SIDE", "MAX_ASPECT_RATIO", "ACCEPTED_FORMATS"]

_RESAMPLE_NAMES = {int(r): r.name.lower() for r in Image.Resampling}
_CONVENTIONS = ("hf", "timm")

#: timm's interpolation names (its ``pretrained_cfg["interpolation"]``) -> PIL filter numbers, as
#: torchvision maps them for PIL pictures.
TIMM_INTERPOLATION = {"nearest": 0, "nearest-exact": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4,
                      "hamming": 5}
#: timm's defaults when a pretrained_cfg leaves a setting out (``timm.data.resolve_data_config``).
TIMM_DEFAULTS = {"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center",
                 "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
#: Well-known normalisations, by the name ``describe`` gives them.
_KNOWN_STATS = {"ImageNet mean/std": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                "mean = std = 0.5": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
                "CLIP mean/std": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))}


def _pair(value: Any, what: str) -> tuple[int, int]:
    """An int (square) or an (height, width) pair -> (height, width)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        pair = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{what} must be an int or a (height, width) pair, got {value!r}")
    if min(pair) <= 0:
        raise ValueError(f"{what} must be positive, got {pair}")
    return pair


def _channels(value: Any, n: int, what: str) -> tuple[float, ...]:
    if isinstance(value, (int, float, np.number)):
        return (float(value),) * n
    values = tuple(float(v) for v in value)
    if len(values) != n:
        raise ValueError(f"{what} needs one value per channel ({n}), got {len(values)}: {values}")
    return values


@dataclass(frozen=True)
class PreprocessSpec:
    """How a checkpoint wants its pictures prepared (the fields of ``preprocessor_config.json``).

    The steps run in this order, each only if switched on: resize (to ``size`` = (height, width),
    or so the short side is ``shortest_edge``, capped by ``longest_edge`` if given, or with
    ``fit_inside`` so the whole picture fits in ``size`` keeping its shape), centre crop to
    ``crop_size`` (padding a smaller picture with ``pad_fill``, 0 by default), multiply by
    ``rescale_factor``, then ``(x - image_mean) / image_std`` per channel. ``convention`` (``"hf"``
    or ``"timm"``, see the module docstring) says whose rounding the crop and rescale follow.
    The defaults are those of transformers' ViT image processor at 224 x 224. Frozen and hashable,
    so it can be a cache key.
    """

    do_resize: bool = True
    size: tuple[int, int] | None = (224, 224)
    shortest_edge: int | None = None
    longest_edge: int | None = None
    resample: int = int(Image.Resampling.BILINEAR)
    do_center_crop: bool = False
    crop_size: tuple[int, int] | None = None
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    num_channels: int = 3
    #: Whose arithmetic: "hf" (transformers' image processors) or "timm" (timm's eval transform).
    convention: str = "hf"
    #: Resize keeping the aspect ratio so the whole picture fits in ``size`` (timm's "border" mode).
    fit_inside: bool = False
    #: The 8-bit value per channel that pads a picture smaller than the crop (an int: every channel).
    pad_fill: int | tuple[int, ...] = 0

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if self.num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 (grayscale) or 3 (RGB), got {self.num_channels}")
        if self.convention not in _CONVENTIONS:
            raise ValueError(f"convention must be one of {_CONVENTIONS}, got {self.convention!r}")
        if self.shortest_edge is not None:
            put("shortest_edge", int(self.shortest_edge))
            if self.size is not None:
                raise ValueError(
                    "Give either size=(height, width) or shortest_edge, not both; "
                    "set size=None to resize by the short side."
                )
            if self.shortest_edge <= 0:
                raise ValueError(f"shortest_edge must be positive, got {self.shortest_edge}")
        elif self.size is not None:
            put("size", _pair(self.size, "size"))
        elif self.do_resize:
            raise ValueError("do_resize=True needs size=(height, width) or shortest_edge")
        if self.longest_edge is not None:
            put("longest_edge", int(self.longest_edge))
            if self.shortest_edge is None or self.longest_edge < self.shortest_edge:
                raise ValueError(
                    "longest_edge only works together with shortest_edge and must not be smaller "
                    f"than it (got shortest_edge={self.shortest_edge}, longest_edge={self.longest_edge})"
                )
        put("fit_inside", bool(self.fit_inside))
        if self.fit_inside and (self.size is None or self.convention != "timm"):
            raise ValueError("fit_inside is timm's 'border' resize: it needs size=(height, width) and convention='timm'")
        if int(self.resample) not in _RESAMPLE_NAMES:
            raise ValueError(
                f"resample must be a PIL filter number {sorted(_RESAMPLE_NAMES)} "
                f"({', '.join(f'{k}={v}' for k, v in sorted(_RESAMPLE_NAMES.items()))}), "
                f"got {self.resample!r}"
            )
        put("resample", int(self.resample))
        if self.crop_size is not None:
            put("crop_size", _pair(self.crop_size, "crop_size"))
        elif self.do_center_crop:
            raise ValueError("do_center_crop=True needs crop_size=(height, width)")
        fill = tuple(int(v) for v in _channels(self.pad_fill, self.num_channels, "pad_fill"))
        if any(not 0 <= v <= 255 for v in fill):
            raise ValueError(f"pad_fill holds 8-bit values (0..255), got {fill}")
        put("pad_fill", fill)
        put("rescale_factor", float(self.rescale_factor))
        put("image_mean", _channels(self.image_mean, self.num_channels, "image_mean"))
        put("image_std", _channels(self.image_std, self.num_channels, "image_std"))
        if any(s == 0 for s in self.image_std):
            raise ValueError(f"image_std must not contain 0 (it divides), got {self.image_std}")
        for flag in ("do_resize", "do_center_crop", "do_rescale", "do_normalize"):
            put(flag, bool(getattr(self, flag)))

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def for_config(cls, config: Any) -> PreprocessSpec:
        """The ViT defaults for a model config: bilinear resize to image_size, 1/255, mean=std=0.5."""
        if not hasattr(config, "image_size"):
            raise TypeError(f"expected a ViT config with an image_size, got {type(config).__name__}")
        channels = int(getattr(config, "num_channels", 3))
        return cls(
            size=_pair(config.image_size, "image_size"),
            image_mean=(0.5,) * channels,
            image_std=(0.5,) * channels,
            num_channels=channels,
        )

    @classmethod
    def from_timm(cls, cfg: Mapping[str, Any]) -> PreprocessSpec:
        """timm's eval transform for a ``pretrained_cfg`` (or a ``resolve_data_config`` result).

        Reads ``input_size``, ``interpolation``, ``crop_pct``, ``crop_mode``, ``mean`` and ``std``,
        each defaulting as ``timm.data.resolve_data_config`` does. The resize goes to
        ``floor(input size / crop_pct)``: the shortest side for crop_mode "center", both sides for
        "squash", the longest side for "border" (then padded with ``round(255 * mean)``), followed
        by a centre crop to the input size. Raises ValueError for a setting timm would not accept
        or a non-square input size.
        """
        if not isinstance(cfg, Mapping):
            raise TypeError(f"from_timm expects a pretrained_cfg dict, got {type(cfg).__name__}")
        input_size = cfg.get("input_size") or TIMM_DEFAULTS["input_size"]
        if len(input_size) != 3:
            raise ValueError(f"timm's input_size is (channels, height, width), got {list(input_size)}")
        channels, height, width = (int(v) for v in input_size)
        if height != width:
            raise ValueError(f"timm's input_size {list(input_size)} is not square; only square inputs are supported.")
        interpolation = str(cfg.get("interpolation") or TIMM_DEFAULTS["interpolation"])
        if interpolation not in TIMM_INTERPOLATION:
            raise ValueError(f"timm's interpolation {interpolation!r} is not one of {sorted(TIMM_INTERPOLATION)}")
        crop_pct = float(cfg.get("crop_pct") or TIMM_DEFAULTS["crop_pct"])
        mode = cfg.get("crop_mode") or TIMM_DEFAULTS["crop_mode"]
        mean = tuple(float(v) for v in (cfg.get("mean") or TIMM_DEFAULTS["mean"]))
        std = tuple(float(v) for v in (cfg.get("std") or TIMM_DEFAULTS["std"]))
        mean, std = (mean * channels if len(mean) == 1 else mean), (std * channels if len(std) == 1 else std)
        scaled = math.floor(height / crop_pct)
        common = dict(resample=TIMM_INTERPOLATION[interpolation], do_center_crop=True, crop_size=(height, width),
                      image_mean=mean, image_std=std, num_channels=channels, convention="timm")
        if mode == "center":
            return cls(size=None, shortest_edge=scaled, **common)
        if mode == "squash":
            return cls(size=(scaled, scaled), **common)
        if mode == "border":
            return cls(size=(scaled, scaled), fit_inside=True, pad_fill=tuple(round(255 * v) for v in mean), **common)
        raise ValueError(f"timm's crop_mode {mode!r} is not one of 'center', 'squash', 'border'")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessSpec:
        """Read a Hugging Face ``preprocessor_config.json`` (as a dict); unknown keys are ignored.

        ``size`` may be ``{"height", "width"}``, ``{"shortest_edge"}`` (optionally with
        ``"longest_edge"``), a ``[height, width]`` list, or a single int, which ViT and DeiT
        processors read as a square. Missing keys take the ViT defaults. The keys ``convention``,
        ``fit_inside`` and ``pad_fill``, which only :meth:`to_dict` writes, are read back.
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"from_dict expects a dict, got {type(d).__name__}")
        defaults = cls()
        channels = int(d.get("num_channels", 3))
        kwargs: dict[str, Any] = {"num_channels": channels}
        size = d.get("size", None)
        if isinstance(size, Mapping):
            if "height" in size and "width" in size:
                kwargs["size"] = (size["height"], size["width"])
            elif "shortest_edge" in size:
                kwargs["size"] = None
                kwargs["shortest_edge"] = size["shortest_edge"]
                kwargs["longest_edge"] = size.get("longest_edge")
            else:
                raise ValueError(
                    "preprocessor_config 'size' must have 'height' and 'width' or 'shortest_edge', "
                    f"got {dict(size)}"
                )
        elif size is not None:
            kwargs["size"] = _pair(size, "size")
        crop = d.get("crop_size", None)
        if isinstance(crop, Mapping):
            if "height" not in crop or "width" not in crop:
                raise ValueError(f"crop_size must have 'height' and 'width', got {dict(crop)}")
            kwargs["crop_size"] = (crop["height"], crop["width"])
        elif crop is not None:
            kwargs["crop_size"] = _pair(crop, "crop_size")
        for key in ("do_resize", "resample", "do_center_crop", "do_rescale", "rescale_factor", "do_normalize",
                    "convention", "fit_inside", "pad_fill"):
            if d.get(key) is not None:
                kwargs[key] = d[key]
        for key in ("image_mean", "image_std"):
            kwargs[key] = d[key] if d.get(key) is not None else (0.5,) * channels
        if kwargs.get("do_center_crop") and "crop_size" not in kwargs:
            raise ValueError("preprocessor_config has do_center_crop=true but no crop_size")
        if kwargs.get("crop_size") is None:
            kwargs.pop("crop_size", None)
        return dataclasses.replace(defaults, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """A ``preprocessor_config.json`` dict that transformers' ViT image processor can load.

        A timm-convention spec also writes ``convention`` (and ``fit_inside``, ``pad_fill`` when
        set), which transformers ignores and :meth:`from_dict` reads back; transformers itself
        then floors the crop offsets, as it always does.
        """
        if self.shortest_edge is not None:
            size: dict[str, int] | None = {"shortest_edge": self.shortest_edge}
            if self.longest_edge is not None:
                size["longest_edge"] = self.longest_edge
        elif self.size is not None:
            size = {"height": self.size[0], "width": self.size[1]}
        else:
            size = None
        d: dict[str, Any] = {
            "image_processor_type": "ViTImageProcessor",
            "do_resize": self.do_resize,
            "size": size,
            "resample": self.resample,
            "do_center_crop": self.do_center_crop,
            "crop_size": None if self.crop_size is None else {"height": self.crop_size[0], "width": self.crop_size[1]},
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
        }
        if self.num_channels != 3:
            d["num_channels"] = self.num_channels
        if self.convention != "hf":
            d["convention"] = self.convention
        if self.fit_inside:
            d["fit_inside"] = True
        if any(self.pad_fill):
            d["pad_fill"] = list(self.pad_fill)
        return d

    def describe(self) -> str:
        """One sentence naming the transform in use, e.g. ``"timm eval transform: shortest side to
        248 px (bicubic), centre crop 224 px (rounded offsets), ImageNet mean/std"``."""
        filt = _RESAMPLE_NAMES[self.resample]
        steps = []
        if self.num_channels == 1:
            steps.append("grayscale")
        if not self.do_resize:
            steps.append("no resize")
        elif self.fit_inside:
            box = f"longest side to {_px(self.size)}" if self.size[0] == self.size[1] else f"fit in {_px(self.size)}"
            steps.append(f"{box} ({filt})")
        elif self.shortest_edge is not None:
            cap = f", long side at most {self.longest_edge} px" if self.longest_edge is not None else ""
            steps.append(f"shortest side to {self.shortest_edge} px{cap} ({filt})")
        elif self.convention == "timm":
            steps.append(f"both sides to {_px(self.size)} ({filt})")
        else:
            steps.append(f"resize to {_px(self.size)} ({filt})")
        if self.do_center_crop:
            rounding = "rounded offsets" if self.convention == "timm" else "floored offsets"
            fill = self.pad_fill[0] if len(set(self.pad_fill)) == 1 else f"RGB {self.pad_fill}"
            pad = f", padded with {fill}" if any(self.pad_fill) else ""
            steps.append(f"centre crop {_px(self.crop_size)} ({rounding}{pad})")
        if not self.do_rescale:
            steps.append("no rescaling")
        elif not math.isclose(self.rescale_factor, 1 / 255, rel_tol=1e-9):
            steps.append(f"rescale x {self.rescale_factor:g}")
        steps.append(_stats_text(self.image_mean, self.image_std) if self.do_normalize else "no normalisation")
        who = "timm eval transform" if self.convention == "timm" else "Hugging Face image processor"
        return f"{who}: {', '.join(steps)}"

    # -- geometry ----------------------------------------------------------------------------

    def resize_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after the resize step for an input of this size (same rounding as
        transformers, or as torchvision and timm for a timm-convention spec)."""
        if not self.do_resize:
            return (height, width)
        if self.fit_inside:  # timm's ResizeKeepRatio(size, longest=1.0)
            ratio = max(height / self.size[0], width / self.size[1])
            return (max(1, round(height / ratio)), max(1, round(width / ratio)))
        if self.size is not None:
            return self.size
        edge = self.shortest_edge
        if self.longest_edge is not None:
            return _short_edge_capped(height, width, edge, self.longest_edge)
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(edge * long / short)
        return (new_long, edge) if width <= height else (edge, new_long)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of ``pixel_values`` for an input image of this size."""
        if self.do_center_crop:
            return self.crop_size
        return self.resize_size(height, width)


def _px(hw: tuple[int, int]) -> str:
    return f"{hw[0]} px" if hw[0] == hw[1] else f"{hw[0]} x {hw[1]} px"


def _stats_text(mean: tuple[float, ...], std: tuple[float, ...]) -> str:
    for name, (m, s) in _KNOWN_STATS.items():
        if all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(m + s, mean * (3 // len(mean)) + std * (3 // len(std)))):
            return name
    return f"mean {', '.join(f'{v:g}' for v in mean)}, std {', '.join(f'{v:g}' for v in std)}"


def _short_edge_capped(height: int, width: int, edge: int, max_edge: int) -> tuple[int, int]:
    """Short side to ``edge`` unless the long side would pass ``max_edge`` (transformers' rule)."""
    raw = None
    lo, hi = float(min(height, width)), float(max(height, width))
    if hi / lo * edge > max_edge:
        raw = max_edge * lo / hi
        edge = int(round(raw))
    if (height <= width and height == edge) or (width <= height and width == edge):
        return (height, width)
    scale_from = raw if raw is not None else edge
    if width < height:
        return (int(scale_from * height / width), edge)
    return (edge, int(scale_from * width / height))


def _center_crop(chw: np.ndarray, crop: tuple[int, int], *, timm: bool, fill: tuple[int, ...]) -> np.ndarray:
    """Crop the middle (crop_h, crop_w) of a [C, H, W] array, padding with ``fill`` if it is smaller.

    transformers floors the offset and pads the extra odd pixel before the picture; torchvision
    (``timm=True``) rounds the offset half to even and pads the extra pixel after it.
    """
    _, height, width = chw.shape
    crop_h, crop_w = crop
    if timm:
        if crop_h > height or crop_w > width:
            top, left = max(0, crop_h - height) // 2, max(0, crop_w - width) // 2
            chw = _padded(chw, max(crop_h, height), max(crop_w, width), top, left, fill)
            height, width = chw.shape[1:]
        top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
        return chw[:, top : top + crop_h, left : left + crop_w]
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    if top >= 0 and left >= 0:
        return chw[:, top : top + crop_h, left : left + crop_w]
    # Too small on some side: place it on a canvas first (rounding as transformers does).
    pad_h, pad_w = max(crop_h, height), max(crop_w, width)
    off_h, off_w = math.ceil((pad_h - height) / 2), math.ceil((pad_w - width) / 2)
    canvas = _padded(chw, pad_h, pad_w, off_h, off_w, fill)
    top, left = top + off_h, left + off_w  # the same window, in canvas coordinates
    return canvas[:, max(0, top) : min(pad_h, top + crop_h), max(0, left) : min(pad_w, left + crop_w)]


def _padded(chw: np.ndarray, height: int, width: int, top: int, left: int, fill: tuple[int, ...]) -> np.ndarray:
    canvas = np.empty((chw.shape[0], height, width), dtype=chw.dtype)
    canvas[:] = np.asarray(fill, dtype=chw.dtype)[:, None, None]
    canvas[:, top : top + chw.shape[1], left : left + chw.shape[2]] = chw
    return canvas


def _as_spec(spec: Any) -> PreprocessSpec:
    if isinstance(spec, PreprocessSpec):
        return spec
    if isinstance(spec, Mapping):
        return PreprocessSpec.from_dict(spec)
    if hasattr(spec, "image_size"):
        return PreprocessSpec.for_config(spec)
    raise TypeError(
        "spec must be a ViTConfig (or any object with image_size and num_channels), a "
        f"PreprocessSpec or a preprocessor_config dict, got {type(spec).__name__}"
    )


def _as_image(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        if image.mode == "RGB":
            return image
        image.load()
        return to_rgb(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(
                f"A numpy image must be uint8 (0..255), got {image.dtype}; "
                "for floats in [0, 1] pass (array * 255).round().astype(np.uint8)."
            )
        if image.ndim == 2:
            return Image.fromarray(image, mode="L").convert("RGB")
        if image.ndim == 3 and image.shape[2] in (3, 4):
            pil = Image.fromarray(np.ascontiguousarray(image), mode="RGB" if image.shape[2] == 3 else "RGBA")
            return to_rgb(pil)
        raise ValueError(f"A numpy image must be H x W or H x W x 3 (or x 4), got shape {image.shape}")
    raise TypeError(f"image must be a PIL image or a uint8 numpy array, got {type(image).__name__}")


def to_pixel_values(image: Image.Image | np.ndarray, spec: Any) -> torch.Tensor:
    """Prepare one picture for the model: a float32 tensor ``[1, C, H, W]``.

    ``image`` is a PIL image (any mode; non-RGB is converted as ``load_image`` does) or a uint8
    numpy array H x W x 3. ``spec`` is a ViT config (``image_size``, ``num_channels``: bilinear
    resize to a square, rescale by 1/255, normalise with mean = std = 0.5), a
    :class:`PreprocessSpec`, or a ``preprocessor_config.json`` dict. The numbers equal those of
    transformers' ``ViTImageProcessorPil`` with the same settings, or of timm's eval transform
    for a spec with ``convention="timm"``.
    """
    spec = _as_spec(spec)
    pil = _as_image(image)
    if spec.num_channels == 1:
        pil = pil.convert("L")
    if spec.do_resize:
        height, width = spec.resize_size(pil.height, pil.width)
        pil = pil.resize((width, height), resample=spec.resample)  # what torchvision's Resize does too
    pixels = np.asarray(pil)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    chw = rearrange(pixels, "h w c -> c h w")
    if spec.do_center_crop:
        chw = _center_crop(chw, spec.crop_size, timm=spec.convention == "timm", fill=spec.pad_fill)
    if spec.do_rescale:
        # float64 product then float32, like transformers; for 1/255 this gives the same 256 float32
        # values as torchvision's ToTensor (a float32 division by 255)
        values = (chw.astype(np.float64) * spec.rescale_factor).astype(np.float32)
    else:
        values = chw.astype(np.float32)
    if spec.do_normalize:
        mean = np.asarray(spec.image_mean, dtype=np.float32)[:, None, None]
        std = np.asarray(spec.image_std, dtype=np.float32)[:, None, None]
        values = (values - mean) / std
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None]  # [1, C, H, W]
