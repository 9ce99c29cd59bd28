"""One optimiser step and what it needs: the optimiser, patch dropout, the bf16 attention kernel."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from einops import repeat

from ..model import ViTForImageClassification, backbone
from .config import check_keep_fraction, use_bf16

__all__ = ["make_optimizer", "train_step", "forward_keeping", "patches_to_keep"]


def make_optimizer(model: torch.nn.Module, lr: float = 1e-3, weight_decay: float = 0.05) -> torch.optim.AdamW:
    """AdamW; weight decay only on the matrices (not on biases, norms, CLS or position embeddings)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.ndim < 2 or "position_embeddings" in name or "cls_token" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    clip_norm: float | None = 1.0,
    precision: str = "fp32",
    keep_patches: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
) -> tuple[float, float]:
    """One optimiser step on a batch; returns (loss, accuracy) measured before the update.

    ``precision="bf16"`` runs the forward pass under autocast to bfloat16 (matrix products in
    bfloat16, accumulated in float32; the weights, the optimiser state and the loss stay float32).
    ``keep_patches`` (``[B, k]`` patch indices, see :func:`forward_keeping`) trains on only those
    patch tokens of each picture. ``targets`` (``[B, classes]`` probabilities, e.g. from
    :func:`~vit_explain.augment.mix_batch`) replaces the one-hot labels in the loss; the accuracy is
    still counted against ``labels``.
    """
    model.train()
    bf16 = use_bf16(precision)
    with torch.autocast(pixel_values.device.type, dtype=torch.bfloat16, enabled=bf16), \
            _attention_kernel_for_training(pixel_values.device, bf16):
        if keep_patches is None:
            logits = model(pixel_values).logits
        else:
            logits = forward_keeping(model, pixel_values, keep_patches)
    logits = logits.float()
    loss = F.cross_entropy(logits, labels if targets is None else targets, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    accuracy = (logits.detach().argmax(-1) == labels).float().mean().item()
    return loss.item(), accuracy


def _attention_kernel_for_training(device: torch.device, bf16: bool):
    """For bf16 training steps on CPU, PyTorch's plain ("math") attention kernel instead of its fused one.

    Measured here (torch 2.13 CPU, 2 threads, the CIFAR recipe: batch 128, 33 tokens, 3 heads of 64, bf16):
    the fused CPU kernel's backward pass took 45% of a training step (21 ms a layer); with the plain
    kernel a step took 194 ms instead of 287 ms. In float32 the two were within 3% (320 vs 328 ms), so
    float32 training (the shapes recipe) keeps the fused kernel and its shipped weights stay reproducible.
    Both compute softmax(q k^T / sqrt(d)) v; inference keeps the fused kernel; CUDA keeps PyTorch's choice.
    """
    if device.type != "cpu" or not bf16:
        return contextlib.nullcontext()
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # an older torch: its own choice
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH)


def forward_keeping(model: ViTForImageClassification, pixel_values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Class logits from the CLS token when the encoder sees only some patch tokens of each picture.

    "Patch dropout" (Liu et al. 2023, "PatchDropout: Economizing Vision Transformers Using Patch
    Dropout"; FLIP, Li et al. 2023, masks CLIP's image tokens the same way): after the position
    embeddings are added, each picture keeps the CLS token and the patches listed in its row of
    ``keep`` (``[B, k]`` indices into the g*g patches). The encoder's cost falls with the token count,
    so a training step is cheaper; the model itself is unchanged and sees every patch at test time.
    """
    if model.config.num_prefix_tokens != 1 or model.config.use_distillation_head:
        raise ValueError("patch dropout is written for the classic ViT (CLS token only)")
    vit = backbone(model)
    tokens = vit.embeddings(pixel_values)  # [B, 1 + N, D]
    patches = tokens[:, 1:]
    index = repeat(keep.to(tokens.device), "b k -> b k d", d=tokens.shape[-1])
    tokens = torch.cat([tokens[:, :1], patches.gather(1, index)], dim=1)  # [B, 1 + k, D]
    x, _, _ = vit.encoder(tokens)
    x = vit.layernorm(x)
    return model.classifier(x[:, 0])  # [B, K]


def patches_to_keep(rng: np.random.Generator, batch: int, num_patches: int, fraction: float) -> torch.Tensor | None:
    """``[batch, k]`` sorted patch indices drawn without replacement per picture (None when all are kept)."""
    check_keep_fraction(fraction)
    k = max(1, round(fraction * num_patches))
    if k >= num_patches:
        return None
    pick = np.sort(np.argsort(rng.random((batch, num_patches)), axis=1)[:, :k], axis=1)
    return torch.from_numpy(pick)
