"""Which checkpoints of the ViT family run here, and how their key names map onto the seed classes.

Every family below runs exactly (parity with its transformers class is tested): it is the classic
ViT with some options of ViTConfig switched on. Anything else is refused from its ``config.json``
alone, naming the architecture, so a Hub download stops before any weight file is requested.

On disk each family keeps its transformers key names (``save_pretrained``'s): DeiT prefixes the
encoder with ``deit.`` and, with a teacher, calls the CLS head ``cls_classifier``; DINOv2 names
the layer norms ``norm1``/``norm2`` and the MLP ``mlp.fc1``/``mlp.fc2``. :func:`to_seed_keys`
and :func:`to_family_keys` translate one-to-one, so loading stays strict.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .common import CheckpointError

#: architectures (config.json "architectures") -> what they are, for messages.
SUPPORTED_ARCHITECTURES: dict[str, str] = {
    "ViTModel": "ViT encoder",
    "ViTForImageClassification": "ViT classifier",
    "DeiTModel": "DeiT encoder (CLS + distillation token)",
    "DeiTForImageClassification": "DeiT classifier (CLS head only)",
    "DeiTForImageClassificationWithTeacher": "distilled DeiT (CLS and distillation heads averaged)",
    "Dinov2Model": "DINOv2 encoder (layer scale, resized position embeddings)",
    "Dinov2WithRegistersModel": "DINOv2 with registers (encoder)",
}
SUPPORTED_MODEL_TYPES = {"vit", "deit", "dinov2", "dinov2_with_registers"}

#: How this app describes what it can run, at the end of every refusal.
SUPPORTED_TEXT = (
    "Supported: ViT (ViTModel, ViTForImageClassification), DeiT including distilled DeiT "
    "(DeiTModel, DeiTForImageClassification, DeiTForImageClassificationWithTeacher), DINOv2 and "
    "DINOv2 with registers (Dinov2Model, Dinov2WithRegistersModel, plain MLP), and timm's classic "
    "vit_*/deit_* models (class-token pooling)."
)

#: Known names of other architectures, for a message that says what the checkpoint is.
_OTHER_FAMILIES = {
    "clip": "CLIP", "siglip": "SigLIP", "beit": "BEiT", "data2vec": "data2vec-vision", "vit_mae": "ViT-MAE",
    "vit_msn": "ViT-MSN", "vit_hybrid": "hybrid ViT (ResNet stem)", "swin": "Swin Transformer", "convnext": "ConvNeXt",
    "dinov3_vit": "DINOv3", "ijepa": "I-JEPA", "levit": "LeViT", "pvt": "PVT", "mobilevit": "MobileViT",
}


def check_hf_config(raw: Mapping[str, Any], what: str) -> None:
    """Refuse a transformers ``config.json`` whose model cannot run here, saying why and what can."""
    model_type = raw.get("model_type")
    architectures = list(raw.get("architectures") or [])
    named = ", ".join(architectures) or "no architectures listed"
    if model_type is not None and model_type not in SUPPORTED_MODEL_TYPES:
        family = _OTHER_FAMILIES.get(str(model_type), str(model_type))
        raise CheckpointError(f"{what} is a {family} model (model_type {model_type!r}, {named}), which this app "
                              f"cannot run. {SUPPORTED_TEXT}")
    unsupported = [a for a in architectures if a not in SUPPORTED_ARCHITECTURES]
    if unsupported:
        why = ""
        if any(a.startswith("Dinov2") and a.endswith("ForImageClassification") for a in unsupported):
            why = " (its classifier reads the CLS token and the mean of the patch tokens together; only the encoder is supported)"
        raise CheckpointError(f"{what} is a {', '.join(unsupported)}{why}, which this app cannot run. {SUPPORTED_TEXT}")
    if model_type in ("dinov2", "dinov2_with_registers"):
        if raw.get("use_swiglu_ffn"):
            raise CheckpointError(
                f"{what} is a DINOv2 with a SwiGLU MLP (use_swiglu_ffn, as in dinov2-giant), which this app "
                f"cannot run: only the plain GELU MLP of the small, base and large models. {SUPPORTED_TEXT}")
    if raw.get("hidden_act") not in (None, "gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "quick_gelu",
                                     "relu", "silu", "swish", "tanh", "sigmoid"):
        raise CheckpointError(f"{what} uses the activation {raw.get('hidden_act')!r}, which this app cannot run.")


# DINOv2's names of the layer parts (left) and the seed's (right), after "encoder.layer.<i>.".
_DINOV2_PARTS = [("norm1.", "layernorm_before."), ("norm2.", "layernorm_after."),
                 ("mlp.fc1.", "intermediate.dense."), ("mlp.fc2.", "output.dense.")]
_LAYER = re.compile(r"^(encoder\.layer\.\d+\.)(.*)$")


def _swap(key: str, reverse: bool) -> str:
    m = _LAYER.match(key)
    if not m:
        return key
    head, rest = m.groups()
    for family, seed in _DINOV2_PARTS:
        old, new = (seed, family) if reverse else (family, seed)
        if rest.startswith(old):
            return head + new + rest[len(old):]
    return key


def to_seed_keys(state: Mapping[str, Any], model_type: str) -> dict[str, Any]:
    """A family's checkpoint keys -> this package's module names (``vit.``, ``classifier`` ...)."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        new = key
        if model_type == "deit":
            if new.startswith("deit."):
                new = "vit." + new[len("deit."):]
            elif new.startswith("cls_classifier."):
                new = "classifier." + new[len("cls_classifier."):]
        elif model_type in ("dinov2", "dinov2_with_registers"):
            prefix = "dinov2." if new.startswith("dinov2.") else ""
            new = prefix + _swap(new[len(prefix):], reverse=False)
        out[new] = value
    return out


def to_family_keys(state: Mapping[str, Any], model_type: str, *, distillation_head: bool = False) -> dict[str, Any]:
    """The inverse of :func:`to_seed_keys`: the key names transformers' class of that family uses."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        new = key
        if model_type == "deit":
            if new.startswith("vit."):
                new = "deit." + new[len("vit."):]
            elif new.startswith("classifier.") and distillation_head:
                new = "cls_classifier." + new[len("classifier."):]
        elif model_type in ("dinov2", "dinov2_with_registers"):
            new = _swap(new, reverse=True)
        out[new] = value
    return out


def architecture_name(model_type: str, *, classifier: bool, distillation_head: bool = False) -> str:
    """The transformers class that reads a checkpoint of this family and kind."""
    if model_type == "deit":
        return ("DeiTForImageClassificationWithTeacher" if distillation_head else "DeiTForImageClassification") \
            if classifier else "DeiTModel"
    if model_type == "dinov2":
        return "Dinov2Model"
    if model_type == "dinov2_with_registers":
        return "Dinov2WithRegistersModel"
    return "ViTForImageClassification" if classifier else "ViTModel"
