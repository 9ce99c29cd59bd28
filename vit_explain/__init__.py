"""vit-explain: an einops Vision Transformer that shows every tensor it makes.

The public names are imported lazily so that ``import vit_explain.preprocess`` (for instance)
does not pay for building the model module.
"""

__all__ = ["ViTConfig", "ViTModel", "ViTForImageClassification"]


def __getattr__(name):
    if name == "ViTConfig":
        from .config import ViTConfig

        return ViTConfig
    if name in ("ViTModel", "ViTForImageClassification"):
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'vit_explain' has no attribute {name!r}")
