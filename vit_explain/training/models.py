"""The models the Training page trains: the size limits of a shared CPU server, the starting model, the download."""

from __future__ import annotations

import copy
from typing import Sequence

import torch

from ..config import ViTConfig
from ..model import ViTForImageClassification

__all__ = ["MAX_PARAMETERS", "MAX_TRAIN_TOKENS", "MAX_TRAIN_PATCH", "parameter_count", "check_trainable",
           "build_model", "checkpoint_zip"]

#: Largest model the Training stage trains (parameters) and longest token sequence (a 16 x 16 grid + CLS).
MAX_PARAMETERS = 3_000_000
MAX_TRAIN_TOKENS = 257
#: Largest patch the Training stage trains (bounds the filter pictures a snapshot keeps).
MAX_TRAIN_PATCH = 32


def parameter_count(config: ViTConfig, num_labels: int | None = None) -> int:
    """Parameters of a ViTForImageClassification with a pooler for ``config`` (and ``num_labels`` classes)."""
    k = config.num_labels if num_labels is None else num_labels
    d, m, c, p = config.hidden_size, config.intermediate_size, config.num_channels, config.patch_size
    embeddings = c * p * p * d + d + d + config.num_tokens * d
    layer = 4 * (d * d + d) + (d * m + m) + (m * d + d) + 4 * d
    head = (d * d + d) + d * k + k
    return embeddings + config.num_hidden_layers * layer + 2 * d + head


def check_trainable(config: ViTConfig, num_labels: int | None = None) -> None:
    """Refuse models too large to train on a shared CPU server; the message says what to change."""
    if config.num_tokens > MAX_TRAIN_TOKENS:
        grid = int((MAX_TRAIN_TOKENS - 1) ** 0.5)
        raise ValueError(
            f"{config.grid_size}x{config.grid_size} patches ({config.num_tokens} tokens) is more than the Training stage "
            f"allows (a {grid}x{grid} grid, {MAX_TRAIN_TOKENS} tokens): use a larger patch size or a smaller image."
        )
    if config.patch_size > MAX_TRAIN_PATCH:
        raise ValueError(f"Patches of {config.patch_size} px are larger than the Training stage takes ({MAX_TRAIN_PATCH} px "
                         f"at most): use a smaller patch size.")
    n = parameter_count(config, num_labels)
    if n > MAX_PARAMETERS:
        raise ValueError(
            f"This ViT has {n / 1e6:.1f}M parameters; the Training stage trains at most {MAX_PARAMETERS / 1e6:.0f}M on "
            f"this shared CPU server: use a smaller hidden size, fewer layers or a smaller MLP."
        )


def build_model(config: ViTConfig, classes: Sequence[str], *, base: torch.nn.Module | None = None,
                seed: int = 0, new_head: bool = False) -> ViTForImageClassification:
    """The model a run starts from: fresh random weights for ``config``, or a copy of ``base``.

    ``classes`` are the data's labels. A copy of ``base`` keeps its classifier when it has as many
    classes (relabelled with the data's names), otherwise (or with ``new_head``: classes of the
    student's own, whatever their number) it gets a fresh classifier. Position
    embeddings start as random as the rest (no sine-cosine start), so the page shows them
    organising themselves.
    """
    id2label = dict(enumerate(classes))
    if base is None:
        config = config.replace(num_labels=len(classes), id2label=id2label)
        check_trainable(config)
        model = ViTForImageClassification(config)
        model.init_weights(seed=seed)
        return model
    if not isinstance(base, ViTForImageClassification):
        raise ValueError("These weights have no classification head to train; start from random weights instead.")
    model = copy.deepcopy(base).float()
    check_trainable(model.config, len(classes))
    if new_head or model.config.num_labels != len(classes):
        generator = torch.Generator().manual_seed(seed)
        head = torch.nn.Linear(model.config.hidden_size, len(classes))
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * model.config.initializer_range)
            head.bias.zero_()
        model.classifier = head
    model.config = model.config.replace(num_labels=len(classes), id2label=id2label)
    for attribute in ("source", "preprocess_spec"):
        if hasattr(model, attribute):
            delattr(model, attribute)
    return model


def checkpoint_zip(model: torch.nn.Module, folder: str = "vit-trained") -> bytes:
    """The model in the Hugging Face layout (:func:`~vit_explain.weights.save_checkpoint`), zipped under ``folder/``."""
    import io
    import tempfile
    import zipfile
    from pathlib import Path

    from ..weights import save_checkpoint

    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp:
        written = save_checkpoint(model, Path(tmp) / folder)
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(written.iterdir()):
                archive.write(path, f"{folder}/{path.name}")
    return buffer.getvalue()
