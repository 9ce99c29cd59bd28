"""timm's vit_* state dicts converted to the Hugging Face key names."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch

from ..config import ViTConfig
from .common import CheckpointError, _names
from .files import _unwrap_state_dict
from .resampling import interpolate_position_embeddings

_TIMM_REFUSALS = [
    (r"^fc_norm\.", "it pools by averaging the patch tokens (fc_norm, global_pool='avg'); the classic ViT classifies from the CLS token"),
    (r"^dist_token$|^head_dist\.", "it is a distilled DeiT with a second (distillation) token and head; "
     "its transformers version (e.g. facebook/deit-base-distilled-patch16-224) loads exactly"),
    (r"^reg_token$", "it has register tokens; DINOv2 with registers loads in its transformers version "
     "(e.g. facebook/dinov2-with-registers-small)"),
    (r"\.ls[12]\.", "it uses layer scale (ls1/ls2, as in DeiT-III or CaiT)"),
    (r"\.(q_norm|k_norm)\.|\.attn\.norm\.", "it normalises queries and keys (qk-norm)"),
    (r"\.attn\.(q_bias|v_bias)$", "it has separate q/v biases (BEiT style)"),
    (r"^attn_pool\.", "it pools with attention (MAP head)"),
    (r"\.norm_pre\.|^norm_pre\.", "it has a pre-norm before the blocks (CLIP style)"),
]


#: Head counts by the size word in a timm architecture name (vit_small_patch16_224 -> 6).
_SIZE_HEADS = {"tiny": 3, "small": 6, "medium": 8, "base": 12, "large": 16, "huge": 16, "giant": 16, "gigantic": 16}
#: Head counts of timm's standard widths, when nothing names the size.
TIMM_WIDTH_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}
#: model_args a timm config may carry that the classic ViT honours (anything else is refused).
_PLAIN_MODEL_ARGS = {"patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias", "img_size", "in_chans",
                     "num_classes", "global_pool", "class_token", "no_embed_class", "dynamic_img_size", "drop_rate",
                     "pos_drop_rate", "attn_drop_rate", "proj_drop_rate", "drop_path_rate", "pretrained_cfg_overlay"}
#: Parts of timm architecture names of ViTs that are not the classic one, with what they are.
_TIMM_NAME_REFUSALS = [
    ("siglip", "a SigLIP image tower (attention pooling)"), ("clip", "a CLIP image tower (pre-norm)"),
    ("dinov2", "a DINOv2 in timm's format (layer scale; load the transformers version, e.g. facebook/dinov2-small)"),
    ("_reg", "a ViT with register tokens in timm's format"), ("eva", "an EVA model (rotary embeddings, SwiGLU)"),
    ("beit", "a BEiT"), ("deit3", "a DeiT-III (layer scale)"), ("distilled", "a distilled DeiT in timm's format "
     "(load the transformers version, e.g. facebook/deit-base-distilled-patch16-224)"),
    ("_gap", "a ViT with average pooling"), ("_map", "a ViT with attention pooling"), ("relpos", "a ViT with relative positions"),
    ("rope", "a ViT with rotary embeddings"), ("resnet", "a hybrid ViT with a ResNet stem"), ("_r26", "a hybrid ViT"),
    ("_r50", "a hybrid ViT"), ("naflex", "a NaFlex ViT"), ("samvit", "a SAM image encoder"), ("xp_", "a ViT variant"),
]


def is_timm_config(raw: Mapping[str, Any]) -> bool:
    """A ``config.json`` written by timm (``architecture``, ``pretrained_cfg``) rather than transformers."""
    return "architecture" in raw and "model_type" not in raw


def timm_num_heads(hidden: int, *, model_args: Mapping[str, Any] | None = None, architecture: str | None = None,
                   notes: list[str]) -> int:
    """The head count a timm ViT of this width was built with, or CheckpointError asking for num_heads=.

    From ``model_args["num_heads"]``, else the size in the architecture name (tiny 3, small 6, base
    12, large/huge/giant 16), else the standard width table; never a guess.
    """
    if model_args and model_args.get("num_heads"):
        return int(model_args["num_heads"])
    if architecture:
        for word, heads in _SIZE_HEADS.items():
            if re.search(rf"(^|_){word}(_|$)", architecture):
                notes.append(f"{heads} attention heads, as every timm '{word}' ViT ({architecture}) has.")
                return heads
    heads = TIMM_WIDTH_HEADS.get(hidden)
    if heads is None:
        raise CheckpointError(
            f"This timm ViT is {hidden} wide, which is not a standard width "
            f"({', '.join(f'{w} -> {h}' for w, h in TIMM_WIDTH_HEADS.items())} heads), and nothing in it names its "
            "head count (timm weights never store it). Pass num_heads=... to load it."
        )
    notes.append(f"The head count is not stored in timm weights; {heads} heads is timm's standard for width {hidden}.")
    return heads


def _spec_from_pretrained_cfg(cfg: Mapping[str, Any], what: str) -> tuple[Any, str]:
    """timm's eval transform (``create_transform(**resolve_data_config(pretrained_cfg=cfg))``) as a
    PreprocessSpec, and the sentence that describes it."""
    from ..preprocess import PreprocessSpec

    try:
        spec = PreprocessSpec.from_timm(cfg)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{what}: its pretrained_cfg preprocessing cannot be reproduced exactly: {exc}") from exc
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    return spec, f"{spec.describe()}; crop_pct {crop_pct:g}, crop_mode '{cfg.get('crop_mode') or 'center'}'"


def read_timm_config(raw: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Check a timm ``config.json`` and return what loading needs, or refuse the model by name.

    Returns ``architecture``, ``model_args``, ``id2label`` (from ``label_names``, else ImageNet-1k's
    names for a 1000-class head), ``spec`` and ``spec_text`` (from ``pretrained_cfg``).
    """
    from .imagenet import IMAGENET_1K_LABELS

    from .families import SUPPORTED_TEXT

    architecture = str(raw.get("architecture") or "")
    name = architecture.split(".")[0]
    if not name.startswith(("vit_", "deit_")):
        raise CheckpointError(f"{what} is timm's {architecture or 'unnamed model'}, not a ViT; this app cannot run it. "
                              + SUPPORTED_TEXT)
    for part, why in _TIMM_NAME_REFUSALS:
        if part in name:
            raise CheckpointError(f"{what} is timm's {architecture}: {why}, which this app cannot run exactly. "
                                  + SUPPORTED_TEXT)
    model_args = dict(raw.get("model_args") or {})
    pool = model_args.get("global_pool", raw.get("global_pool", "token"))
    if pool not in ("token", None, ""):
        raise CheckpointError(f"{what} ({architecture}) pools with global_pool={pool!r}; the classic ViT classifies "
                              "from the class token (global_pool='token'), the only pooling this app runs.")
    if model_args.get("class_token") is False:
        raise CheckpointError(f"{what} ({architecture}) has no class token (class_token=False); this app needs one.")
    odd = sorted(k for k, v in model_args.items() if k not in _PLAIN_MODEL_ARGS and v not in (None, False, 0, ""))
    if odd:
        raise CheckpointError(f"{what} ({architecture}) is built with model_args this app does not run: "
                              f"{', '.join(f'{k}={model_args[k]!r}' for k in odd)}. " + SUPPORTED_TEXT)
    num_classes = int(raw.get("num_classes", model_args.get("num_classes", 0)) or 0)
    labels = raw.get("label_names")
    id2label: dict[int, str] | None = None
    if isinstance(labels, (list, tuple)) and labels:
        if num_classes and len(labels) != num_classes:
            raise CheckpointError(f"{what}: label_names has {len(labels)} names but num_classes is {num_classes}.")
        id2label = {i: str(n) for i, n in enumerate(labels)}
    elif num_classes == 1000:
        id2label = dict(enumerate(IMAGENET_1K_LABELS))
    pretrained = raw.get("pretrained_cfg") or {}
    spec, spec_text = _spec_from_pretrained_cfg(pretrained, what) if pretrained else (None, "")
    return dict(architecture=architecture, model_args=model_args, id2label=id2label, spec=spec, spec_text=spec_text,
                num_classes=num_classes)


def from_timm_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    *,
    num_heads: int | None = None,
    image_size: int | None = None,
    layer_norm_eps: float = 1e-6,
    id2label: Mapping[int, str] | None = None,
    architecture: str | None = None,
    model_args: Mapping[str, Any] | None = None,
    _notes: list[str] | None = None,
) -> tuple[ViTConfig, dict[str, torch.Tensor]]:
    """Convert a timm ``vit_*`` state dict to (ViTConfig, Hugging Face state dict).

    Returns a config and a state dict rather than a model, so the caller chooses what to build
    (``load_checkpoint(state_dict)`` does the whole job). The fused ``attn.qkv`` projection is split
    into query, key and value (in that order); ``head`` becomes ``classifier`` (keys prefixed
    ``vit.``, for a ViTForImageClassification); without a head (absent or 0 classes) the result is
    a ViTModel state dict, whose pooler is timm's ``pre_logits.fc`` if the model has one.

    The weights do not record the head count: without ``num_heads`` it comes from ``model_args``
    (timm's config.json), the size in ``architecture`` (``vit_small_...`` -> 6), or timm's standard
    widths (192 -> 3, 384 -> 6, 768 -> 12, 1024 and 1280 -> 16); any other width is refused with a
    message asking for ``num_heads``, never guessed. ``layer_norm_eps`` stays at timm's 1e-6.
    ``image_size`` other than the one the weights were trained at interpolates the position
    embeddings to the new grid. Models that are not the classic ViT (average pooling, layer
    scale, distillation or register tokens, ...) raise CheckpointError naming the feature.
    """
    notes = _notes if _notes is not None else []
    sd = _unwrap_state_dict(state_dict, "the timm state dict")
    for pattern, why in _TIMM_REFUSALS:
        hits = [k for k in sd if re.search(pattern, k)]
        if hits:
            raise CheckpointError(
                f"This timm model is not the classic ViT architecture: {why} ({_names(hits, 3)})."
            )
    for key in ("patch_embed.proj.weight", "pos_embed", "cls_token", "norm.weight"):
        if key not in sd:
            hint = " (a model without a CLS token is not supported)" if key == "cls_token" else ""
            raise CheckpointError(f"The timm state dict has no {key}{hint}; it is not a timm ViT.")

    proj = sd["patch_embed.proj.weight"]  # [D, C, P, P]
    if proj.ndim != 4 or proj.shape[2] != proj.shape[3]:
        raise CheckpointError(f"patch_embed.proj.weight should be [D, C, P, P] with square patches, got {list(proj.shape)}.")
    hidden, channels, patch = int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[2])
    head_w = sd.get("head.weight")
    has_head = head_w is not None and head_w.numel() > 0
    has_pre_logits = "pre_logits.fc.weight" in sd
    if has_head and has_pre_logits:
        raise CheckpointError(
            "This timm model has a pre-logits layer (pre_logits.fc) before its classifier head; "
            "the Hugging Face ViT classifier has no such layer. Drop head.* to load it as a "
            "ViTModel whose pooler is that layer."
        )

    pos = sd["pos_embed"]  # [1, T, D]
    tokens = int(pos.shape[1])
    grid = math.isqrt(tokens - 1)
    if grid * grid != tokens - 1:
        if math.isqrt(tokens) ** 2 == tokens:
            # timm's no_embed_class: the CLS token gets no position embedding; zero is exactly that.
            pos = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)
            grid = math.isqrt(tokens)
            notes.append("The CLS token had no position embedding (no_embed_class); a zero one was added.")
        else:
            raise CheckpointError(f"pos_embed has {tokens} tokens, which is not 1 + a square grid.")
    trained_size = grid * patch
    if image_size is not None and image_size != trained_size:
        if image_size % patch:
            raise CheckpointError(f"image_size {image_size} is not a multiple of the patch size {patch}.")
        pos = interpolate_position_embeddings(pos, image_size // patch)
        notes.append(f"Position embeddings interpolated from {grid}x{grid} to {image_size // patch}x{image_size // patch} patches.")
    layer_ids = sorted({int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
    if not layer_ids:
        raise CheckpointError("The timm state dict has no blocks.*: no transformer layers to convert.")
    if layer_ids != list(range(len(layer_ids))):
        raise CheckpointError(f"The timm blocks are not numbered 0..N-1: {layer_ids}.")
    if num_heads is None:
        num_heads = timm_num_heads(hidden, model_args=model_args, architecture=architecture, notes=notes)
    fc1 = sd.get("blocks.0.mlp.fc1.weight")
    if fc1 is None:
        raise CheckpointError("blocks.0.mlp.fc1.weight is missing; this is not a timm ViT block.")
    labels = dict(id2label) if id2label else {}
    num_labels = int(head_w.shape[0]) if has_head else 0
    if labels and len(labels) != num_labels:
        raise CheckpointError(f"id2label names {len(labels)} classes but the head has {num_labels} outputs.")
    try:
        config = ViTConfig(
            hidden_size=hidden,
            num_hidden_layers=len(layer_ids),
            num_attention_heads=num_heads,
            intermediate_size=int(fc1.shape[0]),
            hidden_act="gelu",
            layer_norm_eps=layer_norm_eps,
            image_size=image_size or trained_size,
            patch_size=patch,
            num_channels=channels,
            qkv_bias="blocks.0.attn.qkv.bias" in sd,
            id2label=labels,
            num_labels=num_labels if has_head else None,
        )
    except ValueError as exc:
        raise CheckpointError(f"The timm weights do not make a valid ViT config: {exc}") from exc

    used: set[str] = set()
    out: dict[str, torch.Tensor] = {}

    def take(key: str) -> torch.Tensor:
        if key not in sd:
            raise CheckpointError(f"The timm state dict is missing {key}.")
        used.add(key)
        return sd[key]

    def copy_pair(timm_prefix: str, hf_prefix: str, bias: bool = True) -> None:
        out[f"{hf_prefix}.weight"] = take(f"{timm_prefix}.weight")
        if bias:
            out[f"{hf_prefix}.bias"] = take(f"{timm_prefix}.bias")

    take("cls_token")
    take("pos_embed")
    out["embeddings.cls_token"] = sd["cls_token"]
    out["embeddings.position_embeddings"] = pos
    copy_pair("patch_embed.proj", "embeddings.patch_embeddings.projection")
    for i in layer_ids:
        t, h = f"blocks.{i}", f"encoder.layer.{i}"
        copy_pair(f"{t}.norm1", f"{h}.layernorm_before")
        qkv_w = take(f"{t}.attn.qkv.weight")  # [3D, D], rows: all of q, then k, then v
        if tuple(qkv_w.shape) != (3 * hidden, hidden):
            raise CheckpointError(f"{t}.attn.qkv.weight should be [{3 * hidden}, {hidden}], got {list(qkv_w.shape)}.")
        for name, part in zip(("query", "key", "value"), qkv_w.chunk(3, dim=0)):
            out[f"{h}.attention.attention.{name}.weight"] = part
        if config.qkv_bias:
            for name, part in zip(("query", "key", "value"), take(f"{t}.attn.qkv.bias").chunk(3, dim=0)):
                out[f"{h}.attention.attention.{name}.bias"] = part
        copy_pair(f"{t}.attn.proj", f"{h}.attention.output.dense")
        copy_pair(f"{t}.norm2", f"{h}.layernorm_after")
        copy_pair(f"{t}.mlp.fc1", f"{h}.intermediate.dense")
        copy_pair(f"{t}.mlp.fc2", f"{h}.output.dense")
    copy_pair("norm", "layernorm")
    if has_head:
        out = {f"vit.{k}": v for k, v in out.items()}
        copy_pair("head", "classifier")
    else:
        used.update(k for k in ("head.weight", "head.bias") if k in sd)  # 0-class heads
        if has_pre_logits:
            copy_pair("pre_logits.fc", "pooler.dense")
    left = sorted(set(sd) - used)
    if left:
        raise CheckpointError(f"The timm state dict has keys this converter does not know: {_names(left)}.")
    return config, {k: v.detach().clone().contiguous() for k, v in out.items()}


