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


#: Checkpoint families this implementation runs exactly (see the variant fields of ViTConfig).
MODEL_TYPES = ("vit", "deit", "dinov2", "dinov2_with_registers")


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
    # ---- variants of the ViT family, each switched on by a field (all off: the classic ViT) ----
    #: Which transformers family the checkpoint comes from: "vit", "deit", "dinov2" or
    #: "dinov2_with_registers". It only decides key names and config.json on disk (weights package).
    model_type: str = "vit"
    #: DeiT's distillation token, second in the sequence after CLS, with its own position embedding.
    #: A classifier then has a second head on it and averages the two (DeiT with teacher).
    use_distillation_token: bool = False
    #: With the distillation token, a classifier's second head on it (DeiTForImageClassificationWithTeacher).
    use_distillation_head: bool = False
    #: Register tokens (Darcet et al. 2023) after CLS (and the distillation token): learned extra
    #: tokens without a position embedding that give the model scratch space.
    num_register_tokens: int = 0
    #: DINOv2's learned mask token [1, D]: carried so its checkpoints load, unused when running.
    use_mask_token: bool = False
    #: Layer scale (DINOv2, CaiT): each residual branch is multiplied by a learned vector, started
    #: at this value. None: no layer scale.
    layerscale_value: float | None = None
    #: Image size the position embeddings were trained at, when it differs from image_size (DINOv2:
    #: 518). The embeddings then keep that grid and are resized to the image's grid on every
    #: forward pass (bicubic, as the checkpoint's family does). None: the same as image_size.
    position_embedding_size: int | None = None
    #: Smooth (antialias) when resizing the position embeddings (DINOv2 with registers does).
    interpolate_antialias: bool = False

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
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch grid: CLS, then the distillation token, then the registers."""
        return 1 + int(self.use_distillation_token) + self.num_register_tokens

    @property
    def num_tokens(self) -> int:
        """Sequence length: the prefix tokens (CLS, ...) then one token per patch."""
        return self.num_prefix_tokens + self.num_patches

    @property
    def position_grid_size(self) -> int:
        """Patches along one side of the grid the position embeddings cover."""
        return (self.position_embedding_size or self.image_size) // self.patch_size

    @property
    def num_position_embeddings(self) -> int:
        """Rows of the position embeddings: CLS (+ distillation token) + their grid; registers get none."""
        return 1 + int(self.use_distillation_token) + self.position_grid_size**2

    def prefix_token_names(self) -> list[str]:
        """A short name for each prefix token, in sequence order: ["CLS", "DIST", "REG0", ...]."""
        return ["CLS"] + (["DIST"] if self.use_distillation_token else []) + [
            f"REG{i}" for i in range(self.num_register_tokens)]

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
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type {self.model_type!r} is not supported; use one of {', '.join(MODEL_TYPES)}.")
        if isinstance(self.num_register_tokens, bool) or not isinstance(self.num_register_tokens, int) \
                or self.num_register_tokens < 0:
            raise ValueError(f"num_register_tokens must be 0 or more, got {self.num_register_tokens!r}.")
        if self.use_distillation_head and not self.use_distillation_token:
            raise ValueError("use_distillation_head needs use_distillation_token=True (the head reads that token).")
        if self.position_embedding_size is not None:
            size = self.position_embedding_size
            if isinstance(size, bool) or not isinstance(size, int) or size < self.patch_size or size % self.patch_size:
                raise ValueError(
                    f"position_embedding_size must be a whole number of {self.patch_size}-pixel patches, got {size!r}."
                )

    # ------------------------------------------------------------------ conversion
    def replace(self, **changes: Any) -> "ViTConfig":
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ViTConfig":
        """Build from a Hugging Face ``config.json`` dict; keys this class does not use are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        data = dict(data)
        model_type = data.get("model_type") or "vit"
        if model_type == "deit":
            data.setdefault("use_distillation_token", True)
            if "DeiTForImageClassificationWithTeacher" in (data.get("architectures") or []):
                data.setdefault("use_distillation_head", True)
        if model_type in ("dinov2", "dinov2_with_registers"):
            # DINOv2 states the MLP width as a ratio and always has layer scale and a mask token.
            if "intermediate_size" not in data and "hidden_size" in data:
                data["intermediate_size"] = int(data["hidden_size"] * data.get("mlp_ratio", 4))
            data.setdefault("layerscale_value", 1.0)
            data.setdefault("use_mask_token", True)
            data.setdefault("layer_norm_eps", 1e-6)
            data.setdefault("interpolate_antialias", model_type == "dinov2_with_registers")
            if model_type == "dinov2":
                data.pop("num_register_tokens", None)
        if "vit_explain_image_size" in data:  # written by to_dict: run size != the embeddings' size
            data.setdefault("position_embedding_size", data.get("image_size"))
            data["image_size"] = data["vit_explain_image_size"]
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
        data["model_type"] = self.model_type
        if self.position_embedding_size not in (None, self.image_size):
            # transformers reads image_size as the position embeddings' size; ours runs at another
            data["vit_explain_image_size"] = self.image_size
            data["image_size"] = self.position_embedding_size
        if self.model_type in ("dinov2", "dinov2_with_registers"):
            ratio = self.intermediate_size / self.hidden_size
            data["mlp_ratio"] = int(ratio) if ratio == int(ratio) else ratio  # transformers wants an int when it is one
            data["use_swiglu_ffn"] = False
        return data
