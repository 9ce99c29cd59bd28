"""Small random stand-ins, written by transformers' save_pretrained, for the checkpoints the app offers by name.

Each has the real repository's model type and head (a DeiT with a distillation token for the DeiT
ids, a DINOv2 with registers for that id ...) but a tiny width, so the app's Hub path can be tested
end to end through :class:`hub_standin.StandInHub` in seconds.
"""

from __future__ import annotations

from pathlib import Path

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4)


def _preprocessor(size: int, crop: bool) -> dict:
    out = {"do_resize": True, "size": {"height": size, "width": size}, "do_normalize": True,
           "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3,
           "do_rescale": True, "rescale_factor": 1 / 255, "image_processor_type": "ViTImageProcessor"}
    if crop:
        out.update(size={"shortest_edge": size + 8}, do_center_crop=True, crop_size={"height": size, "width": size},
                   image_processor_type="BitImageProcessor")
    return out


def tiny_model(repo_id: str):
    """A transformers model of the same kind as ``repo_id``'s, small and random (seeded)."""
    import torch
    import transformers

    torch.manual_seed(0)
    if repo_id.startswith("facebook/deit"):
        config = transformers.DeiTConfig(**SMALL, intermediate_size=48, image_size=32, patch_size=8, num_labels=5)
        return transformers.DeiTForImageClassificationWithTeacher(config), 32
    if repo_id == "facebook/dinov2-with-registers-small":
        config = transformers.Dinov2WithRegistersConfig(**SMALL, image_size=56, patch_size=14, mlp_ratio=2,
                                                        num_register_tokens=4)
        return transformers.Dinov2WithRegistersModel(config), 56
    if repo_id.startswith("facebook/dinov2"):
        return transformers.Dinov2Model(transformers.Dinov2Config(**SMALL, image_size=56, patch_size=14, mlp_ratio=2)), 56
    config = transformers.ViTConfig(**SMALL, intermediate_size=48, image_size=32, patch_size=8)
    if repo_id.endswith("in21k") or repo_id == "facebook/dino-vitb16":
        return transformers.ViTModel(config), 32
    config.num_labels = 5
    return transformers.ViTForImageClassification(config), 32


def save_tiny(repo_id: str, folder: Path) -> Path:
    """Write the stand-in of ``repo_id`` (weights, config.json, preprocessor_config.json) into ``folder``."""
    import json

    model, size = tiny_model(repo_id)
    model.save_pretrained(folder)
    crop = repo_id.startswith("facebook/dinov2")
    (Path(folder) / "preprocessor_config.json").write_text(json.dumps(_preprocessor(size, crop)))
    return Path(folder)
