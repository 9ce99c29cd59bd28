"""timm's vit_* state dicts converted to the Hugging Face key names."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch

from ..config import ViTConfig
from .common import CheckpointError, _names
from .files import _unwrap_state_dict
from .resampling import interpolate_position_embeddings

_TIMM_REFUSALS = [
    (r"^fc_norm\.", "it pools by averaging the patch tokens (fc_norm, global_pool='avg'); the classic ViT classifies from the CLS token"),
    (r"^dist_token$|^head_dist\.", "it is a distilled DeiT with a second (distillation) token and head"),
    (r"^reg_token$", "it has register tokens"),
    (r"\.ls[12]\.", "it uses layer scale (ls1/ls2, as in DeiT-III or CaiT)"),
    (r"\.(q_norm|k_norm)\.|\.attn\.norm\.", "it normalises queries and keys (qk-norm)"),
    (r"\.attn\.(q_bias|v_bias)$", "it has separate q/v biases (BEiT style)"),
    (r"^attn_pool\.", "it pools with attention (MAP head)"),
    (r"\.norm_pre\.|^norm_pre\.", "it has a pre-norm before the blocks (CLIP style)"),
]


def from_timm_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    *,
    num_heads: int | None = None,
    image_size: int | None = None,
    layer_norm_eps: float = 1e-6,
    id2label: Mapping[int, str] | None = None,
    _notes: list[str] | None = None,
) -> tuple[ViTConfig, dict[str, torch.Tensor]]:
    """Convert a timm ``vit_*`` state dict to (ViTConfig, Hugging Face state dict).

    Returns a config and a state dict rather than a model, so the caller chooses what to build
    (``load_checkpoint(state_dict)`` does the whole job). The fused ``attn.qkv`` projection is split
    into query, key and value (in that order); ``head`` becomes ``classifier`` (keys prefixed
    ``vit.``, for a ViTForImageClassification); without a head (absent or 0 classes) the result is
    a ViTModel state dict, whose pooler is timm's ``pre_logits.fc`` if the model has one.

    The weights do not record the head count: ``num_heads`` defaults to hidden size / 64, as in
    every standard timm ViT (Ti: 3, S: 6, B: 12, L: 16). ``layer_norm_eps`` stays at timm's 1e-6.
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
        if hidden % 64:
            raise CheckpointError(
                f"Hidden size {hidden} is not a multiple of 64, so the head count cannot be assumed; pass num_heads=..."
            )
        num_heads = hidden // 64
        notes.append(f"Assumed {num_heads} attention heads of 64 dimensions (timm weights do not record it).")
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


