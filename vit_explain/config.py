"""ViTConfig: the numbers that decide a Vision Transformer's shape.

Field names and defaults follow the seed notes (ViT-B/16 at 224) and the Hugging Face
``config.json`` format, so a Hub checkpoint's config reads straight in with :meth:`ViTConfig.from_dict`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

#: Activation names this implementation understands (the ones Hugging Face ViT checkpoints use).
SUPPORTED_ACTIVATIONS = (
    "gelu",
    "gelu_new",
    "gelu_fast",
    "gelu_pytorch_tanh",
    "quick_gelu",
    "relu",
    "silu",
    "swish",
    "tanh",
    "sigmoid",
)


@dataclass
class ViTConfig:
    """Hyper-parameters of the ViT (seed class 1). Validates itself on creation."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    qkv_bias: bool = True
    id2label: dict[int, str] = field(default_factory=dict)
    num_labels: int | None = None

    def __post_init__(self) -> None:
        self.id2label = {int(k): str(v) for k, v in (self.id2label or {}).items()}
        if self.id2label:
            if self.num_labels is not None and self.num_labels != len(self.id2label):
                raise ValueError(
                    f"num_labels is {self.num_labels} but id2label names {len(self.id2label)} "
                    "classes; give one or make them agree."
                )
            if sorted(self.id2label) != list(range(len(self.id2label))):
                raise ValueError("id2label keys must be 0, 1, ..., num_labels - 1.")
            self.num_labels = len(self.id2label)
        else:
            # Same default as Hugging Face: two placeholder labels.
            self.num_labels = 2 if self.num_labels is None else int(self.num_labels)
            self.id2label = {i: f"LABEL_{i}" for i in range(self.num_labels)}
        self.validate()

    # ------------------------------------------------------------------ derived sizes
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def grid_size(self) -> int:
        """Patches along one side of the image."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def num_tokens(self) -> int:
        """Sequence length: one token per patch plus the CLS token."""
        return self.num_patches + 1

    @property
    def label2id(self) -> dict[str, int]:
        return {v: k for k, v in self.id2label.items()}

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ValueError saying what to change if the sizes cannot build a ViT."""
        positive = (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "image_size",
            "patch_size",
            "num_channels",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive whole number, got {value!r}.")
        if self.hidden_size % self.num_attention_heads:
            divisors = [h for h in range(1, self.hidden_size + 1) if self.hidden_size % h == 0]
            near = sorted(divisors, key=lambda h: abs(h - self.num_attention_heads))[:3]
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must split evenly across num_attention_heads "
                f"({self.num_attention_heads}); pick a head count that divides it, e.g. "
                f"{', '.join(map(str, sorted(near)))}."
            )
        if self.patch_size > self.image_size:
            raise ValueError(
                f"patch_size ({self.patch_size}) is larger than image_size ({self.image_size}); "
                "use a smaller patch or a larger image."
            )
        if self.image_size % self.patch_size:
            divisors = [p for p in range(1, self.image_size + 1) if self.image_size % p == 0]
            near = sorted(divisors, key=lambda p: abs(p - self.patch_size))[:3]
            raise ValueError(
                f"image_size ({self.image_size}) must be a whole number of patches of size "
                f"{self.patch_size}; use a patch size that divides it, e.g. "
                f"{', '.join(map(str, sorted(near)))}, or change image_size to "
                f"{self.image_size // self.patch_size * self.patch_size or self.patch_size}."
            )
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ValueError(
                f"hidden_act {self.hidden_act!r} is not supported; use one of "
                f"{', '.join(SUPPORTED_ACTIVATIONS)}."
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            p = getattr(self, name)
            if not 0.0 <= float(p) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p!r}.")
        if not float(self.layer_norm_eps) > 0:
            raise ValueError(f"layer_norm_eps must be positive, got {self.layer_norm_eps!r}.")

    # ------------------------------------------------------------------ conversion
    def replace(self, **changes: Any) -> "ViTConfig":
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ViTConfig":
        """Build from a Hugging Face ``config.json`` dict; keys this class does not use are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        for key in ("image_size", "patch_size"):
            value = kwargs.get(key)
            if isinstance(value, (list, tuple)):
                if len(set(value)) != 1:
                    raise ValueError(f"only square {key} is supported, got {value}.")
                kwargs[key] = int(value[0])
        if "id2label" in kwargs and "num_labels" in kwargs:
            kwargs.pop("num_labels")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The Hugging Face ``config.json`` form (transformers' ViTConfig reads it)."""
        data = dataclasses.asdict(self)
        data["id2label"] = {str(k): v for k, v in self.id2label.items()}
        data["label2id"] = {v: k for k, v in self.id2label.items()}
        data["model_type"] = "vit"
        return data
