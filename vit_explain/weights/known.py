"""The pretrained checkpoints the app offers by name, with their sizes stated before any download."""

from __future__ import annotations

from dataclasses import dataclass



@dataclass(frozen=True)
class KnownCheckpoint:
    """A pretrained ViT on the Hugging Face Hub, with what to tell a person before downloading it."""

    repo_id: str
    title: str
    description: str
    num_parameters: int
    download_mb: float
    num_labels: int  # 0: no classifier head (a ViTModel)
    #: Which preprocessing the app uses for it and why, where the repository's preprocessor_config.json
    #: differs from the model's own training evaluation ("" when they agree).
    preprocessing_note: str = ""

    @property
    def has_classifier(self) -> bool:
        return self.num_labels > 0

    def summary(self) -> str:
        """One line: title, parameters and download size."""
        return f"{self.title}: {self.num_parameters / 1e6:.1f}M parameters, about {self.download_mb:.0f} MB to download"


#: Checkpoints the app offers by name. Sizes are those of the float32 ``model.safetensors``.
KNOWN_CHECKPOINTS: dict[str, KnownCheckpoint] = {
    c.repo_id: c
    for c in (
        KnownCheckpoint(
            "google/vit-base-patch16-224",
            "ViT-B/16 (ImageNet-1k)",
            "The original ViT-Base, 16-pixel patches at 224 px: pre-trained on ImageNet-21k, "
            "fine-tuned on ImageNet-1k (1000 classes).",
            86_567_656,
            346,
            1000,
        ),
        KnownCheckpoint(
            "google/vit-base-patch16-224-in21k",
            "ViT-B/16 (ImageNet-21k, no head)",
            "ViT-Base pre-trained on ImageNet-21k only: no classifier, but a trained pooler; "
            "good for looking at attention and features.",
            86_389_248,
            346,
            0,
        ),
        KnownCheckpoint(
            "facebook/deit-tiny-patch16-224",
            "DeiT-Ti/16 (ImageNet-1k)",
            "Data-efficient ViT-Tiny (192 wide, 3 heads), trained on ImageNet-1k only "
            "(72.2% top-1); small and quick on a CPU.",
            5_717_416,
            23,
            1000,
            "The app uses the repository's preprocessor_config.json, as transformers does, so its numbers match transformers'; "
            "DeiT's own evaluation kept the picture's shape (shortest side to 256 px, centre 224 crop) where "
            "the processor squashes it to 256 x 256 first; the same ImageNet mean/std and bicubic resize.",
        ),
        KnownCheckpoint(
            "facebook/deit-small-patch16-224",
            "DeiT-S/16 (ImageNet-1k)",
            "Data-efficient ViT-Small (384 wide, 6 heads), trained on ImageNet-1k only (79.9% top-1).",
            22_050_664,
            88,
            1000,
            "The app uses the repository's preprocessor_config.json, as transformers does, so its numbers match transformers'; "
            "DeiT's own evaluation kept the picture's shape (shortest side to 256 px, centre 224 crop) where "
            "the processor squashes it to 256 x 256 first; the same ImageNet mean/std and bicubic resize.",
        ),
        KnownCheckpoint(
            "facebook/dino-vitb16",
            "DINO ViT-B/16 (self-supervised, no head)",
            "ViT-Base trained without labels by self-distillation (DINO, Caron et al. 2021): its CLS "
            "attention maps outline objects. No classifier.",
            86_389_248,
            346,
            0,
            "The app uses the repository's preprocessor_config.json, as transformers does, so its numbers match transformers'; "
            "DINO's own evaluation resized the shortest side to 256 px and cropped 224; the processor "
            "squashes the picture to 224 x 224 (same ImageNet mean/std).",
        ),
        KnownCheckpoint(
            "facebook/dinov2-small",
            "DINOv2 ViT-S/14 (self-supervised, no head)",
            "DINOv2 small (384 wide, 6 heads, 14-pixel patches, layer scale): position embeddings "
            "trained for 518 px, resized to the 16 x 16 grid of its 224 px crop. No classifier.",
            22_056_576,
            88,
            0,
            "The app uses the repository's preprocessor (shortest side 256 px, centre 224 crop, ImageNet "
            "mean/std), the same as DINOv2's own evaluation.",
        ),
        KnownCheckpoint(
            "facebook/dinov2-with-registers-small",
            "DINOv2 ViT-S/14 with 4 registers (no head)",
            "DINOv2 small trained with 4 register tokens (Darcet et al. 2023): extra tokens that take "
            "over the global bookkeeping that otherwise lands on a few background patches.",
            22_058_112,
            88,
            0,
            "The app uses the repository's preprocessor (shortest side 256 px, centre 224 crop, ImageNet "
            "mean/std), the same as DINOv2's own evaluation.",
        ),
    )
}


