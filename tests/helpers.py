"""Model, picture and figure helpers shared by the tests: one definition each, imported where needed.

(AppTest helpers, which start and drive the app, are in ``app_helpers.py``.)
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vit_explain import ViTConfig, ViTForImageClassification, ViTModel

# A tiny ViT: 4 x 4 patches of 8 px + CLS = 17 tokens, width 32, 4 heads of 8, 2 layers, MLP 37 (not a
# multiple of anything, so a transposed weight cannot pass by its shape).
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=32, patch_size=8)


# ------------------------------------------------------------------------------------------ models
def pixels(size: int = 32, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A reproducible batch of random pictures ``[batch, 3, size, size]``."""
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def our_model(seed: int = 0, *, labels: int = 5, **changes) -> ViTForImageClassification:
    """Our classifier at ``TINY`` (with ``changes``), random weights from ``seed``, labels "class i", eval mode."""
    torch.manual_seed(seed)
    config = ViTConfig(**{**TINY, **changes}, id2label={i: f"class {i}" for i in range(labels)})
    return ViTForImageClassification(config).eval()


def jitter(model: torch.nn.Module, scale: float = 0.05) -> torch.nn.Module:
    """Add ``scale`` x N(0, 1) to every parameter (norms and biases too, so a wrong mapping cannot hide)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model.eval()


def our_vit(hidden: int, heads: int, *, labels: int = 4, image: int = 32, patch: int = 16, seed: int = 0):
    """Our ViT at width ``hidden`` with ``heads`` heads (2 layers, timm's layer-norm eps), every weight random;
    a classifier with ``labels`` classes, or a bare ViTModel without pooler when ``labels`` is 0."""
    torch.manual_seed(seed)
    config = ViTConfig(hidden_size=hidden, num_attention_heads=heads, num_hidden_layers=2, intermediate_size=64,
                       image_size=image, patch_size=patch, layer_norm_eps=1e-6, num_labels=labels)
    model = ViTForImageClassification(config) if labels else ViTModel(config, add_pooling_layer=False)
    return jitter(model)


def to_timm(model) -> dict[str, torch.Tensor]:
    """Our (Hugging Face named) weights under timm's names, with q, k, v fused into one qkv projection."""
    sd = model.state_dict()
    base = "vit." if isinstance(model, ViTForImageClassification) else ""
    out = {
        "cls_token": sd[f"{base}embeddings.cls_token"],
        "pos_embed": sd[f"{base}embeddings.position_embeddings"],
        "patch_embed.proj.weight": sd[f"{base}embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd[f"{base}embeddings.patch_embeddings.projection.bias"],
        "norm.weight": sd[f"{base}layernorm.weight"], "norm.bias": sd[f"{base}layernorm.bias"],
    }
    for i in range(model.config.num_hidden_layers):
        h, t = f"{base}encoder.layer.{i}", f"blocks.{i}"
        att = f"{h}.attention.attention"
        for part in ("weight", "bias"):
            out[f"{t}.norm1.{part}"] = sd[f"{h}.layernorm_before.{part}"]
            out[f"{t}.attn.qkv.{part}"] = torch.cat([sd[f"{att}.query.{part}"], sd[f"{att}.key.{part}"],
                                                     sd[f"{att}.value.{part}"]])
            out[f"{t}.attn.proj.{part}"] = sd[f"{h}.attention.output.dense.{part}"]
            out[f"{t}.norm2.{part}"] = sd[f"{h}.layernorm_after.{part}"]
            out[f"{t}.mlp.fc1.{part}"] = sd[f"{h}.intermediate.dense.{part}"]
            out[f"{t}.mlp.fc2.{part}"] = sd[f"{h}.output.dense.{part}"]
    if isinstance(model, ViTForImageClassification):
        out["head.weight"], out["head.bias"] = sd["classifier.weight"], sd["classifier.bias"]
    return {k: v.clone().contiguous() for k, v in out.items()}


def timm_config(architecture: str, model, **extra) -> dict:
    """The config.json timm writes beside its weights on the Hub, for ``model``."""
    image = model.config.image_size
    config = {
        "architecture": architecture,
        "num_classes": model.config.num_labels if isinstance(model, ViTForImageClassification) else 0,
        "num_features": model.config.hidden_size,
        "global_pool": "token",
        "pretrained_cfg": {
            "tag": "test", "input_size": [3, image, image], "fixed_input_size": True, "interpolation": "bicubic",
            "crop_pct": 0.875, "crop_mode": "center", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "num_classes": model.config.num_labels, "first_conv": "patch_embed.proj", "classifier": "head",
        },
    }
    config.update(extra)
    return config


class CodeInPickle:
    """Unpickling this runs code: it writes ``marker`` (the word "pwned"). A file holding one is a hostile checkpoint;
    the marker's existence afterwards is proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


# ------------------------------------------------------------------------------------------ pictures
def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    """``im`` saved as ``fmt`` ("PNG", "JPEG", ...), as bytes."""
    buffer = io.BytesIO()
    im.save(buffer, fmt, **kw)
    return buffer.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB picture of uniform random pixels."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def noise_png(seed: int, size: int = 80) -> bytes:
    """A square PNG of random pixels, different for every seed."""
    return encode(noise(size, size, seed), "PNG")


def gradient_jpeg(size: tuple[int, int] = (90, 60), blue: int = 90) -> bytes:
    """A JPEG of ``size`` (width, height): red grows left to right, green top to bottom, blue constant."""
    y, x = np.mgrid[0:size[1], 0:size[0]]
    img = np.stack([x * 255 // size[0], y * 255 // size[1], np.full_like(x, blue)], -1).astype(np.uint8)
    return encode(Image.fromarray(img), "JPEG")


def animated_gif(colours=((255, 0, 0), (0, 0, 255), (0, 255, 0)), size: int = 48) -> bytes:
    """An animated GIF, one flat frame per colour (the first one red by default)."""
    frames = [Image.new("RGB", (size, size), c) for c in colours]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header claims a huge picture (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b"")


def picture_of(uri: str, *, formats: tuple[str, ...] = ("png", "jpeg")) -> np.ndarray:
    """The RGB pixels of a ``data:image/...;base64,`` URI (as a figure carries a picture); its format must be one of
    ``formats``."""
    header, data = uri.split(",", 1)
    assert header in tuple(f"data:image/{f};base64" for f in formats), header
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


# ------------------------------------------------------------------------------------------ figures
def figure_json(fig) -> dict:
    """A Plotly figure as the JSON the browser receives."""
    import plotly.io as pio

    return json.loads(pio.to_json(fig, validate=False))


def figure_title(fig) -> str:
    """The title text of a Plotly figure object."""
    return fig.layout.title.text


def plotly_array(value) -> np.ndarray:
    """A Plotly typed array (base64 'bdata') or plain list from a figure's JSON, as numpy."""
    if isinstance(value, dict) and "bdata" in value:
        data = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        if "shape" in value:
            shape = value["shape"]
            shape = [int(n) for n in shape.split(",")] if isinstance(shape, str) else shape
            data = data.reshape(shape)
        return data
    return np.asarray(value)


# ---------------------------------------------------------------------------------- transformers references
#: A small transformers architecture for parity tests: no dropout, the eager attention (attention maps out).
HF_SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0, attn_implementation="eager")


def randomise(model, seed=0):
    """Every parameter random (layer scale, tokens and norms too), so nothing passes by being 0 or 1; eval mode."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    return model.eval()


def cifar10_archive():
    """The CIFAR-10 archive (see README, The bundled models; VIT_EXPLAIN_CIFAR10): the variable's path, else the
    default locations beside the checkout; None when it is not there (tests that need it skip)."""
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    candidates = [os.environ.get("VIT_EXPLAIN_CIFAR10"), root.parent / "shared" / "data" / "cifar10-jpeg.tar.gz",
                  root.parent.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"]
    return next((Path(c) for c in candidates if c and Path(c).exists()), None)
